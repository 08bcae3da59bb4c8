"""Fuzz harness: structure-aware stream mutations and tampered checkpoints, run in a child process.

``python tests/fuzzing.py N_STREAMS N_RATE N_FAMILY N_CHECKPOINTS N_FAMILY_CHECKPOINTS N_COST N_SEMANTIC SEED``
builds the tiny codecs (DiffEIC ``tiny``, variable-rate ``tiny_vr``, HiFiC ``hific_tiny``: the hyperprior coder the
refinement family shares, ``refine_tiny`` for the cost group, and ``semantic_tiny``), then prints one line per case
(``<index> <group>:<kind> <outcome>``) and a final ``done`` line with memory figures and the slowest header check.
Groups: ``stream`` (DiffEIC streams), ``rate`` (a variable-rate stream's float32 rate field), ``family`` (HiFiC
streams), ``checkpoint`` and ``family_checkpoint`` (tampered folders), ``cost`` (header-cost mutations of every
family's streams: step count and image size, ``N_COST`` of DiffEIC, HiFiC and refine streams then ``N_COST // 3`` of
semantic ones; an accepted header beyond the decode-cost bound is ``FAIL Bound``),
``semantic`` (semantic streams: the container's mutations, and the parts stream's own — flags, lengths, sizes, boxes,
the parts' contents — behind a valid container; their parts are decoded, not redrawn).
Outcomes:
``ok`` (decoded, or a tampered checkpoint that still codes losslessly), ``refused`` (BitstreamError for
streams; CheckpointError / ValueError for checkpoints), or ``FAIL <type>: <message>`` for anything else.  The parent
(``tests/test_fuzz.py``) reads the lines with a time limit per case, so a case that hangs or crashes the
process is named by its index instead of stopping the suite.
"""
from __future__ import annotations

import copy
import itertools
import random
import resource
import struct
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path
from typing import Callable, Iterator, List, Tuple

warnings.simplefilter("ignore")
sys.path[:0] = [str(Path(__file__).parent.parent), str(Path(__file__).parent)]   # this checkout, then conftest

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from conftest import photo  # noqa: E402
from diffeic import BitstreamError, DiffEICCodec, SemanticCodec  # noqa: E402
from diffeic.bitstream import FAMILY_IDS, MAX_SIDE, SAMPLER_IDS, StreamHeader, pack, unpack  # noqa: E402
from diffeic.codecs.diffeic import CONTROL_FILE, LFGCM_FILE  # noqa: E402
from diffeic.codecs.folder import CONFIG_FILE  # noqa: E402
from diffeic.hific import HiFiCCodec  # noqa: E402
from diffeic.codecs.transform import MODEL_FILE  # noqa: E402
from diffeic.lfgcm import LFGCM  # noqa: E402
from diffeic.refine import RefineCodec  # noqa: E402
from diffeic.semantic.api import encode_parts  # noqa: E402

Case = Tuple[str, bytes]


def _crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


def _varint(value: int, extra: int = 0) -> bytes:
    """LEB128, padded with ``extra`` redundant continuation bytes (non-canonical when extra > 0)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        more = value or extra
        out.append(byte | (0x80 if more else 0))
        if not value:
            if not extra:
                return bytes(out)
            extra -= 1
            if not extra:
                out.append(0)
                return bytes(out)


# ---------------------------------------------------------------------------------------------- streams

def stream_cases(codec, rng: random.Random, n: int, base: List[bytes], other: bytes) -> Iterator[Case]:
    """Every truncation of a real stream, then a weighted mix of blind and structure-aware mutations.

    ``base``: real streams of ``codec`` to mutate; ``other``: one of another image size (its payload is spliced in).
    """
    fp = codec.fingerprint()[:8]
    family = getattr(codec, "family", "diffeic")
    bits = base[0]
    for cut in range(min(len(bits), n)):
        yield "truncated", bits[:cut]
    count = min(len(bits), n)

    def header_edit() -> bytes:           # a random well-formed header (valid CRC) on a real payload
        header, payload = unpack(rng.choice(base))
        side = lambda: rng.choice([1, 2, 47, 48, 63, 64, 65, 127, 2048, 8192, MAX_SIDE, rng.randrange(1, MAX_SIDE)])
        h = StreamHeader(fingerprint=fp if rng.random() < 0.9 else f"{rng.getrandbits(32):08x}",
                         height=side() if rng.random() < 0.5 else header.height,
                         width=side() if rng.random() < 0.5 else header.width,
                         sampler=rng.choice([None, *SAMPLER_IDS]), steps=rng.choice([None, 1, 3, 50, 10_000]),
                         seed=rng.choice([None, 0, 2 ** 64 - 1, rng.getrandbits(64)]),
                         family=rng.choice([family] * 4 + list(FAMILY_IDS)),
                         rate=rng.choice([None] * 4 + [0.5, 2.0 ** 100]))
        return pack(h, payload)

    def raw_header_edit() -> bytes:      # byte-level header damage, non-canonical varints, unknown flags
        body = bytearray(rng.choice(base)[:-4])
        choice = rng.randrange(4)
        if choice == 0:
            body[rng.randrange(2, 12)] = rng.randrange(256)
        elif choice == 1:
            header, payload = unpack(bits)            # default settings: H, W and the payload follow byte 8
            body = bytearray(bits[:8] + _varint(header.height, rng.randrange(1, 3))
                             + _varint(header.width, rng.randrange(0, 2)) + payload)
        elif choice == 2:
            body[3] |= 1 << rng.randrange(8)
        else:
            body[2] = rng.choice([0, 1, 2, 3, 255])
        return _crc(bytes(body))

    def payload_edit() -> bytes:         # payload damage behind a correct CRC
        header, payload = unpack(rng.choice(base))
        p = bytearray(payload)
        choice = rng.randrange(9)
        if choice == 0:
            p[rng.randrange(len(p))] = rng.randrange(256)
        elif choice == 1:
            p[rng.randrange(len(p))] ^= 1 << rng.randrange(8)
        elif choice == 2:
            p += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        elif choice == 3:
            del p[rng.randrange(len(p)):]
        elif choice == 4:
            i = rng.randrange(len(p))
            p[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5)))
        elif choice == 5:
            p = bytearray(unpack(other)[1])                       # another image's payload
        elif choice == 6:
            p = bytearray(rng.choice([0, 255]) for _ in range(4 * rng.randrange(0, 64)))
        elif choice == 7:
            p = bytearray(rng.randrange(256) for _ in range(4 * rng.randrange(2, 300)))
        else:
            k = 4 * rng.randrange(len(p) // 4)                     # swap two words
            j = 4 * rng.randrange(len(p) // 4)
            p[k:k + 4], p[j:j + 4] = p[j:j + 4], p[k:k + 4]
        return pack(header, bytes(p))

    def blind() -> bytes:
        if rng.random() < 0.5:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        flipped = bytearray(rng.choice(base))
        for _ in range(rng.randrange(1, 4)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return bytes(flipped)

    kinds = [("blind", blind, 30), ("header", header_edit, 40), ("raw_header", raw_header_edit, 20),
             ("payload", payload_edit, 10)]
    while count < n:
        name, make, _ = rng.choices(kinds, weights=[w for *_, w in kinds])[0]
        count += 1
        yield name, make()


def rate_cases(vr: DiffEICCodec, rng: random.Random, n: int) -> Iterator[Case]:
    """A variable-rate stream whose float32 rate field holds any bit pattern (NaN, ±Inf, subnormals, values
    outside the model's range, the range's ends and their neighbours) or is missing, with a valid CRC."""
    lo, hi = vr.rate_range
    image = photo("astronaut", (48, 64))
    streams = [vr.compress(image, rate=q) for q in (lo, hi)]
    edges = [lo, hi, -0.0, (lo + hi) / 2, float(np.nextafter(np.float32(hi), np.float32(np.inf))),
             float(np.nextafter(np.float32(lo), np.float32(-np.inf))), 1e38, -1e38, 2.0 ** -149]
    specials = [0x7FC00000, 0xFFC00000, 0x7F800001, 0x7F800000, 0xFF800000, 0x00000001, 0x80000001, 0x7F7FFFFF]
    for _ in range(n):
        header, payload = unpack(rng.choice(streams))
        head = bytearray(pack(header, b"")[:-4])            # no decode settings: the rate is the header's end
        choice = rng.randrange(4)
        if choice == 0:
            head[-4:] = struct.pack(">I", rng.getrandbits(32))
        elif choice == 1:
            head[-4:] = struct.pack(">I", rng.choice(specials))
        elif choice == 2:
            head[-4:] = struct.pack(">f", rng.choice(edges))
        else:                                                # the same payload without a rate (format 1)
            head = bytearray(pack(StreamHeader(fingerprint=header.fingerprint, height=header.height,
                                               width=header.width), b"")[:-4])
        yield "field", _crc(bytes(head) + payload)


def cost_cases(codecs, rng: random.Random, n: int) -> Iterator[Case]:
    """Valid streams of every family whose header asks for another step count and image size (the decode cost)."""
    for i in range(n):
        family, codec, base = codecs[i % len(codecs)]
        header, payload = unpack(rng.choice(base))
        default = _default_steps(codec)
        steps = rng.choice([None, 1, default, 4 * default, 4 * default + 1, 8 * default, 1000, 10_000,
                            rng.randrange(1, 10_001)])
        side = lambda: rng.choice([1, 32, 48, 64, 127, 128, 129, 255, 256, 257, 512, rng.randrange(1, 1024)])
        h = StreamHeader(**{**header.__dict__, "steps": steps, "height": side(), "width": side()})
        yield family, pack(h, payload)


def parts_cases(rng: random.Random, n: int, base: List[bytes], images: List[np.ndarray]) -> Iterator[Case]:
    """Semantic streams whose parts stream is damaged behind a valid container (CRC recomputed): a framing byte
    (version, flags, a size or length varint, a box), a part's contents, a part of another image spliced in,
    lengths that overrun, or the parts of another image size under this header."""
    for _ in range(n):
        header, payload = unpack(rng.choice(base))
        p = bytearray(payload)
        choice = rng.randrange(6)
        if choice == 0:                                     # the framing: version, flags, sizes, first lengths
            p[rng.randrange(min(len(p), 12))] = rng.randrange(256)
        elif choice == 1:                                   # inside a part's contents
            i = rng.randrange(len(p))
            p[i] ^= 1 << rng.randrange(8)
        elif choice == 2:                                   # flags: any combination
            p[1] = rng.randrange(256)
        elif choice == 3:                                   # truncated or extended
            p = p[:rng.randrange(len(p))] if rng.random() < 0.5 else p + bytes(rng.randrange(256) for _ in range(3))
        elif choice == 4:                                   # another image's parts (another size) under this header
            p = bytearray(unpack(rng.choice(base))[1]) if rng.random() < 0.3 else \
                bytearray(encode_parts(rng.choice(images), "x", edges=rng.random() < 0.5,
                                       palette=rng.choice([None, 1, 4, 32]), fallback=False))
        else:                                               # a length or size varint made huge
            i = rng.randrange(2, min(len(p), 24))
            p[i:i + 1] = bytes([0xFF, 0xFF, 0xFF, 0x7F])
        yield "parts", pack(header, bytes(p))


def _default_steps(codec) -> int:
    return codec.config.sampler.steps if isinstance(codec, DiffEICCodec) else (codec.decode_defaults().get("steps") or 1)


def run_cost_case(codecs: dict, family: str, data: bytes, slowest: List[float]) -> str:
    """The header check (``decode_settings``) of a cost mutation: refused, or accepted within the bound."""
    codec = codecs[family]
    start = time.perf_counter()
    try:
        settings = codec.decode_settings(data)
    except BitstreamError:
        slowest[0] = max(slowest[0], time.perf_counter() - start)
        return "refused"
    slowest[0] = max(slowest[0], time.perf_counter() - start)
    steps = settings.steps if isinstance(codec, DiffEICCodec) else settings.get("steps", 1)
    header = unpack(data)[0]
    limit = 4 * _default_steps(codec)
    if steps > limit or steps * header.height * header.width > limit * codec.max_pixels // 4:
        return f"FAIL Bound: {steps} steps on {header.height}x{header.width} accepted"
    return "ok"


def run_stream_case(codec, data: bytes) -> str:
    try:
        if isinstance(codec, DiffEICCodec):
            codec.decompress_latents(data)
        else:
            codec.decompress_latents(data)
        return "ok"
    except BitstreamError:
        return "refused"


# ------------------------------------------------------------------------------------------ checkpoints

def _tamper_state(state: dict, rng: random.Random) -> None:
    key = rng.choice(sorted(state))
    t = state[key]
    if rng.random() < 0.4:                                    # aim at what the coder reads most of the time
        key = rng.choice([k for k in state if "entropy_bottleneck" in k or "gaussian_conditional" in k
                          or "rate_gains" in k])
        t = state[key]
    flat = t.reshape(-1).clone()
    if flat.numel() == 0:
        state[key] = torch.zeros(rng.randrange(1, 4), dtype=t.dtype)
        return
    choice = rng.randrange(8)
    i = rng.randrange(flat.numel())
    if choice == 0:
        flat.zero_()
    elif choice == 1:
        flat[i] = rng.choice([float("nan"), float("inf"), -float("inf"), 1e30, -1e9]) if t.is_floating_point() \
            else rng.choice([0, -1, 1, 2 ** 31 - 1, -2 ** 31, 65535, 65536, 65537])
    elif choice == 2:
        flat[i] = flat[i] + rng.choice([-1, 1, 7, -3000, 100_000])
    elif choice == 3:
        flat = flat.flip(0)
    elif choice == 4:
        flat = flat * rng.choice([0.5, 1.01, 2, -1, 1e6]) if t.is_floating_point() else flat * rng.choice([0, 2, -1])
    elif choice == 5:
        state[key] = flat[: rng.randrange(flat.numel())].clone()     # wrong shape
        return
    elif choice == 6:
        state[key] = t.to(rng.choice([torch.float16, torch.int64, torch.int32, torch.float64]))
        return
    else:
        del state[key]
        return
    state[key] = flat.view(t.shape).to(t.dtype)


def _tamper_config(data: dict, rng: random.Random) -> None:
    sections = [s for s, v in data["model"].items() if isinstance(v, dict)]        # DiffEIC's; flat for families
    section = rng.choice(sections + [None, None] if sections else ["model", "model", None])
    node = (data["model"][section] if section in sections else data["model"]) if section else data
    key = rng.choice(sorted(node))
    node[key] = rng.choice([None, 0, -1, 1, 2, 3, 16, 1e30, float("nan"), 2 ** 70, True, "no", "", [1, 2], {"a": 1},
                            0.11, 256.0, 1000])


def checkpoint_cases(folder: Path, weights: Tuple[str, ...], rng: random.Random, n: int) -> Iterator[Tuple[str, dict]]:
    """Files of a checkpoint folder with one thing tampered (the first of ``weights`` holds the coder); ``files``
    hashes recomputed most of the time (like a recomputed CRC), so the checks behind the hash are reached."""
    import hashlib

    from safetensors.torch import load_file, save

    original = {name: (folder / name).read_bytes() for name in (CONFIG_FILE, *weights)}
    coder_state = load_file(str(folder / weights[0]))
    for _ in range(n):
        files = dict(original)
        meta = yaml.safe_load(original[CONFIG_FILE])
        kind = rng.choices(["tensor", "bytes", "config", "yaml_text"], weights=[60, 15, 20, 5])[0]
        if kind == "tensor":
            state = {k: v.clone() for k, v in coder_state.items()}
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                _tamper_state(state, rng)
            files[weights[0]] = save(state)
        elif kind == "bytes":
            name = rng.choice(weights)
            raw = bytearray(files[name])
            if rng.random() < 0.5:
                for _ in range(rng.randrange(1, 8)):
                    raw[rng.randrange(len(raw))] = rng.randrange(256)
            else:
                del raw[rng.randrange(len(raw)):]
            files[name] = bytes(raw)
        elif kind == "config":
            _tamper_config(meta, rng)
        if kind != "yaml_text":
            if rng.random() < 0.9:
                meta["files"] = {k: hashlib.sha256(files[k]).hexdigest() for k in weights}
            files[CONFIG_FILE] = yaml.safe_dump(meta, sort_keys=False).encode()
        else:
            text = bytearray(files[CONFIG_FILE])
            text[rng.randrange(len(text))] = rng.choice(b"[]{}:'\"\n\t -#&*!|>%@`\xff")
            files[CONFIG_FILE] = bytes(text)
        yield kind, files


def run_checkpoint_case(case_dir: Path, files: dict, control: torch.nn.Module, x_latents) -> str:
    for name, raw in files.items():
        (case_dir / name).write_bytes(raw)
    try:
        ckpt = DiffEICCodec.read_checkpoint(case_dir)
        lfgcm = ckpt.load(LFGCM_FILE, lambda: LFGCM(ckpt.config.lfgcm), LFGCM.coding_table_names())
        ckpt.load(CONTROL_FILE, control)
        y, z = x_latents
        string, y_hat, z_hat = lfgcm.encode_latents(y, z)
        y_dec, z_dec = lfgcm.decode_latents(string, tuple(y.shape[-2:]), y.device)
    except (ValueError, FileNotFoundError):        # CheckpointError, or the coder refusing broken weights
        return "refused"
    if not (torch.equal(y_dec, y_hat) and torch.equal(z_dec, z_hat)):
        return "FAIL Lossy: an accepted checkpoint does not decode what it encodes"
    return "ok"


def run_family_checkpoint_case(case_dir: Path, files: dict, y: torch.Tensor) -> str:
    for name, raw in files.items():
        (case_dir / name).write_bytes(raw)
    try:
        hyperprior = HiFiCCodec.from_pretrained(case_dir).model.hyperprior
        string, y_hat = hyperprior.compress(y)
        y_dec = hyperprior.decompress(string, tuple(y.shape[-2:]), y.device)
    except (ValueError, TypeError, FileNotFoundError):   # CheckpointError, or the coder refusing broken weights
        return "refused"
    if not torch.equal(y_dec, y_hat):
        return "FAIL Lossy: an accepted checkpoint does not decode what it encodes"
    return "ok"


# ------------------------------------------------------------------------------------------------ main

def main(n_streams: int, n_rate: int, n_family: int, n_checkpoints: int, n_family_checkpoints: int, n_cost: int,
         n_semantic: int, seed: int) -> None:
    torch.set_num_threads(1)              # thousands of tiny decodes are latency-bound
    codec = DiffEICCodec.from_config("tiny")
    vr = DiffEICCodec.from_config("tiny_vr")
    hific = HiFiCCodec.from_config("hific_tiny")
    refine = RefineCodec.from_config("refine_tiny")
    semantic = SemanticCodec.from_config("semantic_tiny")
    for c in (codec, vr, hific, refine, semantic):
        c.max_pixels = 256 * 256          # keep valid-looking mutations cheap to decode
    rng = random.Random(seed)
    emit: Callable[[str], None] = lambda line: print(line, flush=True)
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    with tempfile.TemporaryDirectory() as tmp:
        folder = codec.save_pretrained(Path(tmp) / "tiny")
        family_folder = hific.save_pretrained(Path(tmp) / "hific")
        case_dir = Path(tmp) / "case"
        case_dir.mkdir()
        family_case_dir = Path(tmp) / "family_case"
        family_case_dir.mkdir()
        control = copy.deepcopy(codec.control)     # tampered weights load into a copy, never into the codec's own
        g = torch.Generator().manual_seed(seed)
        latents = (torch.randn(1, 32, 4, 4, generator=g) * 3, torch.randn(1, 16, 1, 1, generator=g) * 3)
        family_y = torch.randn(1, hific.config.latent_channels, 4, 4, generator=g) * 3
        run_checkpoint_case(case_dir, {n: (folder / n).read_bytes() for n in (CONFIG_FILE, LFGCM_FILE,
                                                                               CONTROL_FILE)}, control, latents)
        run_stream_case(codec, codec.compress(photo("rocket", (48, 64))))     # warm up before the baseline
        baseline = rss()
        largest, index = 0, 0
        base = [codec.compress(photo("astronaut", (48, 64))),
                codec.compress(photo("coffee", (64, 48)), sampler="ddim", steps=3, seed=2 ** 64 - 1)]
        family_base = [hific.compress(photo("astronaut", (48, 64))), hific.compress(photo("coffee", (64, 48)))]
        semantic_images = [photo("astronaut", (48, 64)), photo("coffee", (64, 48)), photo("chelsea", (70, 90))]
        semantic_base = [semantic.compress(semantic_images[0], prompt="an astronaut", keep=[(4, 4, 20, 30)]),
                         semantic.compress(semantic_images[1], prompt="", palette=8, seed=3, steps=2),
                         semantic.compress(semantic_images[2], prompt="a cat", edges=False, fallback=False),
                         semantic.compress(photo("rocket", (12, 12)), prompt="a rocket")]      # a fallback stream
        cost_codecs = [("diffeic", codec, base), ("hific", hific, family_base),
                       ("refine", refine, [refine.compress(photo("astronaut", (48, 64)))])]
        semantic_cost = [("semantic", semantic, semantic_base)]
        for _, c, streams in cost_codecs + semantic_cost:
            c.decode_settings(streams[0])                   # built once (the decoder options), as a server would
        slowest = [0.0]
        cases = [
            ("stream", lambda d: run_stream_case(codec, d),
             stream_cases(codec, rng, n_streams, base, codec.compress(photo("chelsea", (96, 128))))),
            ("rate", lambda d: run_stream_case(vr, d), rate_cases(vr, rng, n_rate)),
            ("family", lambda d: run_stream_case(hific, d),
             stream_cases(hific, rng, n_family, family_base, hific.compress(photo("chelsea", (96, 128))))),
            ("checkpoint", lambda d: run_checkpoint_case(case_dir, d, control, latents),
             checkpoint_cases(folder, (LFGCM_FILE, CONTROL_FILE), rng, n_checkpoints)),
            ("family_checkpoint", lambda d: run_family_checkpoint_case(family_case_dir, d, family_y),
             checkpoint_cases(family_folder, (MODEL_FILE,), rng, n_family_checkpoints)),
            ("cost", lambda d: run_cost_case({f: c for f, c, _ in cost_codecs + semantic_cost}, *d, slowest),
             ((kind, (kind, bits)) for kind, bits in itertools.chain(cost_cases(cost_codecs, rng, n_cost),
                                                                      cost_cases(semantic_cost, rng, n_cost // 3)))),
            ("semantic", lambda d: run_stream_case(semantic, d),
             itertools.chain(stream_cases(semantic, rng, n_semantic - n_semantic // 3, semantic_base, semantic_base[2]),
                             parts_cases(rng, n_semantic // 3, semantic_base,
                                         [(255 * im).round().byte().permute(1, 2, 0).numpy()
                                          for im in semantic_images]))),
        ]
        for group, run, generator in cases:
            for kind, data in generator:
                before = rss()
                try:
                    outcome = run(data)
                except Exception as err:           # anything but the documented errors is a failure
                    outcome = f"FAIL {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                largest = max(largest, rss() - before)
                emit(f"{index} {group}:{kind} {outcome}")
                index += 1
        emit(f"done cases={index} baseline_mb={baseline} peak_mb={rss()} largest_case_growth_mb={largest} "
             f"slowest_header_ms={1000 * slowest[0]:.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:9]))

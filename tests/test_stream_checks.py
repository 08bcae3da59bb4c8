"""Streams that are not what an encoder wrote are refused early (issues #14 items 3, #21 items 1, 2, 5)."""
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import photo
from helpers import lfgcm_forward
from diffeic import BitstreamError, DiffEICCodec
from diffeic.bitstream import StreamHeader, pack, unpack
from diffeic.bitstream import NON_FINITE_STREAM

TESTS = Path(__file__).parent
#: Limit for a reproducer in a subprocess: only a hang (of the unfixed code) reaches it, even on a busy machine.
GUARD_S = 1200


def _with_payload(bits: bytes, payload: bytes) -> bytes:
    header, _ = unpack(bits)
    return pack(header, payload)


@pytest.mark.timeout(GUARD_S + 60)
def test_empty_payload_declaring_a_huge_image_is_refused_at_once_without_memory():
    """A 16-byte stream declaring 8192x8192 ran the entropy decoder for 142 s and 3.1 GB (and 2048x2048 gave
    an image made from nothing). Measured in a fresh process: time and peak-memory growth of the refusal."""
    code = textwrap.dedent("""
        import resource, time, warnings
        warnings.simplefilter("ignore")
        from diffeic import BitstreamError, DiffEICCodec
        from diffeic.bitstream import StreamHeader, pack
        codec = DiffEICCodec.from_config("tiny")
        codec.decompress_latents(codec.compress(__import__("torch").rand(3, 64, 64)))   # warm up
        for side in (2048, 8192):
            stream = pack(StreamHeader(fingerprint=codec.fingerprint()[:8], height=side, width=side), b"")
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            start = time.perf_counter()
            try:
                codec.decompress(stream)
                print("DECODED", side, flush=True)
            except BitstreamError as err:
                grow = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
                print("REFUSED", side, len(stream), f"{time.perf_counter() - start:.4f}", grow, err, flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=GUARD_S)
    rows = [line.split(" ", 5) for line in out.stdout.splitlines()]
    assert out.returncode == 0 and len(rows) == 2 and all(r[0] == "REFUSED" for r in rows), out.stdout
    for _, side, size, seconds, grow_kb, message in rows:
        print(f"{side}x{side} in {size} bytes: refused in {seconds} s, peak RSS +{int(grow_kb) // 1024} MB")
        assert int(size) == 16 and int(grow_kb) < 20 * 1024 and "payload of 0 bytes" in message


def test_payload_too_short_for_its_symbols_is_refused(tiny_codec):
    bits = tiny_codec.compress(photo("rocket", (64, 64)))
    big = pack(StreamHeader(fingerprint=tiny_codec.fingerprint()[:8], height=4096, width=4096), unpack(bits)[1])
    with pytest.raises(BitstreamError, match=r"cannot hold the \d+ symbols"):
        tiny_codec.decompress_latents(big)
    for payload, message in [(bytes(8), None), (b"\x01\x02\x03", "not a rANS stream"), (bytes(13), "not a rANS")]:
        with pytest.raises(BitstreamError, match=message):
            tiny_codec.decompress_latents(_with_payload(bits, payload))


def test_payload_size_bound_never_refuses_a_real_stream(tiny_codec):
    """The bound (bits per symbol from the tables) holds for real streams, including the least costly:
    a constant image, whose symbols are the cheapest the tables allow."""
    for x in (torch.full((3, 256, 256), 0.5), photo("chelsea", (128, 192))):
        bits = tiny_codec.compress(x)
        assert torch.equal(tiny_codec.decompress_latents(bits)["y_hat"], lfgcm_forward(tiny_codec, x)["y_hat"])


@pytest.mark.parametrize("edit", [lambda p: p + bytes(4), lambda p: p + b"\x12\x34\x56\x78",
                                  lambda p: p[:-4] + bytes(4) + p[-4:]])
def test_bytes_the_decoder_does_not_use_are_refused(tiny_codec, edit):
    """Extra words in a payload decoded to the same image: a stream has one encoding now."""
    bits = tiny_codec.compress(photo("coffee", (48, 64)))
    with pytest.raises(BitstreamError, match="not the coding of the symbols|decodes to"):
        tiny_codec.decompress_latents(_with_payload(bits, edit(unpack(bits)[1])))


def test_non_canonical_varints_are_refused(tiny_codec):
    bits = tiny_codec.compress(photo("rocket", (40, 60)))
    body = bytearray(bits[:-4])
    assert body[8] == 40                        # height varint: one byte
    body[8:9] = bytes([0x80 | 40, 0x00])        # the same height in two bytes
    data = bytes(body) + zlib.crc32(bytes(body)).to_bytes(4, "big")
    with pytest.raises(BitstreamError, match="image height is not minimally encoded"):
        DiffEICCodec.inspect(data)


def test_huge_latents_are_refused_right_after_entropy_decoding(tiny_codec, monkeypatch):
    """A payload that decodes to finite but huge latents ran all diffusion steps before failing."""
    import diffeic.entropy.rans as entropy

    x = photo("rocket", (64, 64))
    lfgcm = tiny_codec.lfgcm
    with torch.no_grad():
        z_g = tiny_codec.backbone.encode(x[None])
        y = lfgcm.encoder(x[None], z_g)
        z = lfgcm.hyper_enc(y, z_g)
    y[0, 0, 1, 0] = 5000.0                      # an anchor of slice 0, beyond the ±1024 any encoder may write
    monkeypatch.setattr(entropy, "LATENT_LIMIT", 1e9)   # let the encoder write it (it refuses by default)
    payload = lfgcm.encode_latents(y, z)[0]
    monkeypatch.undo()
    stream = pack(StreamHeader(fingerprint=tiny_codec.fingerprint()[:8], height=64, width=64), payload)
    monkeypatch.setattr(tiny_codec, "generate", lambda *a, **k: pytest.fail("diffusion ran"))
    with pytest.raises(BitstreamError, match=r"decodes to y values beyond the coder's range ±1024"):
        tiny_codec.decompress(stream)


def test_encoder_refuses_latents_it_cannot_code_exactly(tiny_codec):
    lfgcm = tiny_codec.lfgcm
    y, z = torch.zeros(1, 32, 4, 4), torch.zeros(1, 16, 1, 1)
    for bad in (float("nan"), float("inf"), 2000.0):
        y[0, 0, 0, 0] = bad
        with pytest.raises(ValueError, match="non-finite|exact range"):
            lfgcm.encode_latents(y, z)


def test_streams_decoding_to_non_finite_values_raise_bitstream_error():
    codec = DiffEICCodec.from_config("tiny")
    with torch.no_grad():                       # a synthesis transform that overflows (no effect on coding)
        codec.lfgcm.decoder.g_s4.weight.fill_(3e38)      # finite weights whose sums overflow
    bits = codec.compress(photo("rocket", (32, 32)))
    with pytest.raises(BitstreamError, match=NON_FINITE_STREAM):
        codec.decompress_latents(bits)


def test_non_finite_pixels_raise_bitstream_error(tiny_codec, monkeypatch):
    bits = tiny_codec.compress(photo("rocket", (32, 32)))
    monkeypatch.setattr(tiny_codec, "generate", lambda z_c, **kw: torch.full((1, 3, 64, 64), float("nan")))
    with pytest.raises(BitstreamError, match=NON_FINITE_STREAM):
        tiny_codec.decompress(bits)


# ---------------------------------------------------------------- errors that name the cause (issue #21 item 5)

@pytest.mark.parametrize("x, error, message", [
    (torch.rand(3, 8, 8).to_sparse(), TypeError, "dense"),
    (torch.empty(3, 8, 8, device="meta"), ValueError, "meta tensor"),
])
def test_sparse_and_meta_images(tiny_codec, x, error, message):
    with pytest.raises(error, match=message):
        tiny_codec.compress(x)


@pytest.mark.parametrize("convert, dtype", [(lambda c: c.double(), "float64"), (lambda c: c.half(), "float16"),
                                            (lambda c: c.bfloat16(), "bfloat16"),
                                            (lambda c: c.to(torch.float64), "float64"),
                                            (lambda c: c.to("cpu", torch.float16), "float16")])
def test_codec_dtype_changes_are_refused_with_the_alternative(convert, dtype):
    codec = DiffEICCodec.from_config("tiny")
    with pytest.raises(TypeError, match=rf"dtype torch\.{dtype} is not allowed.*optimize\(dtype="):
        convert(codec)
    assert next(codec.parameters()).dtype == torch.float32
    assert codec.to("cpu") is codec and codec.to(torch.float32) is codec


def test_numpy_integers_are_accepted_and_booleans_refused(tiny_codec):
    x = photo("rocket", (16, 16))
    bits = tiny_codec.compress(x, steps=np.int64(3), seed=np.uint64(7))
    info = DiffEICCodec.inspect(bits)
    assert (info["steps"], info["seed"]) == (3, 7)
    for kwargs, message in [({"steps": True}, r"steps = True: must be an integer"),
                            ({"seed": 2 ** 70}, r"seed = 1180591620717411303424: must be an integer in \[0, ")]:
        with pytest.raises(ValueError, match=message):
            tiny_codec.compress(x, **kwargs)


def test_the_encoder_never_writes_steps_the_decoder_refuses(tiny_codec, monkeypatch):
    """Issue #14 item 5: ``compress(x, steps=5000)`` and ``sampler="fewstep", steps=500`` wrote streams that
    ``decompress`` then rejected with a plain ValueError (the container allows 10,000 steps). Now the
    encoder refuses them; a stream that asks for them anyway is corrupt (BitstreamError, before diffusion)."""
    x = photo("rocket", (32, 32))
    limit = tiny_codec.config.schedule.num_train_timesteps
    fewstep_limit = tiny_codec.config.sampler.fewstep_start + 1
    with pytest.raises(ValueError, match=f"5000 steps for sampler 'ddpm', which takes at most {limit}"):
        tiny_codec.compress(x, steps=5000)
    with pytest.raises(ValueError, match=f"for sampler 'fewstep', which takes at most {fewstep_limit}"):
        tiny_codec.compress(x, sampler="fewstep", steps=fewstep_limit + 1)
    # The limit itself is fine (with the decode-cost limit raised to it: by default decoders take 4x the default steps).
    bits = tiny_codec.compress(x, sampler="fewstep", steps=fewstep_limit, max_steps=fewstep_limit)
    header, payload = unpack(bits)
    crafted = pack(StreamHeader(fingerprint=header.fingerprint, height=32, width=32, sampler="fewstep",
                                steps=fewstep_limit + 1), payload)
    monkeypatch.setattr(tiny_codec, "generate", lambda *a, **k: pytest.fail("diffusion ran"))
    for decode in (lambda b: tiny_codec.decompress(b, max_steps=10_000),
                   lambda b: tiny_codec.decompress_batch([b], max_steps=10_000)):
        with pytest.raises(BitstreamError, match="corrupt header: .* steps for sampler 'fewstep'"):
            decode(crafted)
    with pytest.raises(ValueError, match="steps for sampler 'ddpm'") as err:        # the caller's override
        tiny_codec.decompress(bits, sampler="ddpm", steps=limit + 1)
    assert not isinstance(err.value, BitstreamError)

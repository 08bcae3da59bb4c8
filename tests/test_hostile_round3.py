"""Hostile streams and files, round 3 (issue 31): bounded decode cost, verified shipped weights, one encoding per
value, one scalar check, a clean tree."""
import hashlib
import re
import shutil
import struct
import time
import warnings
import zlib
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np

import pytest
import torch
import yaml

from conftest import photo
from diffeic import BitstreamError, DiffEICCodec, DecodeOptions
from diffeic.bitstream import StreamHeader, canonical_rate, pack, unpack
from diffeic.codecs.folder import CheckpointError
from diffeic.decode_cost import STEP_FACTOR
from diffeic.hific import HiFiCCodec
from diffeic.codecs.registry import PRETRAINED_DIR

REPO = Path(__file__).resolve().parents[1]
#: The issue's 33-byte refine_tiny stream asking for 10,000 steps (decoded for more than 30 s before).
REFINE_10000_STEPS = bytes.fromhex("de1c020ab1fe280b203002904eca346e94b54d37001d40cc5980407e1155c148bf")
HEADER_TIME_LIMIT_S = 0.1


@pytest.fixture(scope="module")
def vr():
    return DiffEICCodec.from_config("tiny_vr")


def _no_work(monkeypatch, *codecs):
    """Any decoding work (entropy decoding, sampling) fails the test: refusals must come from the header."""
    for codec in codecs:
        if isinstance(codec, DiffEICCodec):
            monkeypatch.setattr(codec, "generate", lambda *a, **k: pytest.fail("diffusion ran"))
            monkeypatch.setattr(codec, "_decode_latents", lambda *a, **k: pytest.fail("entropy decoding ran"))
        else:
            monkeypatch.setattr(codec, "_decode_latent", lambda *a, **k: pytest.fail("entropy decoding ran"))


def _timed_refusal(decode, bits, match):
    """The refusal's message and its time, the best of three (a loaded machine only adds to it)."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        with pytest.raises(BitstreamError, match=match) as err:
            decode(bits)
        times.append(time.perf_counter() - start)
    return min(times), str(err.value)


# ------------------------------------------------------------------------------------ 1. decode cost
def test_the_issues_refine_stream_asking_10000_steps_is_refused_at_header_time(refine, monkeypatch):
    refine.fingerprint()                                                  # the model is loaded and ready
    assert refine.inspect(REFINE_10000_STEPS)["steps"] == 10_000 and refine.config.steps == 4
    _no_work(monkeypatch, refine)
    seconds, message = _timed_refusal(refine.decompress, REFINE_10000_STEPS,
                                      r"asks for 10000 decoding steps, more than this decoder's limit of 16 "
                                      r"\(4 times refine_tiny's default of 4\); pass max_steps=10000")
    assert seconds < HEADER_TIME_LIMIT_S, seconds
    settings = refine.decode_settings(REFINE_10000_STEPS, max_steps=10_000)     # the caller raises the limit
    assert settings == {"steps": 10_000, "seed": 0}


def _diffeic_stream(codec, steps, size=(32, 48)):
    header, payload = unpack(codec.compress(photo("astronaut", size)))
    return pack(StreamHeader(fingerprint=header.fingerprint, height=size[0], width=size[1], steps=steps), payload)


def test_a_1000_step_diffeic_stream_is_refused_by_default_and_decoded_when_the_caller_raises_the_limit(
        tiny_codec, monkeypatch):
    crafted = _diffeic_stream(tiny_codec, 1000)
    with monkeypatch.context() as m:
        _no_work(m, tiny_codec)
        for decode in (tiny_codec.decompress, lambda b: tiny_codec.decompress_batch([b]), tiny_codec.decode_settings):
            seconds, _ = _timed_refusal(decode, crafted, r"asks for 1000 decoding steps, more than this decoder's "
                                                         r"limit of 16 \(4 times tiny's default of 4\)")
            assert seconds < HEADER_TIME_LIMIT_S, seconds
    ran = []
    monkeypatch.setattr(tiny_codec, "generate", lambda z_c, sampler, steps, seed, progress=False:
                        ran.append(steps) or torch.full((1, 3, 64, 64), 0.5))
    assert tiny_codec.decompress(crafted, max_steps=1000).shape == (3, 32, 48)
    assert tiny_codec.decompress_batch([crafted], max_steps=1000)[0].shape == (3, 32, 48)
    tiny_codec.optimize(max_steps=1000)                                 # DecodeOptions.max_steps
    try:
        assert tiny_codec.decompress(crafted).shape == (3, 32, 48)
    finally:
        tiny_codec.optimize()
    assert ran == [1000, 1000, 1000]
    assert tiny_codec.decompress(crafted, steps=2).shape == (3, 32, 48) and ran[-1] == 2   # the caller's own steps
    with pytest.raises(BitstreamError, match="limit of 999"):
        tiny_codec.decode_settings(crafted, max_steps=999)


@pytest.mark.parametrize("family", ["diffeic", "refine", "hific"])
def test_steps_times_pixels_is_bounded_for_every_family(family, tiny_codec, refine, hific, monkeypatch):
    """max_steps applies up to max_pixels / 4; a larger image may ask for proportionally fewer steps."""
    codec = {"diffeic": tiny_codec, "refine": refine, "hific": hific}[family]
    monkeypatch.setattr(codec, "max_pixels", 64 * 64 * STEP_FACTOR)
    default = {"diffeic": tiny_codec.config.sampler.steps, "refine": refine.config.steps, "hific": 1}[family]
    limit = STEP_FACTOR * default
    bits = codec.compress(photo("coffee", (64, 64)))
    header, payload = unpack(bits)
    steps_ok = limit if family != "hific" else None
    assert codec.decode_settings(pack(StreamHeader(**{**header.__dict__, "steps": steps_ok}), payload)) is not None
    big = StreamHeader(**{**header.__dict__, "height": 128, "width": 128})   # max_pixels itself: default steps only
    codec.decode_settings(pack(big, payload))
    if family == "hific":                 # no sampling: one step, the image bound is max_pixels
        return
    _no_work(monkeypatch, codec)
    over = pack(StreamHeader(**{**big.__dict__, "steps": default + 1}), payload)
    with pytest.raises(BitstreamError, match=rf"asks for {default + 1} decoding steps on a "
                                             rf"128x128 \(width x height\) image "
                                             rf"\({(default + 1) * 128 * 128} step-pixels\), more than this decoder's "
                                             rf"limit of {limit * 64 * 64}"):
        codec.decompress(over)
    settings = codec.decode_settings(over, max_steps=limit + STEP_FACTOR)     # (d + 1) x 128^2 is within it
    assert (settings.steps if family == "diffeic" else settings["steps"]) == default + 1


def test_compress_refuses_steps_decoders_refuse_unless_the_caller_raises_the_limit(tiny_codec, refine):
    x = photo("rocket", (32, 32))
    for codec, default in ((tiny_codec, tiny_codec.config.sampler.steps), (refine, refine.config.steps)):
        with pytest.raises(ValueError, match=rf"steps={4 * default + 1} is more than decoders accept by default "
                                             rf"\({4 * default}: 4 times"):
            codec.compress(x, steps=4 * default + 1)
        bits = codec.compress(x, steps=4 * default + 1, max_steps=4 * default + 1)
        assert unpack(bits)[0].steps == 4 * default + 1
        with pytest.raises(BitstreamError, match="more than this decoder's limit"):
            codec.decode_settings(bits)
        codec.decode_settings(bits, max_steps=4 * default + 1)


@pytest.mark.parametrize("bad", [0, True, 10_001, 2.5, "8"])
def test_a_bad_max_steps_is_refused_by_every_family(bad, tiny_codec, refine, hific):
    bits = hific.compress(photo("rocket", (32, 32)))
    for call in (lambda: tiny_codec.resolve_settings(None, max_steps=bad),
                 lambda: refine.resolve_settings(None, max_steps=bad),
                 lambda: hific.decompress(bits, max_steps=bad)):
        with pytest.raises(ValueError, match="max_steps = .*: must be an integer in \\[1, 10000\\]"):
            call()
    with pytest.raises(ValueError, match="max_steps"):
        DecodeOptions(max_steps=bad)


def test_the_cli_decompress_takes_max_steps(tiny_codec, tmp_path, capsys, monkeypatch):
    from diffeic.cli import main

    ran = []                            # the sampling itself is not what is tested: a blank image, the steps noted
    monkeypatch.setattr(DiffEICCodec, "generate", lambda self, z_c, sampler, steps, seed, progress=False:
                        ran.append(steps) or torch.full((1, 3, 64, 64), 0.5))

    stream = tmp_path / "a.deic"
    stream.write_bytes(_diffeic_stream(tiny_codec, 17))
    assert main(["decompress", str(stream), "--model", "tiny", "-o", str(tmp_path / "a.png")]) != 0
    assert "asks for 17 decoding steps, more than this decoder's limit of 16" in capsys.readouterr().err
    assert main(["decompress", str(stream), "--model", "tiny", "-o", str(tmp_path / "a.png"),
                 "--max-steps", "17"]) == 0
    assert (tmp_path / "a.png").is_file() and "17 steps" in capsys.readouterr().out and ran == [17]


# ------------------------------------------------------------------------------------ 2. verified shipped model
def _copy_shipped(tmp_path):
    root = tmp_path / "pretrained"
    shutil.copytree(PRETRAINED_DIR, root)
    return root / "tiny-trained"


def test_the_shipped_model_records_the_digests_and_fingerprint_of_its_files():
    folder = PRETRAINED_DIR / "tiny-trained"
    meta = yaml.safe_load((folder / "config.yaml").read_text())
    assert meta["files"] == {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
                             for name in ("lfgcm.safetensors", "control.safetensors")}
    backbone = PRETRAINED_DIR / "tiny-backbone"
    assert meta["backbone_files"] == {name: hashlib.sha256((backbone / name).read_bytes()).hexdigest()
                                      for name in ("empty_prompt.safetensors", "unet/config.json", "vae/config.json",
                                                   "unet/diffusion_pytorch_model.safetensors",
                                                   "vae/diffusion_pytorch_model.safetensors")}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)        # no "cannot be verified" or fingerprint warning
        codec = DiffEICCodec.from_pretrained("tiny-trained")
    assert codec.fingerprint() == meta["fingerprint"]


@pytest.mark.parametrize("damage", ["flip", "swap", "fingerprint", "backbone"])
def test_a_tampered_copy_of_the_shipped_model_is_refused_naming_the_file(tmp_path, damage):
    folder = _copy_shipped(tmp_path)
    if damage == "flip":
        raw = bytearray((folder / "control.safetensors").read_bytes())
        raw[len(raw) // 2] ^= 1
        (folder / "control.safetensors").write_bytes(bytes(raw))
        match = r"control\.safetensors: its SHA-256 differs from the one recorded in config\.yaml"
    elif damage == "swap":
        a, b = folder / "lfgcm.safetensors", folder / "control.safetensors"
        da, db = a.read_bytes(), b.read_bytes()
        a.write_bytes(db)
        b.write_bytes(da)
        match = r"lfgcm\.safetensors: its SHA-256 differs"
    elif damage == "backbone":          # the empty-prompt embedding: outside the backbone's content fingerprint
        path = folder.parent / "tiny-backbone" / "empty_prompt.safetensors"
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 1
        path.write_bytes(bytes(raw))
        match = r"tiny-backbone/empty_prompt\.safetensors: its SHA-256 differs from the one recorded in .*config\.yaml " \
                r"\(backbone_files\.empty_prompt\.safetensors\)"
    else:
        path = folder / "config.yaml"
        path.write_text(path.read_text().replace("fingerprint: 80f5bcfc3bb24aff", "fingerprint: 7dc4ff131c4161f9"))
        match = r"config\.yaml: fingerprint = 7dc4ff131c4161f9, but the model loaded from this folder has " \
                r"fingerprint 80f5bcfc3bb24aff"
    with pytest.raises(CheckpointError, match=match):
        DiffEICCodec.from_pretrained(folder)


def test_folders_without_digests_load_with_a_warning_but_shipped_ones_are_refused(tmp_path, tiny_codec, monkeypatch):
    old = tiny_codec.save_pretrained(tmp_path / "old")
    meta = yaml.safe_load((old / "config.yaml").read_text())
    del meta["files"]
    meta["fingerprint"] = "0123456789abcdef"        # an older diffeic's fingerprint definition
    (old / "config.yaml").write_text(yaml.safe_dump(meta))
    with pytest.warns(UserWarning, match="records no SHA-256 of its files") as record:
        DiffEICCodec.from_pretrained(old)
    assert any("fingerprint = 0123456789abcdef" in str(w.message) for w in record)
    folder = _copy_shipped(tmp_path)
    monkeypatch.setattr("diffeic.codecs.registry.PRETRAINED_DIR", folder.parent)
    meta = yaml.safe_load((folder / "config.yaml").read_text())
    del meta["files"]
    (folder / "config.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(CheckpointError, match="files: a shipped model must record the SHA-256"):
        DiffEICCodec.from_pretrained(folder)


def test_family_folders_verify_their_fingerprint(tmp_path, hific):
    folder = hific.save_pretrained(tmp_path / "h")
    HiFiCCodec.from_pretrained(folder)
    path = folder / "config.yaml"
    meta = yaml.safe_load(path.read_text())
    meta["model"]["init_seed"] = 5              # config edited: the weights verify, the model is another one
    path.write_text(yaml.safe_dump(meta))
    with pytest.raises(CheckpointError, match=r"config\.yaml: fingerprint = [0-9a-f]{16}, but the model loaded"):
        HiFiCCodec.from_pretrained(folder)


# ------------------------------------------------------------------------------------ 3. absurd size targets
@pytest.mark.parametrize("kw", [{"target_bpp": 1e308}, {"target_bpp": float("inf")}, {"target_bpp": float("nan")},
                                {"target_bpp": 10 ** 400}, {"target_bytes": 10 ** 400}, {"target_bytes": 2 ** 41}])
def test_absurd_size_targets_are_a_value_error_naming_the_range(vr, kw):
    name = next(iter(kw))
    with pytest.raises(ValueError, match=rf"{name} = .*: must be a finite number in \(0, 1024\]" if name == "target_bpp"
                       else rf"{name} = .*: must be an integer in \[1, 1099511627776\]"):
        vr.compress(photo("rocket", (32, 32)), **kw)


# ------------------------------------------------------------------------------------ 4. symbolic links
def test_a_checkpoint_reached_through_a_symbolic_link_finds_its_backbone(tmp_path):
    folder = _copy_shipped(tmp_path)
    (tmp_path / "links").mkdir()
    link = tmp_path / "links" / "model"
    link.symlink_to(folder, target_is_directory=True)
    codec = DiffEICCodec.from_pretrained(link)
    assert codec.fingerprint() == "80f5bcfc3bb24aff"
    meta = yaml.safe_load((folder / "config.yaml").read_text())
    del meta["backbone_files"]                                  # (a user's copy: digests are optional there)
    (folder / "config.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    shutil.rmtree(folder.parent / "tiny-backbone" / "unet")
    with pytest.raises(Exception) as err:
        DiffEICCodec.from_pretrained(link)
    message = str(err.value)
    assert f"{folder / 'config.yaml'}: sd_path = '../tiny-backbone', the frozen backbone of this 'tiny_vr' " \
           f"checkpoint, resolves to {folder.parent / 'tiny-backbone'}" in message
    assert "sd21" not in message


# ------------------------------------------------------------------------------------ 5. long numbers
@pytest.mark.parametrize("text,field", [("trained: " + "9" * 5000, "trained"),
                                        ("step: " + "1" * 4500, "step"),
                                        ("trained: 1e400", "trained"),
                                        ("lmbda: [1.0, -" + "2" * 5000 + "]", r"lmbda\[1\]")])
def test_malformed_numbers_name_the_file_and_the_field(tmp_path, tiny_codec, text, field):
    folder = tiny_codec.save_pretrained(tmp_path / "m")
    path = folder / "config.yaml"
    # Only the top-level line: "pretrained: false" inside the backbone section must stay.
    path.write_text(text + "\n" + re.sub(r"(?m)^trained: false\n", "", path.read_text()))
    with pytest.raises(CheckpointError, match=rf"{path}: {field}"):
        DiffEICCodec.from_pretrained(folder)


# ------------------------------------------------------------------------------------ 6. one encoding per rate
def test_negative_zero_and_subnormal_rates_are_written_as_zero_and_refused_when_read(vr):
    x = photo("rocket", (32, 32))
    zero = vr.compress(x, rate=0.0)
    subnormal = float(np.float32(1e-40))
    assert subnormal != 0.0 and canonical_rate(subnormal) == 0.0 and canonical_rate(-0.0) == 0.0
    for q in (-0.0, subnormal, np.float32(-1e-42), torch.tensor(-0.0)):
        assert vr.compress(x, rate=q) == zero
    header, payload = unpack(zero)
    head = pack(header, b"")[:-4]
    assert head[-4:] == struct.pack(">f", 0.0)
    for bits32 in (0x80000000, 0x00000001, 0x807FFFFF, 0x00400000):
        body = head[:-4] + struct.pack(">I", bits32) + payload
        with pytest.raises(BitstreamError, match="not in canonical form"):
            vr.decompress_latents(body + zlib.crc32(body).to_bytes(4, "big"))
        with pytest.raises(ValueError, match="not in canonical form"):
            pack(StreamHeader(**{**header.__dict__, "rate": struct.unpack(">f", struct.pack(">I", bits32))[0]}),
                 payload)
    smallest_normal = float(np.float32(2.0 ** -126))
    assert unpack(pack(StreamHeader(**{**header.__dict__, "rate": smallest_normal}), payload))[0].rate \
        == smallest_normal


# ------------------------------------------------------------------------------------ 7. the metadata schema
@pytest.mark.parametrize("field,value,match", [
    ("lmbda", float("nan"), r"lmbda = nan: must be a finite number > 0"),
    ("format_version", 10 ** 100, r"format_version = <an integer of about 101 digits>: must be an integer in \[1, 2\]"),
    ("fingerprint", "not-hex", r"fingerprint = 'not-hex': must be 16 lowercase hex digits"),
    ("trained", None, r"trained = null: must be given"),
    ("step", -1, r"step = -1: must be an integer >= 0"),
    ("provenance", "x", r"provenance = 'x': must be a mapping"),
    ("files", {"model.safetensors": "00"}, r"files.model.safetensors = '00': must be 64 lowercase hex digits"),
])
@pytest.mark.parametrize("family", ["diffeic", "hific"])
def test_every_declared_metadata_field_is_checked_and_named(tmp_path, tiny_codec, hific, family, field, value,
                                                            match):
    codec, cls = (tiny_codec, DiffEICCodec) if family == "diffeic" else (hific, HiFiCCodec)
    folder = codec.save_pretrained(tmp_path / "m")
    path = folder / "config.yaml"
    meta = yaml.safe_load(path.read_text())
    if field == "files" and family == "diffeic":
        value = {"lfgcm.safetensors": "00", "control.safetensors": "00"}
        match = r"files.(lfgcm|control).safetensors = '00': must be 64 lowercase hex digits"   # safe_dump sorts keys
    meta[field] = value
    path.write_text(yaml.safe_dump(meta))
    with pytest.raises(CheckpointError, match=rf"{path}: {match}"):
        cls.from_pretrained(folder)


# ------------------------------------------------------------------------------------ 8. one scalar check
INTEGER_OK = [3, np.int64(3), np.uint8(3), np.array(3), torch.tensor(3)]
INTEGER_REFUSED = [True, np.bool_(True), torch.tensor(True), 3.0, np.float64(3.0), np.array(3.0), torch.tensor(3.0),
                   Fraction(3), Decimal(3), float("nan"), float("inf"), "3", np.array([3])]
REAL_OK = [2, 2.5, np.float32(2.5), np.int64(2), np.array(2.5), np.array(2), torch.tensor(2.5), torch.tensor(2),
           Fraction(5, 2), Decimal("2.5")]
REAL_REFUSED = [True, np.bool_(False), torch.tensor(True), float("nan"), float("inf"), -float("inf"),
                Decimal("NaN"), Decimal("Infinity"), "2.5", 2 + 0j, np.array([2.5]), torch.tensor([2.5])]


def _integer_args(tiny_codec, refine):
    return {"diffeic steps": lambda v: tiny_codec.resolve_settings(None, steps=v).steps,
            "diffeic seed": lambda v: tiny_codec.resolve_settings(None, seed=v).seed,
            "diffeic max_steps": lambda v: tiny_codec.resolve_settings(None, max_steps=v) and int(v),
            "refine steps": lambda v: refine.resolve_settings(None, steps=v)["steps"],
            "refine seed": lambda v: refine.resolve_settings(None, seed=v)["seed"],
            "refine max_steps": lambda v: refine.resolve_settings(None, max_steps=v) is not None and int(v)}


@pytest.mark.parametrize("value", INTEGER_OK + INTEGER_REFUSED, ids=repr)
def test_integer_arguments_take_any_integer_scalar_and_nothing_else(tiny_codec, refine, hific, vr, value):
    calls = _integer_args(tiny_codec, refine)
    calls["hific max_steps"] = lambda v: hific.resolve_settings(None, max_steps=v) == {} and int(v)
    calls["diffeic target_bytes"] = lambda v: vr._rate_request(None, None, v, 100)[1]
    for name, call in calls.items():
        if any(value is ok for ok in INTEGER_OK):
            result = call(value)
            assert result == 3 and type(result) is int, name
        else:
            arg = name.split()[1]
            with pytest.raises(ValueError, match=rf"{arg} = .*: must be an integer"):
                call(value)


@pytest.mark.parametrize("value", REAL_OK + REAL_REFUSED, ids=repr)
def test_real_arguments_take_any_finite_real_scalar_and_nothing_else(vr, value):
    for name, call in {"rate": lambda v: vr._rate_request(v, None, None, 800)[0],
                       "target_bpp": lambda v: vr._rate_request(None, v, None, 800)[1]}.items():
        if any(value is ok for ok in REAL_OK):
            expected = float(value) if name == "rate" else int(float(value) * 800 // 8)
            assert call(value) == expected, name
        else:
            with pytest.raises(ValueError, match=rf"{name} = .*: must be a (real|finite) number"):
                call(value)


def test_the_tree_holds_no_wheels_and_ignores_them():
    assert not list(REPO.glob("*.whl"))
    assert "*.whl" in (REPO / ".gitignore").read_text().split()

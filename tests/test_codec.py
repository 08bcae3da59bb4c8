"""DiffEICCodec on the tiny preset: exact coding on real photos, rate bound, API, input checks (fuzzing: test_fuzz.py)."""
import subprocess
import sys

import pytest
import torch

from conftest import photo
from helpers import lfgcm_forward
from diffeic import BitstreamError, DiffEICCodec
from diffeic.bitstream import container_overhead, unpack
from diffeic.codecs.base import padded_size


def _bytes_bound(codec, x, bits):
    """File bytes ≤ 1.01 × estimate/8 + container overhead (design target)."""
    est = codec.estimate_bits(x)
    info = DiffEICCodec.inspect(bits)
    return len(bits), 1.01 * est / 8 + info["container_bytes"]


@pytest.mark.parametrize("name, size", [("chelsea", None), ("coffee", None), ("astronaut", None),
                                        ("rocket", (17, 33)), ("coffee", (301, 451))])
def test_latents_decode_bit_exactly_and_size_is_kept(tiny_codec, name, size):
    x = photo(name, size)
    bits = tiny_codec.compress(x)
    info = DiffEICCodec.inspect(bits)
    assert (info["height"], info["width"]) == tuple(x.shape[-2:])
    coded = lfgcm_forward(tiny_codec, x)
    lat = tiny_codec.decompress_latents(bits)
    assert torch.equal(lat["y_hat"], coded["y_hat"]) and torch.equal(lat["z_hat"], coded["z_hat"])
    hp, wp = padded_size(*x.shape[-2:])
    assert lat["z_c"].shape == (1, 4, hp // 8, wp // 8)
    if size is None:                      # real photos at full size: the design's rate target
        actual, bound = _bytes_bound(tiny_codec, x, bits)
        assert actual <= bound


def test_rate_bound_on_tiny_images_allows_only_the_coder_flush(tiny_codec):
    x = photo("rocket", (17, 33))
    bits = tiny_codec.compress(x)
    actual, bound = _bytes_bound(tiny_codec, x, bits)
    assert actual <= bound + 4            # rANS flushes its 32-bit state once per stream


def test_batch_compress_gives_one_stream_per_image_equal_to_single(tiny_codec):
    xs = torch.stack([photo("chelsea", (96, 128)), photo("astronaut", (96, 128)), photo("coffee", (96, 128))])
    streams = tiny_codec.compress(xs)
    assert isinstance(streams, list) and len(streams) == 3
    assert streams[1] == tiny_codec.compress(xs[1])
    ests = tiny_codec.estimate_bits(xs)
    assert len(ests) == 3 and all(e > 0 for e in ests)


def test_decompress_returns_original_size_in_unit_range(tiny_codec):
    x = photo("chelsea", (45, 70))
    out = tiny_codec.decompress(tiny_codec.compress(x), steps=2)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1
    outs = tiny_codec.decompress([tiny_codec.compress(x), tiny_codec.compress(photo("rocket", (30, 20)))], steps=1)
    assert [o.shape for o in outs] == [x.shape, (3, 30, 20)]


def test_decode_settings_are_stored_only_when_not_default(tiny_codec):
    x = photo("rocket", (40, 40))
    plain = tiny_codec.compress(x)
    custom = tiny_codec.compress(x, sampler="ddim", steps=3, seed=7)
    assert DiffEICCodec.inspect(plain)["sampler"] is None
    info = DiffEICCodec.inspect(custom)
    assert (info["sampler"], info["steps"], info["seed"]) == ("ddim", 3, 7)
    assert len(custom) == len(plain) + 3


def test_tiny_is_deterministic_across_processes(tiny_codec):
    """Two processes that build `tiny` get the same fingerprint, so streams travel between them."""
    code = "from diffeic import DiffEICCodec; print(DiffEICCodec.from_config('tiny').fingerprint())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == tiny_codec.fingerprint()


def test_fingerprint_follows_the_weights():
    codec = DiffEICCodec.from_config("tiny")
    before = codec.fingerprint()
    bits = codec.compress(photo("rocket", (32, 32)))
    with torch.no_grad():
        codec.lfgcm.decoder.g_s4.bias.add_(0.1)
    assert codec.fingerprint() != before
    with pytest.raises(BitstreamError, match=f"made by model {before[:8]}.*this codec is model"):
        codec.decompress_latents(bits)


def test_streams_made_right_after_a_weight_update_decode():
    """Changing entropy-model weights (as a training step does) refreshes the tables before the
    stream's fingerprint is taken, so the codec decodes its own first stream."""
    codec = DiffEICCodec.from_config("tiny")
    with torch.no_grad():
        codec.lfgcm.entropy_bottleneck.quantiles.add_(0.3)
        codec.lfgcm.hyper_dec.hyper_dec[0].weight.mul_(1.1)
    x = photo("coffee", (64, 64))
    bits = codec.compress(x)
    assert torch.equal(codec.decompress_latents(bits)["y_hat"], lfgcm_forward(codec, x)["y_hat"])


def test_save_and_load_pretrained_round_trip(tmp_path, tiny_codec):
    x = photo("coffee", (64, 96))
    folder = tiny_codec.save_pretrained(tmp_path / "ckpt")
    assert {p.name for p in folder.iterdir()} == {"config.yaml", "lfgcm.safetensors", "control.safetensors"}
    loaded = DiffEICCodec.from_pretrained(folder)
    assert loaded.fingerprint() == tiny_codec.fingerprint()
    bits = tiny_codec.compress(x)
    assert loaded.compress(x) == bits
    assert torch.equal(loaded.decompress_latents(bits)["y_hat"], tiny_codec.decompress_latents(bits)["y_hat"])
    with pytest.raises(FileNotFoundError, match="not a diffeic checkpoint"):
        DiffEICCodec.from_pretrained(tmp_path)


@pytest.mark.parametrize("bad, error, message", [
    ("not a tensor", TypeError, "torch.Tensor"),
    (torch.zeros(3, 8, 8, dtype=torch.uint8), TypeError, "floating-point"),
    (torch.zeros(8, 8), ValueError, "shape"),
    (torch.zeros(1, 1, 3, 8, 8), ValueError, "shape"),
    (torch.zeros(4, 8, 8), ValueError, "3 colour channels"),
    (torch.zeros(3, 0, 8), ValueError, "empty"),
    (torch.full((3, 8, 8), float("nan")), ValueError, "NaN"),
    (torch.full((3, 8, 8), float("inf")), ValueError, "NaN or Inf"),
    (torch.full((3, 8, 8), 1.5), ValueError, r"\[0,1\]"),
    (torch.full((3, 8, 8), -0.1), ValueError, r"\[0,1\]"),
])
def test_bad_images_raise_clear_errors(tiny_codec, bad, error, message):
    with pytest.raises(error, match=message):
        tiny_codec.compress(bad)


@pytest.mark.parametrize("kwargs, message", [({"sampler": "euler"}, "unknown sampler"),
                                             ({"steps": 0}, r"steps = 0: must be an integer"), ({"seed": -1}, "seed")])
def test_bad_decode_settings(tiny_codec, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_codec.compress(photo("rocket", (16, 16)), **kwargs)


def test_bad_streams_raise_bitstream_error(tiny_codec):
    bits = tiny_codec.compress(photo("chelsea", (40, 60)))
    for data, message in [(b"", "empty"), (bytes(100), "not a diffeic stream"), (bits[:10], "truncated|checksum"),
                          (bits[:-3], "checksum"), (bits[:5] + bytes([bits[5] ^ 1]) + bits[6:], "checksum")]:
        with pytest.raises(BitstreamError, match=message):
            tiny_codec.decompress(data)


def test_overhead_of_a_real_kodak_sized_stream_is_16_bytes(tiny_codec):
    bits = tiny_codec.compress(torch.rand(3, 512, 768) * 0.5)
    header, payload = unpack(bits)
    assert len(bits) - len(payload) == container_overhead(header) == 16

"""The demo model shipped in the package: loads offline, is a real codec, and its bytes and pixels are pinned."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import diffeic
from diffeic import DiffEICCodec
from diffeic.pretrained import PRETRAINED_DIR, pretrained_folder
from diffeic.samples import HELDOUT_PHOTOS, load_photo

POINTS = ["tiny-trained-l1", "tiny-trained-l4", "tiny-trained-l16"]     # λ = 1, 4, 16
DATA = Path(__file__).parent / "data"
# Golden values: made by tests/data/make_golden_pretrained.py; regenerate ONLY for a deliberate change of the
# model, the stream format or decoding (and say so in the commit).
GOLDEN_STREAM_SHA256 = "TO-BE-FILLED"
GOLDEN_IMAGE = DATA / "golden_tiny_trained_chelsea.png"


def _x(name):
    return torch.from_numpy(load_photo(name)).permute(2, 0, 1).float() / 255


def _metrics(codec, x):
    from pytorch_msssim import ms_ssim

    bits = codec.compress(x)
    x_hat = codec.decompress(bits)
    q = (x_hat * 255).floor() / 255                            # the 8-bit image the user gets
    psnr = -10 * torch.log10(torch.mean((q - x) ** 2)).item()
    msssim = ms_ssim(q[None], x[None], data_range=1.0).item()
    return 8 * len(bits) / (x.shape[1] * x.shape[2]), psnr, msssim


def test_every_shipped_name_loads_offline_and_says_what_it_is():
    names = diffeic.pretrained_models()
    assert names[0] == "tiny-trained" and set(POINTS) <= set(names)
    for name in names:
        codec = DiffEICCodec.from_pretrained(name)
        assert codec.is_trained and codec.config.name == "tiny"
        assert pretrained_folder(name).parent == PRETRAINED_DIR
    assert DiffEICCodec.from_pretrained("tiny-trained").fingerprint() == \
        DiffEICCodec.from_pretrained("tiny-trained-l1").fingerprint()            # the best-quality point
    size = sum(f.stat().st_size for f in PRETRAINED_DIR.rglob("*") if f.is_file())
    assert size <= 15e6


@pytest.fixture(scope="module")
def results():
    untrained = DiffEICCodec.from_config("tiny")
    out = {"untrained": [_metrics(untrained, _x(n)) for n in HELDOUT_PHOTOS]}
    for name in POINTS:
        codec = DiffEICCodec.from_pretrained(name)
        out[name] = [_metrics(codec, _x(n)) for n in HELDOUT_PHOTOS]
    return out


def test_trained_model_beats_the_untrained_preset_by_far_at_every_rate_on_held_out_photos(results):
    for name in POINTS:
        for (bpp, psnr, msssim), (_, psnr0, msssim0) in zip(results[name], results["untrained"]):
            assert psnr > psnr0 + 6, (name, psnr, psnr0)               # untrained: about 10 dB
            assert msssim > msssim0 + 0.3, (name, msssim, msssim0)


def test_rates_are_ordered_by_lambda_and_span_4x(results):
    for i, _ in enumerate(HELDOUT_PHOTOS):
        bpps = [results[name][i][0] for name in POINTS]
        assert bpps[0] > bpps[1] > bpps[2], bpps                      # larger λ, fewer bits
    mean = [np.mean([r[0] for r in results[name]]) for name in POINTS]
    assert mean[0] / mean[-1] >= 4, mean


def test_golden_stream_and_decoded_image():
    codec = DiffEICCodec.from_pretrained("tiny-trained")
    x = _x("chelsea")
    bits = codec.compress(x)
    assert hashlib.sha256(bits).hexdigest() == GOLDEN_STREAM_SHA256      # entropy coding is exact: bytes are pinned
    info = DiffEICCodec.inspect(bits)
    assert info["version"] == 1 and (info["height"], info["width"]) == (300, 451)
    got = (codec.decompress(bits) * 255).floor().to(torch.uint8).permute(1, 2, 0).numpy()
    want = np.asarray(Image.open(GOLDEN_IMAGE))
    # Pixels are pinned to within one 8-bit step: float kernels may differ across CPUs and thread counts.
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01

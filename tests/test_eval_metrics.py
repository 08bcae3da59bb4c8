"""Per-image metrics: known values, graceful NaN, and one clear skip line per missing learned metric."""
import math

import numpy as np
import pytest

from diffeic.evaluation import metrics as M
from diffeic import netweights as W


def _photo(size=None):
    import skimage.data

    a = skimage.data.astronaut()
    return a if size is None else np.ascontiguousarray(a[:size[0], :size[1]])


def test_psnr_identical_is_inf_and_known_mse_gives_known_value():
    a = _photo()
    assert M.psnr(a, a) == math.inf
    ref = np.full((64, 48, 3), 100, np.uint8)
    rec = ref.copy()
    rec[..., 0] += 15                           # MSE = 15² / 3 = 75 over pixels × channels
    assert M.psnr(ref, rec) == pytest.approx(10 * math.log10(255 ** 2 / 75), abs=1e-12)


def test_psnr_refuses_mismatched_or_non_uint8_input():
    a = _photo((64, 64))
    with pytest.raises(ValueError, match="size mismatch"):
        M.psnr(a, a[:32])
    with pytest.raises(ValueError, match="uint8"):
        M.psnr(a.astype(np.float32), a)


def test_ms_ssim_identical_is_one_and_noise_lowers_it():
    a = _photo((256, 256))
    assert M.ms_ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(0)
    noisy = np.clip(a.astype(int) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    assert 0.5 < M.ms_ssim(a, noisy) < 0.99


def test_ms_ssim_small_image_is_nan_with_a_note_not_a_crash():
    small = _photo((100, 300))
    assert math.isnan(M.ms_ssim(small, small))
    suite = M.MetricSuite(metrics=("psnr", "ms_ssim"))
    out = suite(small, small, image="tiny_one")
    assert math.isnan(out["ms_ssim"]) and out["psnr"] == math.inf
    assert "tiny_one" in suite.notes["ms_ssim"] and str(M.MS_SSIM_MIN_SIDE) in suite.notes["ms_ssim"]


def test_missing_weights_skip_lpips_and_dists_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr("torch.hub.get_dir", lambda: str(tmp_path))      # an empty cache
    monkeypatch.setenv("DIFFEIC_NO_DOWNLOAD", "1")
    suite = M.MetricSuite(metrics=("psnr", "lpips", "dists"))
    a = _photo((64, 64))
    for _ in range(2):                          # second image: no new attempt, same single line
        out = suite(a, a)
        assert out["lpips"] is None and out["dists"] is None and out["psnr"] == math.inf
    assert set(suite.skipped) == {"lpips", "dists"}
    assert "alexnet-owt-7be5be79.pth" in suite.skipped["lpips"] and str(tmp_path) in suite.skipped["lpips"]
    assert "vgg16-397923af.pth" in suite.skipped["dists"]
    assert all("\n" not in line for line in suite.skipped.values())


def test_niqe_skipped_without_pyiqa(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyiqa(name, *args, **kw):
        if name == "pyiqa":
            raise ImportError("No module named 'pyiqa'")
        return real_import(name, *args, **kw)
    monkeypatch.setattr(builtins, "__import__", no_pyiqa)
    suite = M.MetricSuite(metrics=("niqe",))
    a = _photo((64, 64))
    assert suite(a, a)["niqe"] is None
    assert suite.skipped["niqe"].startswith("NIQE skipped") and "pyiqa" in suite.skipped["niqe"]


def test_ensure_weights_uses_the_hub_cache_first(monkeypatch, tmp_path):
    monkeypatch.setattr("torch.hub.get_dir", lambda: str(tmp_path))
    wf = W.WeightFile("test backbone", "https://example.invalid/models/net-1234.pth")
    cached = tmp_path / "checkpoints" / "net-1234.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")

    def no_network(*a, **k):
        raise AssertionError("must not download a cached file")
    monkeypatch.setattr("torch.hub.download_url_to_file", no_network)
    assert W.ensure_weights(wf, allow_download=True) == cached


def test_ensure_weights_failed_download_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr("torch.hub.get_dir", lambda: str(tmp_path))

    def offline(*a, **k):
        raise OSError("Name or service not known")
    monkeypatch.setattr("torch.hub.download_url_to_file", offline)
    wf = W.WeightFile("test backbone", "https://example.invalid/models/net-1234.pth")
    with pytest.raises(W.WeightsUnavailable) as err:
        W.ensure_weights(wf, allow_download=True)
    msg = str(err.value)
    assert "net-1234.pth" in msg and "https://example.invalid/models/net-1234.pth" in msg
    assert str(tmp_path / "checkpoints") in msg and "download failed" in msg

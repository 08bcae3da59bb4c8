"""FID/256 patch extraction (Mentzer et al. 2020), FID/KID from features, and the offline skip."""
import numpy as np
import pytest

from diffeic.evaluation import fid as F


@pytest.mark.parametrize("h,w,n", [(768, 768, 13), (768, 512, 8), (512, 768, 8), (512, 512, 5),
                                   (383, 1000, 3), (300, 300, 1), (255, 900, 0)])
def test_patch_counts(h, w, n):
    assert len(F.patch_origins(h, w)) == n


def test_patches_are_the_right_pixels_on_both_grids():
    h, w = 768, 512
    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    patches = F.extract_patches(img)
    origins = F.patch_origins(h, w)
    assert patches.shape == (8, 3, 256, 256) and patches.dtype == np.uint8
    assert origins[:6] == [(0, 0), (0, 256), (256, 0), (256, 256), (512, 0), (512, 256)]
    assert origins[6:] == [(128, 128), (384, 128)]          # the shifted grid
    for p, (y, x) in zip(patches, origins):
        assert np.array_equal(p, img[y:y + 256, x:x + 256].transpose(2, 0, 1))


def test_fid_kid_from_features():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 16)).astype(np.float32)
    same = F.fid_kid(a, a.copy())
    assert same["fid"] == pytest.approx(0.0, abs=1e-3) and same["n_patches"] == 300
    shifted = F.fid_kid(a, a + 1.0)                 # mean shift of 1 in 16 dims → FID ≈ 16
    assert shifted["fid"] == pytest.approx(16.0, rel=1e-3)
    assert shifted["kid"] > same["kid"]


def test_missing_inception_weights_raise_weights_unavailable(monkeypatch, tmp_path):
    pytest.importorskip("torch_fidelity")
    from diffeic.netweights import WeightsUnavailable

    monkeypatch.setattr("torch.hub.get_dir", lambda: str(tmp_path))
    monkeypatch.setenv("DIFFEIC_NO_DOWNLOAD", "1")
    with pytest.raises(WeightsUnavailable, match="weights-inception-2015-12-05-6726825d.pth"):
        F.InceptionFeatures()

"""Baselines: quality search lands near the target on a real photo, floors honestly, skips cleanly."""
import numpy as np
import pytest

from diffeic.evaluation import baselines as B
from diffeic.evaluation.metrics import psnr
from diffeic.evaluation.bpp import bpp


@pytest.fixture(scope="module")
def photo():
    import skimage.data

    return skimage.data.astronaut()


def _get(name):
    built, skipped = B.available_baselines([name])
    if not built:
        pytest.skip(skipped[name])
    return built[0]


@pytest.mark.parametrize("name,target,tol", [("jpeg", 0.5, 0.06), ("webp", 0.3, 0.06), ("avif", 0.15, 0.08)])
def test_quality_search_lands_within_tolerance(photo, name, target, tol):
    codec = _get(name)
    res = B.quality_search(codec, photo, target)
    assert not res.floor and not res.ceiling
    assert abs(res.bpp - target) / target < tol, (res.level, res.bpp)
    assert res.bpp == bpp(len(res.data), 512, 512)
    assert res.trials <= 2 + int(np.ceil(np.log2(len(codec.levels))))       # bisection, not a scan
    rec = codec.decode(res.data, photo.shape[:2])
    assert rec.shape == photo.shape and rec.dtype == np.uint8 and 18 < psnr(photo, rec) < 40


@pytest.mark.parametrize("name,target", [("hevc", 0.3), ("jxl", 0.6), ("jpeg2000", 0.2)])
def test_pypi_baselines_hit_the_target_within_one_quality_step(photo, name, target):
    """HEVC (pillow-heif), JPEG XL and JPEG 2000 (imagecodecs): the chosen level's rate is one of the two
    levels around the target, so the target lies between it and its neighbour on the other side."""
    codec = _get(name)
    face = np.ascontiguousarray(photo[:256, 128:320])       # 256×192: keeps the encodes cheap
    res = B.quality_search(codec, face, target)
    assert not res.floor and not res.ceiling and res.bpp == bpp(len(res.data), 256, 192)
    i = codec.levels.index(res.level)
    neighbour = codec.levels[i + 1] if res.bpp <= target else codec.levels[i - 1]
    other = bpp(len(codec.encode(face, neighbour)), 256, 192)
    assert min(res.bpp, other) <= target <= max(res.bpp, other), (res.level, res.bpp, other)
    assert abs(np.log(res.bpp / target)) <= abs(np.log(other / target))     # the closer of the two
    rec = codec.decode(res.data, face.shape[:2])
    assert rec.shape == face.shape and rec.dtype == np.uint8 and 20 < psnr(face, rec) < 40
    assert codec.label and res.trials <= 2 + int(np.ceil(np.log2(len(codec.levels))))


def test_pypi_baselines_skip_with_one_line_when_not_installed(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_extras(name, *args, **kwargs):
        if name in ("pillow_heif", "imagecodecs"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_extras)
    built, skipped = B.available_baselines(["jpeg", "hevc", "jxl", "jpeg2000"])
    assert [b.name for b in built] == ["jpeg"]
    assert skipped == {"hevc": 'hevc skipped: pillow-heif is not installed (pip install -e ".[baselines]")',
                       "jxl": 'jxl skipped: imagecodecs is not installed (pip install -e ".[baselines]")',
                       "jpeg2000": 'jpeg2000 skipped: imagecodecs is not installed (pip install -e ".[baselines]")'}


def test_unreachable_rate_returns_the_floor_with_its_real_bpp(photo):
    jpeg = _get("jpeg")
    res = B.quality_search(jpeg, photo, 0.01)
    assert res.floor and res.level == jpeg.levels[0] and res.bpp > 0.05      # JPEG cannot go that low


def test_unreachable_high_rate_returns_the_ceiling(photo):
    res = B.quality_search(_get("jpeg"), photo[:64, :64], 1000.0)
    assert res.ceiling and res.level == 95


def test_missing_binaries_and_unknown_names_skip_with_a_line(monkeypatch):
    monkeypatch.setattr(B.shutil, "which", lambda tool: None)
    built, skipped = B.available_baselines(["jpeg", "bpg", "vtm", "nonsense"])
    assert [b.name for b in built] == ["jpeg"]
    assert skipped["bpg"] == "bpg skipped: bpgenc, bpgdec not on PATH"
    assert "EncoderApp" in skipped["vtm"] and "unknown baseline" in skipped["nonsense"]


def test_compressai_zoo_offline_skips_with_a_line(monkeypatch, tmp_path):
    monkeypatch.setattr("torch.hub.get_dir", lambda: str(tmp_path))
    monkeypatch.setenv("DIFFEIC_NO_DOWNLOAD", "1")
    built, skipped = B.available_baselines(["compressai:bmshj2018-hyperprior"])
    assert not built
    line = skipped["compressai:bmshj2018-hyperprior"]
    assert line.startswith("compressai:bmshj2018-hyperprior skipped") and "bmshj2018-hyperprior-1-" in line

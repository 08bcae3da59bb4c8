"""Test-wide settings: never touch the network, keep CPU threads bounded."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DIFFEIC_NO_DOWNLOAD", "1")   # metric weights and datasets: never fetched in tests

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def photo(name: str, size=None) -> torch.Tensor:
    """A scikit-image sample photo as a float (3,H,W) tensor in [0,1], optionally resized/cropped to (H,W)."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    x = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1).float() / 255.0
    if size is not None:
        h, w = size
        x = torch.nn.functional.interpolate(x[None], size=(h, w), mode="area")[0].clamp(0, 1)
    return x


@pytest.fixture(scope="session")
def tiny_codec():
    from diffeic import DiffEICCodec

    return DiffEICCodec.from_config("tiny")


# One fresh codec per test module, as each module had: tests may configure them (optimize, monkeypatch).
@pytest.fixture(scope="module")
def hific():
    from diffeic.hific import HiFiCCodec

    return HiFiCCodec.from_config("hific_tiny")


@pytest.fixture(scope="module")
def refine():
    from diffeic.refine import RefineCodec

    return RefineCodec.from_config("refine_tiny")


SLOW_TIMEOUT_S = 3 * 3600


def pytest_collection_modifyitems(config, items):
    # The 300 s default guards the default suite against hangs; `slow` runs are training jobs and
    # full-size builds that take tens of minutes on 2 cores, so they get a long guard unless they set their own.
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))

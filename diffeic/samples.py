"""The colour photos that scikit-image ships inside its wheel: the offline demo's only data.

The first shipped demo model (``tiny-trained``) is trained on :data:`TRAIN_PHOTOS` and evaluated on
:data:`HELDOUT_PHOTOS`, which it never saw; the demo model ``demo-trained`` saw none of them.  Nothing is
downloaded.  ``stereo_motorcycle`` is a
stereo pair, so its two views count as two photos.
"""
from __future__ import annotations

import functools
from typing import Tuple

import numpy as np

#: Photos the demo model trains on (random crops and flips).
TRAIN_PHOTOS: Tuple[str, ...] = ("astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                                 "motorcycle_left", "motorcycle_right")
#: Photos kept out of every training run: the demo's validation and evaluation set.
HELDOUT_PHOTOS: Tuple[str, ...] = ("chelsea", "coffee")
ALL_PHOTOS = TRAIN_PHOTOS + HELDOUT_PHOTOS


def load_photo(name: str) -> np.ndarray:
    """A bundled photo as a ``(H, W, 3)`` uint8 array (offline; a fresh copy on every call)."""
    if name not in ALL_PHOTOS:
        raise ValueError(f"unknown sample photo {name!r}; choose from {', '.join(ALL_PHOTOS)}")
    return _decoded(name).copy()


def centre_crop(name: str, limit: int = 384) -> "torch.Tensor":
    """A bundled photo's centre crop as a ``(3, h, w)`` float tensor in [0, 1]: each side the largest multiple of 64
    that the photo holds, at most ``limit`` (the crops the demo model is judged on)."""
    import torch

    a = load_photo(name)
    h, w = min(limit, a.shape[0] // 64 * 64), min(limit, a.shape[1] // 64 * 64)
    if h < 64 or w < 64:
        raise ValueError(f"limit = {limit}: a crop needs at least 64 pixels a side")
    top, left = (a.shape[0] - h) // 2, (a.shape[1] - w) // 2
    return torch.from_numpy(a[top:top + h, left:left + w].copy()).permute(2, 0, 1).float() / 255


@functools.lru_cache(maxsize=None)
def _decoded(name: str) -> np.ndarray:
    # Training draws thousands of crops from nine photos: decode each PNG once per process.
    import skimage.data

    if name.startswith("motorcycle_"):
        left, right, _ = skimage.data.stereo_motorcycle()
        arr = left if name == "motorcycle_left" else right
    else:
        arr = getattr(skimage.data, name)()
    return np.ascontiguousarray(arr[..., :3]).astype(np.uint8)


__all__ = ["TRAIN_PHOTOS", "HELDOUT_PHOTOS", "ALL_PHOTOS", "centre_crop", "load_photo"]

"""Rate from real files (eval protocol §3): bits of the file on disk over the image's pixels."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple, Union

#: The DiffEIC codec (and the official code) pads to multiples of 64 before coding.
PAD_MULTIPLE = 64


def padded_hw(height: int, width: int, multiple: int = PAD_MULTIPLE) -> Tuple[int, int]:
    """H and W rounded up to a multiple of ``multiple``."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def bpp(n_bytes: int, height: int, width: int) -> float:
    """Bits per pixel of ``n_bytes`` over the original ``height × width`` (the honest figure)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    return 8.0 * n_bytes / (height * width)


def bpp_padded(n_bytes: int, height: int, width: int) -> float:
    """Paper-compatible bpp: the pixel count of the 64-padded tensor (official `apply_condition_compress`)."""
    return bpp(n_bytes, *padded_hw(height, width))


def write_and_measure(path: Union[str, Path], data: bytes) -> int:
    """Write ``data`` to ``path`` and return the size of the file as written (not ``len(data)``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return os.path.getsize(path)

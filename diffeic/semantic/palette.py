"""The colour palette part: the image averaged down to a small grid, coded with WebP.

Rethinking Image Compression on the Web with Generative AI sends, beside the prompt and the edges, the image
downsampled to a 32×32 grid and coded with WebP, from which the decoder takes the colours.  Here:

* **grid**: the long side of the grid is ``grid`` pixels (default :data:`DEFAULT_GRID` = 32, as the paper), the
  short side keeps the aspect ratio (``max(1, round(short · grid / long))``); an image smaller than the grid keeps
  its own size (:func:`palette_shape`).  Each grid cell is the mean of the pixels it covers (Pillow's ``BOX``
  filter, area-weighted where cells straddle pixels).
* **coding**: lossy WebP at ``quality`` (default :data:`DEFAULT_QUALITY` = 75, libwebp's own default) and lossless
  WebP are both made and the smaller is sent, lossless on a tie (it is then exact for no extra bytes).  On
  photos lossy wins (32×32 astronaut: 538 bytes lossy q = 75, 2228 lossless); on flat graphics lossless can.
* **decoding** (:func:`decode_palette`) returns exactly what libwebp decodes from the part, and
  :func:`upsample_palette` resizes it bicubically (Pillow) to the image size for the decoder.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
from PIL import Image

from ..bitstream import BitstreamError
from ..sizes import size_text
from ._webp import check_rgb8, decode_webp, encode_webp, webp_size

DEFAULT_GRID = 32              #: long side of the palette grid, in grid cells (the paper's 32×32)
MAX_GRID = 256                 #: the largest grid a palette part may have
DEFAULT_QUALITY = 75           #: lossy WebP quality of the palette

__all__ = ["DEFAULT_GRID", "MAX_GRID", "DEFAULT_QUALITY", "palette_shape", "palette_grid", "encode_palette",
           "palette_part_shape", "decode_palette",
           "upsample_palette"]


def _check_grid(grid) -> int:
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or not 1 <= grid <= MAX_GRID:
        raise ValueError(f"palette grid must be an integer in 1..{MAX_GRID} (its long side in cells), got {grid!r}")
    return int(grid)


def palette_shape(height: int, width: int, grid: int = DEFAULT_GRID) -> Tuple[int, int]:
    """``(h, w)`` of the palette grid of a ``height × width`` image: long side ``min(grid, long side)``, the
    other side in proportion (at least 1)."""
    grid = _check_grid(grid)
    long_side = max(height, width)
    g = min(grid, long_side)
    if height >= width:
        return g, max(1, round(width * g / height))
    return max(1, round(height * g / width)), g


def palette_grid(image, grid: int = DEFAULT_GRID) -> np.ndarray:
    """The ``palette_shape`` grid of an ``(H, W, 3)`` uint8 image (or Pillow image): the mean colour of each cell."""
    rgb = check_rgb8(image)
    h, w = palette_shape(rgb.shape[0], rgb.shape[1], grid)
    if (h, w) == rgb.shape[:2]:
        return rgb.copy()
    return np.asarray(Image.fromarray(rgb, "RGB").resize((w, h), Image.Resampling.BOX), dtype=np.uint8)


def encode_palette(image, grid: int = DEFAULT_GRID, quality: int = DEFAULT_QUALITY) -> bytes:
    """The palette part of an image: its :func:`palette_grid`, as the smaller of lossy WebP at ``quality`` and
    lossless WebP (lossless on a tie)."""
    cells = palette_grid(image, grid)
    lossy = encode_webp(cells, quality)
    lossless = encode_webp(cells, 100, lossless=True)
    return lossless if len(lossless) <= len(lossy) else lossy


def palette_part_shape(data: bytes, height: int, width: int) -> Tuple[int, int]:
    """``(h, w)`` of the grid in a palette part of a ``height × width`` image, read from its WebP header: it must be
    ``palette_shape(height, width, g)`` for its own long side ``g`` ≤ :data:`MAX_GRID`, else
    :class:`~diffeic.bitstream.BitstreamError`."""
    h, w = webp_size(data, "palette part")
    if max(h, w) > MAX_GRID or (h, w) != palette_shape(height, width, max(h, w)):
        raise BitstreamError(f"corrupt palette part: a {size_text(h, w)} grid is not the palette of a "
                             f"{size_text(height, width)} image (long side ≤ {MAX_GRID}, aspect kept)")
    return h, w


def decode_palette(data: bytes, height: int, width: int) -> np.ndarray:
    """The palette grid (uint8 ``(h, w, 3)``, exactly as libwebp decodes it) of a ``height × width`` image's
    palette part; a part of the wrong size (:func:`palette_part_shape`) or one that does not decode raises
    :class:`~diffeic.bitstream.BitstreamError`."""
    h, w = palette_part_shape(data, height, width)
    return decode_webp(data, h, w, "palette part")


def upsample_palette(cells: np.ndarray, height: int, width: int) -> np.ndarray:
    """The palette grid resized to ``height × width`` (bicubic, Pillow), uint8 ``(height, width, 3)``: the colour
    guide the decoder starts from."""
    cells = check_rgb8(cells, "palette grid")
    if height < 1 or width < 1:
        raise ValueError(f"cannot upsample a palette to {size_text(height, width)}")
    return np.asarray(Image.fromarray(cells, "RGB").resize((width, height), Image.Resampling.BICUBIC), dtype=np.uint8)

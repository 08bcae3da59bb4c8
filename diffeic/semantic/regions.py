"""Kept regions: parts of the image (faces, logos, small text) sent as pixels and pasted back after generation.

Rethinking Image Compression on the Web with Generative AI keeps salient regions as image data and lets the
generative model inpaint around them.  A region is a box ``(x0, y0, x1, y1)`` in pixels of the image, ``x1`` and
``y1`` exclusive (so its size is ``(x1 - x0) × (y1 - y0)``).  Boxes must lie inside the image, be non-empty and
not overlap (overlapping boxes are refused, not merged: say the union yourself); at most :data:`MAX_REGIONS`.
They are kept in a canonical order, sorted by ``(y0, x0)``, so one set of regions has one coding.  Each region's
pixels are coded with lossy WebP at ``quality`` (default :data:`DEFAULT_QUALITY` = 90); decoding returns what
libwebp decodes, and :func:`paste_regions` writes the regions into an image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Sequence, Tuple

import numpy as np

from ..sizes import size_text
from ._webp import MAX_WEBP_SIDE, check_rgb8, decode_webp, encode_webp

MAX_REGIONS = 16               #: the most kept regions one image may have
DEFAULT_QUALITY = 90           #: lossy WebP quality of a kept region

Box = Tuple[int, int, int, int]

__all__ = ["MAX_REGIONS", "DEFAULT_QUALITY", "Box", "KeptRegion", "check_boxes", "encode_region", "decode_region",
           "paste_regions"]


@dataclass(frozen=True, eq=False)          # holds arrays: compare fields with numpy
class KeptRegion:
    """One kept region: its box ``(x0, y0, x1, y1)`` (``x1``, ``y1`` exclusive) and its decoded pixels, uint8
    ``(y1 - y0, x1 - x0, 3)``."""

    box: Box
    pixels: np.ndarray


def _box(box, height: int, width: int) -> Box:
    try:
        values = tuple(box)
    except TypeError:
        raise ValueError(f"a kept region is a box (x0, y0, x1, y1), got {box!r}") from None
    if len(values) != 4 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"a kept region is a box of four integers (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = (int(v) for v in values)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"kept region {(x0, y0, x1, y1)} is empty or not inside the {size_text(height, width)} "
                         f"image (need 0 ≤ x0 < x1 ≤ {width}, 0 ≤ y0 < y1 ≤ {height}; x1, y1 exclusive)")
    if max(x1 - x0, y1 - y0) > MAX_WEBP_SIDE:
        raise ValueError(f"kept region {(x0, y0, x1, y1)} is larger than WebP codes (sides ≤ {MAX_WEBP_SIDE})")
    return x0, y0, x1, y1


def check_boxes(boxes: Iterable, height: int, width: int) -> List[Box]:
    """The boxes as int tuples in canonical order (sorted by ``(y0, x0)``), after checking each is inside the
    ``height × width`` image and non-empty, that no two overlap and that there are at most :data:`MAX_REGIONS`;
    ``ValueError`` naming the offending box(es) otherwise."""
    if isinstance(boxes, (str, bytes)) or boxes is None:
        raise TypeError(f"keep must be a list of boxes (x0, y0, x1, y1), got {type(boxes).__name__}")
    found = [_box(b, height, width) for b in boxes]
    if len(found) > MAX_REGIONS:
        raise ValueError(f"{len(found)} kept regions: at most {MAX_REGIONS}")
    found.sort(key=lambda b: (b[1], b[0], b[3], b[2]))
    for i, a in enumerate(found):
        for b in found[i + 1:]:
            if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                raise ValueError(f"kept regions {a} and {b} overlap (give their union as one box instead)")
    return found


def encode_region(image, box: Box, quality: int = DEFAULT_QUALITY) -> bytes:
    """WebP bytes (lossy, ``quality``) of the ``box`` crop of an ``(H, W, 3)`` uint8 image."""
    rgb = check_rgb8(image)
    x0, y0, x1, y1 = _box(box, rgb.shape[0], rgb.shape[1])
    return encode_webp(rgb[y0:y1, x0:x1], quality)


def decode_region(data: bytes, box: Box) -> KeptRegion:
    """The :class:`KeptRegion` of a region part; a WebP that is not the box's size, or does not decode, raises
    :class:`~diffeic.bitstream.BitstreamError`."""
    x0, y0, x1, y1 = box
    return KeptRegion(tuple(box), decode_webp(data, y1 - y0, x1 - x0, f"kept region {tuple(box)}"))


def paste_regions(image, regions: Sequence[KeptRegion]) -> np.ndarray:
    """A copy of the ``(H, W, 3)`` uint8 image with each region's pixels written into its box."""
    out = check_rgb8(image).copy()
    h, w = out.shape[:2]
    for region in regions:
        x0, y0, x1, y1 = _box(region.box, h, w)
        if np.shape(region.pixels) != (y1 - y0, x1 - x0, 3):
            raise ValueError(f"kept region {region.box}: pixels of shape {np.shape(region.pixels)}, the box needs "
                             f"{(y1 - y0, x1 - x0, 3)}")
        out[y0:y1, x0:x1] = region.pixels
    return out

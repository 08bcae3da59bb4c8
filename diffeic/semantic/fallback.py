"""The never-larger rule: when a plain WebP of the image would do at least as well, store that instead.

Rethinking Image Compression on the Web with Generative AI notes that small images can come out *larger* as
parts (prompt, edges, palette, regions) than as an ordinary file, and that an implementation must check for it.
The rule here (:func:`choose_fallback`, a pure function of the parts' byte count and the image):

1. Code the image as a plain lossy WebP at the *reference quality* (default :data:`REFERENCE_QUALITY` = 75,
   libwebp's default).  If that file (plus the fallback stream's framing) is **larger** than the parts, the parts
   are kept: a generative redraw is worth sending only when it is smaller than an ordinary picture of fair quality.
2. Otherwise the fallback is stored, at the **highest quality that still fits** in the parts' bytes, found by
   bisection over ``reference_quality .. 100`` (WebP's size grows with quality nearly but not strictly
   monotonically, so the bisection's answer is the highest *it* finds; every candidate it returns fits).  So the
   fallback is never larger than the parts it replaces, and never below the reference quality.

Images larger than WebP codes (a side over 16383) get no fallback; the message says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..sizes import size_text
from ._webp import MAX_WEBP_SIDE, check_rgb8, encode_webp

REFERENCE_QUALITY = 75         #: WebP quality the parts are compared with

__all__ = ["REFERENCE_QUALITY", "FallbackChoice", "choose_fallback"]


@dataclass(frozen=True)
class FallbackChoice:
    """What :func:`choose_fallback` decided.

    ``use_fallback``: store ``webp`` instead of the parts; ``webp``/``quality``: that file and its WebP quality
    (``None`` when the parts are kept); ``reference_bytes``: the WebP's size at the reference quality (``None``
    when the image is too large for WebP); ``message``: one sentence saying what was chosen and why.
    """

    use_fallback: bool
    webp: Optional[bytes]
    quality: Optional[int]
    reference_bytes: Optional[int]
    message: str


def choose_fallback(image, parts_bytes: int, overhead: int = 0,
                    reference_quality: int = REFERENCE_QUALITY) -> FallbackChoice:
    """Decide between the parts (``parts_bytes`` bytes in all) and a plain WebP of ``image`` (see the module).

    ``overhead``: bytes the fallback stream adds around the WebP file (its header and length field), counted
    against it.  ``image``: ``(H, W, 3)`` uint8 array or Pillow image.
    """
    rgb = check_rgb8(image)
    if isinstance(parts_bytes, bool) or not isinstance(parts_bytes, (int, np.integer)) or parts_bytes < 0:
        raise ValueError(f"parts_bytes must be a non-negative integer, got {parts_bytes!r}")
    h, w = rgb.shape[:2]
    if max(h, w) > MAX_WEBP_SIDE:
        return FallbackChoice(False, None, None, None,
                              f"parts kept ({parts_bytes} bytes): a {size_text(h, w)} image is larger than WebP "
                              f"codes, so there is no fallback to compare with")

    def fits(data: bytes) -> bool:
        return len(data) + overhead <= parts_bytes

    best = encode_webp(rgb, reference_quality)
    reference_bytes = len(best)
    if not fits(best):
        return FallbackChoice(False, None, None, reference_bytes,
                              f"parts kept: {parts_bytes} bytes, less than a plain WebP of this {size_text(h, w)} "
                              f"image at quality {reference_quality} ({reference_bytes + overhead} bytes)")
    lo, hi = reference_quality, 100                  # lo fits; find the highest quality that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        data = encode_webp(rgb, mid)
        if fits(data):
            lo, best = mid, data
        else:
            hi = mid - 1
    return FallbackChoice(True, best, lo, reference_bytes,
                          f"a plain WebP of this {size_text(h, w)} image at quality {lo} takes "
                          f"{len(best) + overhead} bytes, no more than the parts' {parts_bytes} (at quality "
                          f"{reference_quality}: {reference_bytes + overhead})")

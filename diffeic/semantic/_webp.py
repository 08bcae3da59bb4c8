"""WebP in and out for the semantic parts (palette, kept regions, fallback): one encoder setting, one strict reader.

Encoding: Pillow's WebP encoder (libwebp) with ``method=6`` (its slowest, smallest setting, as the evaluation's
WebP baseline), lossy at a quality 0..100 or lossless.  Decoding: Pillow, after checking the RIFF container
(``RIFF`` size field equal to the data's length, ``WEBP`` form type), the declared size against the size the
part must have, one frame and no alpha; anything else raises :class:`~diffeic.bitstream.BitstreamError` naming
the part.  What this returns is exactly what libwebp decodes: a lossy part is *not* the encoder's input.
"""
from __future__ import annotations

import io
import struct
from typing import Tuple

import numpy as np
from PIL import Image

from ..bitstream import BitstreamError
from ..sizes import size_text

MAX_WEBP_SIDE = 16383          #: the largest width or height WebP can code (libwebp's limit)
WEBP_METHOD = 6                #: libwebp's effort setting (0 fast .. 6 smallest)


def check_rgb8(image, what: str = "image") -> np.ndarray:
    """``image`` as a ``(H, W, 3)`` uint8 array: an array of that shape and type, or a Pillow image (``RGB``
    or ``L``, converted).  Anything else raises ``TypeError``/``ValueError`` naming the problem."""
    if isinstance(image, Image.Image):
        if image.mode not in ("RGB", "L"):
            raise ValueError(f"{what}: a Pillow image must be RGB or L, got mode {image.mode!r} "
                             f"(convert it first: alpha and palettes have no single meaning here)")
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{what} must be an (H, W, 3) uint8 array or a Pillow image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"{what} must be uint8 (0..255), got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what} must have shape (H, W, 3), got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{what} must have at least one pixel, got shape {image.shape}")
    return image


def encode_webp(rgb: np.ndarray, quality: int, lossless: bool = False) -> bytes:
    """WebP bytes of a ``(h, w, 3)`` uint8 array: lossy at ``quality`` (0..100), or lossless (``quality`` is then
    libwebp's effort on size)."""
    h, w = rgb.shape[:2]
    if max(h, w) > MAX_WEBP_SIDE:
        raise ValueError(f"a {size_text(h, w)} image is larger than WebP codes (sides ≤ {MAX_WEBP_SIDE})")
    if not (isinstance(quality, (int, np.integer)) and not isinstance(quality, bool) and 0 <= quality <= 100):
        raise ValueError(f"WebP quality must be an integer in 0..100, got {quality!r}")
    buf = io.BytesIO()
    pil = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    pil.save(buf, "WEBP", quality=int(quality), lossless=lossless, method=WEBP_METHOD)
    return buf.getvalue()


def webp_size(data: bytes, what: str) -> Tuple[int, int]:
    """``(height, width)`` a WebP declares, read without decoding; a non-WebP raises :class:`BitstreamError`."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise BitstreamError(f"corrupt {what}: not a WebP image (no RIFF/WEBP header)")
    if struct.unpack("<I", data[4:8])[0] + 8 != len(data):
        raise BitstreamError(f"corrupt {what}: its WebP container says {struct.unpack('<I', data[4:8])[0] + 8} "
                             f"bytes, the part has {len(data)}")
    try:
        with Image.open(io.BytesIO(data), formats=["WEBP"]) as im:
            return im.size[1], im.size[0]
    except Exception as err:       # Pillow raises OSError, SyntaxError, ValueError, struct.error ... on bad data
        raise BitstreamError(f"corrupt {what}: Pillow cannot read its WebP header ({err})") from None


def decode_webp(data: bytes, height: int, width: int, what: str) -> np.ndarray:
    """The ``(height, width, 3)`` uint8 image libwebp decodes from ``data``; a WebP of another size, with alpha
    or several frames, or one that does not decode, raises :class:`BitstreamError` naming ``what``."""
    h, w = webp_size(data, what)
    if (h, w) != (height, width):
        raise BitstreamError(f"corrupt {what}: its WebP is {size_text(h, w)}, the part must be "
                             f"{size_text(height, width)}")
    try:
        with Image.open(io.BytesIO(data), formats=["WEBP"]) as im:
            if getattr(im, "n_frames", 1) != 1:
                raise BitstreamError(f"corrupt {what}: an animated WebP ({im.n_frames} frames)")
            if im.mode != "RGB":
                raise BitstreamError(f"corrupt {what}: a WebP in mode {im.mode} (the part is RGB, no alpha)")
            im.load()
            out = np.asarray(im, dtype=np.uint8)
    except BitstreamError:
        raise
    except Exception as err:
        raise BitstreamError(f"corrupt {what}: its WebP does not decode ({err})") from None
    if out.shape != (height, width, 3):
        raise BitstreamError(f"corrupt {what}: its WebP decodes to shape {out.shape}")
    return out

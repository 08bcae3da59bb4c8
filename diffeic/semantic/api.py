"""Make and read the parts of a semantic stream: :func:`encode_parts`, :func:`decode_parts`, :func:`inspect_parts`.

These are the family-independent layer of the text + edges + palette codec (Rethinking Image Compression on the
Web with Generative AI): they turn an image into the bytes of its parts and back, exactly; the generative decoder
that redraws the picture from them is not here.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Optional, Tuple, Union

import numpy as np

from ..bilevel import canny_edges, decode_bilevel, encode_bilevel
from ..bitstream import BitstreamError, put_varint
from ..sizes import size_text
from . import palette as _palette
from . import regions as _regions
from ._webp import check_rgb8, decode_webp
from .fallback import REFERENCE_QUALITY, choose_fallback
from .parts import FORMAT_VERSION, CodedParts, edge_shape, pack_parts, read_parts, unpack_parts
from .prompt import check_prompt
from .regions import KeptRegion

__all__ = ["SemanticParts", "FallbackUsed", "encode_parts", "decode_parts", "inspect_parts"]


class FallbackUsed(UserWarning):
    """The never-larger rule found a plain WebP no larger than the parts (see :mod:`diffeic.semantic.fallback`)."""


@dataclass(frozen=True, eq=False)          # holds arrays: compare fields with numpy
class SemanticParts:
    """The decoded parts of a stream.

    ``prompt``: text or ``None``; ``edges``: bool ``edge_shape(H, W)`` map or ``None``; ``palette``: uint8 grid
    (as WebP decodes it) or ``None``; ``regions``: kept regions in canonical order; ``fallback``: for a fallback
    stream, the whole uint8 ``(H, W, 3)`` image (every other part is then absent), else ``None``.
    """

    height: int
    width: int
    prompt: Optional[str] = None
    edges: Optional[np.ndarray] = None
    palette: Optional[np.ndarray] = None
    regions: Tuple[KeptRegion, ...] = field(default_factory=tuple)
    fallback: Optional[np.ndarray] = None

    @property
    def is_fallback(self) -> bool:
        """Whether the stream is a plain WebP of the image instead of parts."""
        return self.fallback is not None


def _edge_map(image: np.ndarray, edges: Union[bool, np.ndarray]) -> Optional[np.ndarray]:
    h, w = image.shape[:2]
    if isinstance(edges, (bool, np.bool_)):
        if not edges:
            return None
        eh, ew = edge_shape(h, w)
        return canny_edges(image, short_side=min(eh, ew))
    bits = np.asarray(edges)          # its values are checked by encode_bilevel
    if bits.shape != edge_shape(h, w):
        eh, ew = edge_shape(h, w)
        raise ValueError(f"an edge map given for a {size_text(h, w)} image must have shape {(eh, ew)} "
                         f"(parts.edge_shape: {size_text(eh, ew)}), got shape {bits.shape}")
    return bits


def encode_parts(image, prompt: Optional[str], edges: Union[bool, np.ndarray] = True,
                 palette: Optional[int] = _palette.DEFAULT_GRID, keep: Iterable = (), *,
                 palette_quality: int = _palette.DEFAULT_QUALITY, region_quality: int = _regions.DEFAULT_QUALITY,
                 fallback: bool = True, reference_quality: int = REFERENCE_QUALITY) -> bytes:
    """The parts stream of ``image`` (``(H, W, 3)`` uint8 array or Pillow image).

    * ``prompt``: the text (checked: :func:`diffeic.semantic.prompt.check_prompt`), or ``None`` for no prompt
      part — required, so that no prompt is ever left out silently (``caption_image`` makes one).
    * ``edges``: ``True``: Canny edges (``diffeic.bilevel.canny_edges``: grey, sigma 1, thresholds 0.1/0.2) at
      :func:`~diffeic.semantic.parts.edge_shape` (short side ``min(512, H, W)``), coded by ``diffeic.bilevel``;
      a bool array of that shape: that map; ``False``: none.
    * ``palette``: the palette grid's long side (default 32; :mod:`diffeic.semantic.palette`) or ``None``/``False``.
    * ``keep``: boxes ``(x0, y0, x1, y1)`` kept as pixels (:mod:`diffeic.semantic.regions`).
    * ``fallback``: apply the never-larger rule (:mod:`diffeic.semantic.fallback`, reference quality
      ``reference_quality``): when a plain WebP is no larger than the parts, store it instead (a fallback
      stream).  Whenever the rule finds such a WebP, also with ``fallback=False``, a :class:`FallbackUsed` warning
      says so, with both sizes.

    Invalid arguments raise ``TypeError``/``ValueError`` naming the problem; nothing to send (no prompt, edges,
    palette or region) is one of them.
    """
    rgb = check_rgb8(image)
    h, w = rgb.shape[:2]
    if prompt is not None:
        check_prompt(prompt)
    boxes = _regions.check_boxes(keep, h, w)
    if palette is False:
        palette = None
    bits = _edge_map(rgb, edges)
    coded = CodedParts(
        h, w, prompt=prompt,
        edges=encode_bilevel(bits) if bits is not None else None,
        palette=_palette.encode_palette(rgb, palette, palette_quality) if palette is not None else None,
        regions=tuple((box, _regions.encode_region(rgb, box, region_quality)) for box in boxes))
    data = pack_parts(coded)
    # A fallback stream's framing: version, flags, H, W, and the WebP's length, a varint no longer than that of
    # len(data) (a WebP that fits is no longer than the parts).
    framing = bytearray([FORMAT_VERSION, 0])
    for v in (h, w, len(data)):
        put_varint(v, framing)
    choice = choose_fallback(rgb, len(data), overhead=len(framing), reference_quality=reference_quality)
    if not choice.use_fallback:
        return data
    if fallback:
        warnings.warn(f"{choice.message}: the WebP is stored instead (a fallback stream)", FallbackUsed, stacklevel=2)
        return pack_parts(CodedParts(h, w, fallback=choice.webp))
    warnings.warn(f"{choice.message}: the parts are stored anyway (fallback=False)", FallbackUsed, stacklevel=2)
    return data


def decode_parts(data: bytes) -> SemanticParts:
    """The :class:`SemanticParts` of a parts stream; any malformed, truncated or corrupt stream raises
    :class:`~diffeic.bitstream.BitstreamError` naming the problem."""
    coded = unpack_parts(data)
    h, w = coded.height, coded.width
    if coded.fallback is not None:
        return SemanticParts(h, w, fallback=decode_webp(coded.fallback, h, w, "fallback image"))
    return SemanticParts(
        h, w, prompt=coded.prompt,
        edges=decode_bilevel(coded.edges) if coded.edges is not None else None,
        palette=_palette.decode_palette(coded.palette, h, w) if coded.palette is not None else None,
        regions=tuple(_regions.decode_region(d, box) for box, d in coded.regions))


def inspect_parts(data: bytes) -> Dict[str, Any]:
    """What a parts stream holds, without decoding its images: ``{"format_version", "height", "width",
    "fallback": bool, "parts": [names], "prompt": text or None, "boxes": [...], "bytes": {part: bytes, ...,
    "framing": bytes}, "total": bytes}``; ``bytes`` adds up to ``total``.  Raises
    :class:`~diffeic.bitstream.BitstreamError` like :func:`decode_parts` for a malformed stream."""
    coded, end, sizes = read_parts(data)
    if end != len(data):
        raise BitstreamError(f"corrupt parts stream: {len(data) - end} bytes after its end")
    return {"format_version": FORMAT_VERSION, "height": coded.height, "width": coded.width,
            "fallback": coded.fallback is not None, "parts": list(coded.present()), "prompt": coded.prompt,
            "boxes": [box for box, _ in coded.regions], "bytes": sizes, "total": end}

"""The byte format of one semantic stream's parts: prompt, edge map, palette, kept regions — or a fallback image.

Rethinking Image Compression on the Web with Generative AI sends what a text-to-image model needs to redraw a
picture: a prompt, a Canny edge map, a colour palette and salient regions kept as pixels.  This module only
frames those parts; :mod:`diffeic.semantic.api` makes and decodes their contents.

Layout (``varint`` = unsigned LEB128, minimal: :func:`diffeic.bitstream.put_varint`)::

    1 byte   format version (1)
    1 byte   flags: bit 0 prompt, bit 1 edges, bit 2 palette, bit 3 regions, bit 4 fallback; others 0.
             A fallback stream has bit 4 alone; any other stream has at least one of bits 0-3.
    varint   H, varint W                 image size, 1 .. 65536 each
    [varint n, n bytes]   fallback: a plain WebP of the whole H × W image   (only when flagged, then nothing else)
    [varint n, n bytes]   prompt: UTF-8, 1 .. 1024 bytes                    (when flagged)
    [varint n, n bytes]   edges: a diffeic.bilevel stream of the edge map   (when flagged)
    [varint n, n bytes]   palette: a WebP of the palette grid               (when flagged)
    [varint k, k × (varint x0, y0, w, h; varint n, n bytes WebP)]          regions (when flagged; 1 .. 16 boxes,
                                                                            canonical order, no overlap)

The stream is self-delimiting (:func:`read_parts` returns where it ends).  Every field is checked: a truncated,
overlong or malformed stream, a box outside the image, an edge map or palette of the wrong size, a prompt that is
not valid UTF-8 — each raises :class:`~diffeic.bitstream.BitstreamError` naming the problem, and a stream has one
coding only (no empty parts, no zero-region list, boxes in canonical order).  The edge map's size is fixed by the
image size (:func:`edge_shape`), the palette's by the image size and its own long side
(:func:`diffeic.semantic.palette.palette_shape`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from ..bilevel import CANNY_SHORT_SIDE
from ..bilevel import FORMAT_VERSION as BILEVEL_VERSION
from ..bitstream import MAX_SIDE, BitstreamError, get_varint, put_varint
from ..sizes import size_text
from .palette import palette_part_shape
from .prompt import check_prompt, parse_prompt
from .regions import MAX_REGIONS, Box, check_boxes
from ._webp import webp_size

FORMAT_VERSION = 1
PARTS = ("prompt", "edges", "palette", "regions")      #: the optional parts, in stream order
_FLAG = {"prompt": 1, "edges": 2, "palette": 4, "regions": 8, "fallback": 16}
_KNOWN_FLAGS = 31

__all__ = ["FORMAT_VERSION", "PARTS", "CodedParts", "edge_shape", "pack_parts", "read_parts", "unpack_parts"]


def edge_shape(height: int, width: int) -> Tuple[int, int]:
    """``(h, w)`` of the edge map of a ``height × width`` image: the image resized so that its short side is
    ``min(512, short side)`` (``diffeic.bilevel.CANNY_SHORT_SIDE``: edges are computed at most at the
    resolution SD1.5 generates at, and never upsampled), rounding as :func:`diffeic.bilevel.canny_edges` does."""
    short = min(height, width)
    if short <= CANNY_SHORT_SIDE:
        return height, width
    scale = CANNY_SHORT_SIDE / short
    return max(1, round(height * scale)), max(1, round(width * scale))


@dataclass(frozen=True)
class CodedParts:
    """The parts of one stream, coded but not decoded.

    ``prompt``: text; ``edges``: a :func:`diffeic.bilevel.encode_bilevel` stream; ``palette``: WebP of the palette
    grid; ``regions``: ``((box, WebP), ...)`` with boxes ``(x0, y0, x1, y1)``; ``fallback``: WebP of the whole
    image (then every other part is absent).
    """

    height: int
    width: int
    prompt: Optional[str] = None
    edges: Optional[bytes] = None
    palette: Optional[bytes] = None
    regions: Tuple[Tuple[Box, bytes], ...] = field(default_factory=tuple)
    fallback: Optional[bytes] = None

    def present(self) -> Tuple[str, ...]:
        """Names of the parts this stream holds (``("fallback",)`` for a fallback stream)."""
        if self.fallback is not None:
            return ("fallback",)
        return tuple(p for p in PARTS if (self.regions if p == "regions" else getattr(self, p) is not None))


def _check_size(height: int, width: int, error=ValueError) -> None:
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise error(f"image size {size_text(height, width)} outside 1..{MAX_SIDE} per side")


def _check_edges(data: bytes, height: int, width: int) -> None:
    """Refuse an edge part whose bi-level stream is not of :func:`edge_shape` (read from its header only)."""
    if not data or data[0] != BILEVEL_VERSION:
        raise BitstreamError(f"corrupt edges part: not a bi-level stream of version {BILEVEL_VERSION}")
    h, pos = get_varint(data, 1, len(data), "edge map height")
    w, _ = get_varint(data, pos, len(data), "edge map width")
    if (h, w) != edge_shape(height, width):
        eh, ew = edge_shape(height, width)
        raise BitstreamError(f"corrupt edges part: a {size_text(h, w)} edge map; a {size_text(height, width)} "
                             f"image's is {size_text(eh, ew)}")


def _check_contents(parts: CodedParts) -> None:
    """Checks of the parts' contents that need no decoding; :class:`BitstreamError` naming the problem."""
    if parts.edges is not None:
        _check_edges(parts.edges, parts.height, parts.width)
    if parts.palette is not None:
        palette_part_shape(parts.palette, parts.height, parts.width)
    if parts.fallback is not None:
        h, w = webp_size(parts.fallback, "fallback image")
        if (h, w) != (parts.height, parts.width):
            raise BitstreamError(f"corrupt fallback image: a {size_text(h, w)} WebP in a stream of a "
                                 f"{size_text(parts.height, parts.width)} image")


def pack_parts(parts: CodedParts) -> bytes:
    """The stream of ``parts`` (layout: module docstring).  Parts that break the format raise ``ValueError``."""
    _check_size(parts.height, parts.width)
    present = parts.present()
    if parts.fallback is not None and (parts.prompt is not None or parts.edges is not None
                                       or parts.palette is not None or parts.regions):
        raise ValueError("a fallback stream holds the fallback image only, no other part")
    if not present:
        raise ValueError("nothing to send: a stream needs a prompt, edges, a palette or kept regions")
    boxes = [box for box, _ in parts.regions]
    if check_boxes(boxes, parts.height, parts.width) != [tuple(b) for b in boxes]:
        raise ValueError("kept regions must be in canonical order (sorted by (y0, x0); see regions.check_boxes)")
    try:
        _check_contents(parts)
    except BitstreamError as err:
        raise ValueError(str(err)) from None
    out = bytearray([FORMAT_VERSION, sum(_FLAG[p] for p in present)])
    put_varint(parts.height, out)
    put_varint(parts.width, out)

    def chunk(data: bytes, what: str) -> None:
        if not data:
            raise ValueError(f"empty {what}: leave the part out instead")
        put_varint(len(data), out)
        out.extend(data)

    if parts.fallback is not None:
        chunk(parts.fallback, "fallback image")
    if parts.prompt is not None:
        chunk(check_prompt(parts.prompt).encode("utf-8"), "prompt")
    if parts.edges is not None:
        chunk(parts.edges, "edges part")
    if parts.palette is not None:
        chunk(parts.palette, "palette part")
    if parts.regions:
        put_varint(len(parts.regions), out)
        for (x0, y0, x1, y1), data in parts.regions:
            for v in (x0, y0, x1 - x0, y1 - y0):
                put_varint(v, out)
            chunk(data, f"kept region {(x0, y0, x1, y1)}")
    return bytes(out)


def read_parts(data: bytes, pos: int = 0) -> Tuple[CodedParts, int, Dict[str, int]]:
    """Parse the parts stream starting at ``data[pos]``: ``(parts, end position, bytes per field)``.

    The byte counts are those of each part's contents (``prompt``, ``edges``, ``palette``, ``regions`` — all
    regions' WebP data —, ``fallback``) and ``framing`` (version, flags, size, lengths, boxes); they add up to
    ``end - pos``.  Any malformed input raises :class:`BitstreamError` naming the problem.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"a parts stream is bytes, got {type(data).__name__}")
    data = bytes(data)
    end = len(data)
    start = pos
    if pos >= end:
        raise BitstreamError("empty parts stream")
    if data[pos] != FORMAT_VERSION:
        raise BitstreamError(f"unsupported parts format version {data[pos]} (this reader knows {FORMAT_VERSION})")
    if pos + 1 >= end:
        raise BitstreamError("truncated parts stream: the flags byte is cut off")
    flags = data[pos + 1]
    if flags & ~_KNOWN_FLAGS:
        raise BitstreamError(f"corrupt parts stream: unknown flags 0x{flags & ~_KNOWN_FLAGS & 0xFF:02x}")
    if flags & _FLAG["fallback"] and flags != _FLAG["fallback"]:
        raise BitstreamError("corrupt parts stream: a fallback stream with other parts flagged")
    if not flags:
        raise BitstreamError("corrupt parts stream: no part flagged")
    height, pos = get_varint(data, pos + 2, end, "image height")
    width, pos = get_varint(data, pos, end, "image width")
    _check_size(height, width, BitstreamError)
    sizes = {}

    def chunk(what: str) -> bytes:
        nonlocal pos
        n, pos = get_varint(data, pos, end, f"{what} length")
        if n == 0:
            raise BitstreamError(f"corrupt parts stream: empty {what}")
        if n > end - pos:
            raise BitstreamError(f"truncated parts stream: the {what} needs {n} bytes, {end - pos} left")
        pos += n
        return data[pos - n:pos]

    fields: Dict[str, object] = {}
    if flags & _FLAG["fallback"]:
        fields["fallback"] = chunk("fallback image")
    if flags & _FLAG["prompt"]:
        fields["prompt"] = chunk("prompt")          # checked by parse_prompt below (UTF-8, 1 .. 1024 bytes)
    for name in ("edges", "palette"):
        if flags & _FLAG[name]:
            fields[name] = chunk(f"{name} part")
    regions = []
    if flags & _FLAG["regions"]:
        count, pos = get_varint(data, pos, end, "number of kept regions")
        if not 1 <= count <= MAX_REGIONS:
            raise BitstreamError(f"corrupt parts stream: {count} kept regions (1..{MAX_REGIONS})")
        for i in range(count):
            x0, pos = get_varint(data, pos, end, f"kept region {i} x0")
            y0, pos = get_varint(data, pos, end, f"kept region {i} y0")
            w, pos = get_varint(data, pos, end, f"kept region {i} width")
            h, pos = get_varint(data, pos, end, f"kept region {i} height")
            regions.append(((x0, y0, x0 + w, y0 + h), chunk(f"kept region {i}")))
    for name, value in fields.items():
        sizes[name] = len(value)
    if regions:
        sizes["regions"] = sum(len(d) for _, d in regions)
        try:
            canonical = check_boxes([b for b, _ in regions], height, width)
        except ValueError as err:
            raise BitstreamError(f"corrupt parts stream: {err}") from None
        if canonical != [b for b, _ in regions]:
            raise BitstreamError("corrupt parts stream: kept regions not in canonical order (sorted by (y0, x0))")
    sizes["framing"] = pos - start - sum(sizes.values())
    prompt = parse_prompt(fields["prompt"]) if "prompt" in fields else None
    parts = CodedParts(height, width, prompt=prompt, edges=fields.get("edges"), palette=fields.get("palette"),
                       regions=tuple(regions), fallback=fields.get("fallback"))
    _check_contents(parts)
    return parts, pos, sizes


def unpack_parts(data: bytes) -> CodedParts:
    """The parts of a whole stream (:func:`read_parts` from its start, refusing bytes after its end)."""
    parts, end, _ = read_parts(data)
    if end != len(data):
        raise BitstreamError(f"corrupt parts stream: {len(data) - end} bytes after its end")
    return parts

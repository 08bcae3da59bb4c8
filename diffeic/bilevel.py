"""Lossless coding of bi-level images (Canny edge maps): an adaptive context model over a JBIG-style
template of neighbouring pixels, feeding the rANS coder the rest of the library uses (compressai.ans).

The semantic codec (Rethinking Image Compression on the Web with Generative AI) sends a Canny edge map
coded with JBIG2; this is our own coder for that part, and :func:`canny_edges` is the edge detector.

Model
-----
Pixels are coded row by row, top to bottom.  Within a row, in three *phases* (so that each phase is
one batch for numpy and one call of the rANS decoder, instead of one Python step per pixel):

* phase 0: columns ``c ≡ 0 (mod 4)``; template = 10 pixels of the two rows above;
* phase 1: columns ``c ≡ 2 (mod 4)``; 8 pixels of the rows above, plus the phase-0 pixels at ``c ± 2``;
* phase 2: odd columns; 8 pixels of the rows above, plus the (already known) pixels at ``c ± 1, c ± 3``.

The 8 pixels of the rows above, common to all phases, are those of the JBIG2 generic-region
template (row ``r-2``: ``c-1..c+1``; row ``r-1``: ``c-2..c+2``); pixels outside the image are 0.
So every phase-2 pixel sees its two horizontal neighbours (a raster JBIG template sees only the left
one); the phase-0/1 pixels see less than raster order would.  On the benchmark's edge maps this costs
about 6 % against a raster 10-pixel template with the same adaptive counts (ideal code lengths), and
makes decoding three numpy batches (and rANS calls) per row instead of one Python step per pixel:
~0.15–0.45 s of CPU for a 768×512 map, including the re-encoding check.  The encoder knows every pixel,
so it computes all contexts and counts at once.

Each context (10, 10 and 12 bits: 6144 in all) keeps counts ``n0, n1`` of the pixels coded in it
*in earlier batches*, starting from one virtual 0; a pixel is coded with the Krichevsky–Trofimov
estimate ``P(1) = (n1 + 1/2) / (n0 + n1 + 1)``, quantised to 16 bits in integer arithmetic (so encoder
and decoder agree exactly on every machine).  Measured on the benchmark's maps: KT beats
``(n1 + δ) / (n + 2δ)`` for δ = 1/3 … 1/16 (+0.2 … +3.6 %), and one virtual 0 beats none (−1.6 %;
the first row is otherwise coded at P = 1/2) and 2 … 16 of them.  Adaptive counts beat a two-pass model here: sending a
quantised probability per used context (thousands of them) costs more than the adaptive model's
learning cost (measured: ``benchmarks/bilevel_coder.py``, RESULTS.md).  Counts are never halved
(the vectorised encoder relies on it).

Stream (``encode_bilevel``)::

    1 byte   format version (1)
    varint   H, varint W                    (unsigned LEB128, minimal)
    …        rANS payload: compressai's 64-bit rANS, whole 32-bit words, 8 bytes at least

A payload must be exactly the coding of the pixels it decodes to (decoding re-encodes and compares),
so a corrupt or truncated stream is refused with :class:`~diffeic.bitstream.BitstreamError` rather
than decoded to a wrong map.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from ._compressai import compressai  # noqa: F401  (compressai imported with its import-time warning filtered)
from compressai.ans import BufferedRansEncoder, RansDecoder  # noqa: E402

from .bitstream import MAX_SIDE, BitstreamError, get_varint, put_varint
from .sizes import size_text

__all__ = ["FORMAT_VERSION", "MAX_PIXELS", "CANNY_SHORT_SIDE", "CANNY_SIGMA", "CANNY_LOW", "CANNY_HIGH",
           "encode_bilevel", "decode_bilevel", "canny_edges"]

FORMAT_VERSION = 1
MAX_PIXELS = 1 << 26            # largest H·W a stream may declare (8192×8192)

_PREC = 16                      # compressai's rANS precision: CDFs end at 1 << 16
_TOTAL = (1 << _PREC) - 1       # mass of symbols 0 and 1; the escape symbol (compressai's bypass) keeps 1
_PRIOR_ZEROS = 1                # virtual 0s each context starts with (edge maps are mostly 0)
_PAD_TOP, _PAD_SIDE = 2, 3      # zero border of the working array: 2 rows above, 3 columns each side

#: Template pixels of the two rows above, common to the three phases: (dy, dx).
_ABOVE = ((-2, -1), (-2, 0), (-2, 1), (-1, -2), (-1, -1), (-1, 0), (-1, 1), (-1, 2))
#: Per phase: (first column, column step, extra template pixels).
_PHASES: Tuple[Tuple[int, int, Tuple[Tuple[int, int], ...]], ...] = (
    (0, 4, _ABOVE + ((-2, -2), (-2, 2))),
    (2, 4, _ABOVE + ((0, -2), (0, 2))),
    (1, 2, _ABOVE + ((0, -1), (0, 1), (0, -3), (0, 3))),
)
#: compressai's BufferedRansEncoder writes into a buffer of one 32-bit word per symbol, which the 8-byte
#: flush overruns when there are very few symbols: images under this many pixels are followed by
#: (nearly free) zero symbols up to it.
_MIN_SYMBOLS = 16
_CTX_BASE = tuple(int(sum(1 << len(t) for _, _, t in _PHASES[:p])) for p in range(len(_PHASES)))
_N_CTX = sum(1 << len(t) for _, _, t in _PHASES)


# --------------------------------------------------------------------------- model

def _check_bits(bits) -> np.ndarray:
    if isinstance(bits, (str, bytes)) or bits is None:
        raise TypeError(f"a bi-level image must be a 2-D array of 0/1 or booleans, got {type(bits).__name__}")
    arr = np.asarray(bits)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"a bi-level image must be a 2-D array of 0/1 or booleans, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"a bi-level image must be 2-D (H, W), got shape {arr.shape}")
    h, w = arr.shape
    if h < 1 or w < 1:
        raise ValueError(f"a bi-level image must have at least one pixel, got shape {arr.shape}")
    if h > MAX_SIDE or w > MAX_SIDE or h * w > MAX_PIXELS:
        raise ValueError(f"a {size_text(h, w)} bi-level image is larger than this coder takes (sides ≤ {MAX_SIDE}, "
                         f"≤ {MAX_PIXELS} pixels)")
    if arr.dtype.kind != "b" and not np.isin(arr, (0, 1)).all():
        bad = arr[~np.isin(arr, (0, 1))].ravel()[0]
        raise ValueError(f"a bi-level image may hold only 0 and 1 (or booleans), found {bad!r}")
    return arr.astype(bool)


def _above(pix: np.ndarray, r0: int, rows: int, width: int) -> np.ndarray:
    """Context bits from the two rows above, for every pixel of image rows ``r0 .. r0+rows-1``."""
    a = np.zeros((rows, width), np.int64)
    for dy, dx in _ABOVE:
        a <<= 1
        a |= pix[r0 + _PAD_TOP + dy:r0 + _PAD_TOP + dy + rows, _PAD_SIDE + dx:_PAD_SIDE + dx + width]
    return a


def _phase_contexts(above: np.ndarray, pix: np.ndarray, r0: int, p: int) -> np.ndarray:
    """Context ids of phase ``p``'s pixels in rows ``r0 ..`` (``above``: :func:`_above` of those rows)."""
    start, step, template = _PHASES[p]
    rows, width = above.shape
    k = above[:, start::step].copy()
    n = k.shape[1]
    for dy, dx in template[len(_ABOVE):]:
        k <<= 1
        k |= pix[r0 + _PAD_TOP + dy:r0 + _PAD_TOP + dy + rows, start + _PAD_SIDE + dx::step][:, :n]
    return k + _CTX_BASE[p]


def _padded(height: int, width: int) -> np.ndarray:
    """Working image with a zero border: image row r, column c is ``[r + _PAD_TOP, c + _PAD_SIDE]``."""
    return np.zeros((height + _PAD_TOP, width + 2 * _PAD_SIDE), np.int64)


def _freq1(n1: np.ndarray, n: np.ndarray) -> np.ndarray:
    """16-bit frequency of a 1 after ``n1`` ones in ``n`` pixels of a context, in [1, _TOTAL - 1]: the KT
    estimate ``(n1 + 1/2) / (n + 1)`` after ``_PRIOR_ZEROS`` virtual zeros."""
    return np.clip(((2 * n1 + 1) * _TOTAL) // (2 * (n + _PRIOR_ZEROS) + 2), 1, _TOTAL - 1)


def _unique(values: np.ndarray, bound: int) -> Tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` for non-negative ints below ``bound``, without a sort."""
    uniq = np.flatnonzero(np.bincount(values, minlength=bound))
    rank = np.empty(bound, np.int64)
    rank[uniq] = np.arange(len(uniq))
    return uniq, rank[values]


def _cdf_rows(freq1: np.ndarray) -> List[List[int]]:
    rows = np.empty((len(freq1), 4), np.int64)
    rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3] = 0, _TOTAL - freq1, _TOTAL, 1 << _PREC
    return rows.tolist()


def _coding_order(width: int) -> np.ndarray:
    """Columns of a row in coding order (phase 0's, then phase 1's, then phase 2's)."""
    return np.concatenate([np.arange(start, width, step) for start, step, _ in _PHASES])


def _rans_encode(bits: np.ndarray) -> bytes:
    """The rANS payload of a checked bool image: the model of :func:`_rans_decode`, vectorised over the
    whole image (every pixel is known), with the counts each batch sees computed by one sort."""
    h, w = bits.shape
    pix = _padded(h, w)
    pix[_PAD_TOP:, _PAD_SIDE:_PAD_SIDE + w] = bits
    above = _above(pix, 0, h, w)
    ks = [_phase_contexts(above, pix, 0, p) for p in range(len(_PHASES))]
    batch = [np.broadcast_to(np.arange(h)[:, None] * len(_PHASES) + p, k.shape) for p, k in enumerate(ks)]
    order_cols = _coding_order(w)
    k = np.concatenate(ks, axis=1).ravel()                     # coding order: row by row, phases in turn
    b = np.concatenate(batch, axis=1).ravel()
    x = bits[:, order_cols].ravel().astype(np.int64)
    n_sym = k.size
    # Counts of each pixel's context over the batches before its own: sort by context (stable, so each
    # context's pixels stay in coding order), then count from the start of the context's group to the
    # start of the pixel's (context, batch) run.
    order = np.argsort(k.astype(np.int16), kind="stable")      # radix sort: context ids < 2^15
    ks_, bs_, xs_ = k[order], b[order], x[order]
    idx = np.arange(n_sym)
    new_group = np.ones(n_sym, bool)
    new_group[1:] = ks_[1:] != ks_[:-1]
    new_run = new_group.copy()
    new_run[1:] |= bs_[1:] != bs_[:-1]
    g0 = np.maximum.accumulate(np.where(new_group, idx, 0))
    r0 = np.maximum.accumulate(np.where(new_run, idx, 0))
    ones_before = np.concatenate(([0], np.cumsum(xs_)[:-1]))
    freq = np.empty(n_sym, np.int64)
    freq[order] = _freq1(ones_before[r0] - ones_before[g0], r0 - g0)
    syms = x.tolist() + [0] * max(0, _MIN_SYMBOLS - n_sym)
    freq = np.concatenate([freq, np.ones(max(0, _MIN_SYMBOLS - n_sym), np.int64)])
    uniq, inv = _unique(freq, 1 << _PREC)
    encoder = BufferedRansEncoder()
    encoder.encode_with_indexes(syms, inv.astype(np.int32).tolist(), _cdf_rows(uniq), [4] * len(uniq),
                                [0] * len(uniq))
    return encoder.flush()


def _rans_decode(payload: bytes, h: int, w: int) -> np.ndarray:
    """Decode a payload to the (h, w) bool image, batch by batch (one row's phase at a time)."""
    pix = _padded(h, w)
    n = np.zeros(_N_CTX, np.int64)
    n1 = np.zeros(_N_CTX, np.int64)
    decoder = RansDecoder()
    # The C++ decoder reads 32-bit words without bounds checks: zero padding (≤ one word per symbol, plus
    # what escape codes can read, bounded by the payload's own bits) keeps any stream inside the buffer.
    decoder.set_stream(payload + bytes(4 * (h * w + _MIN_SYMBOLS) + 16 * len(payload) + 64))
    phases = [(p, start, step) for p, (start, step, _) in enumerate(_PHASES) if start < w]
    for r in range(h):
        above = _above(pix, r, 1, w)
        for p, start, step in phases:
            k = _phase_contexts(above, pix, r, p)[0]
            uniq, inv = _unique(k - _CTX_BASE[p], 1 << len(_PHASES[p][2]))
            uniq += _CTX_BASE[p]
            s = np.array(decoder.decode_stream(inv.tolist(), _cdf_rows(_freq1(n1[uniq], n[uniq])),
                                               [4] * len(uniq), [0] * len(uniq)), np.int64)
            # A corrupt payload can decode to compressai's escape code (any integer): keep one bit of it,
            # which the re-encoding check of decode_bilevel then refuses.
            s &= 1
            pix[r + _PAD_TOP, _PAD_SIDE + start:_PAD_SIDE + w:step] = s
            np.add.at(n, k, 1)
            np.add.at(n1, k, s)
    tail = h * w
    if tail < _MIN_SYMBOLS:
        rest = decoder.decode_stream([0] * (_MIN_SYMBOLS - tail), _cdf_rows(np.ones(1, np.int64)), [4], [0])
        if any(rest):
            raise BitstreamError("corrupt bi-level stream: its padding symbols are not 0")
    return pix[_PAD_TOP:, _PAD_SIDE:_PAD_SIDE + w].astype(bool)


# --------------------------------------------------------------------------- public API

def encode_bilevel(bits) -> bytes:
    """Code a bi-level image losslessly.

    ``bits``: a 2-D array ``(H, W)`` of booleans, or of numbers that are all 0 or 1 (1 = edge), with
    ``H, W ≥ 1``.  Returns self-describing bytes for :func:`decode_bilevel` (format version, size,
    rANS payload).  Raises ``TypeError``/``ValueError`` naming the problem for anything else.
    """
    arr = _check_bits(bits)
    out = bytearray([FORMAT_VERSION])
    put_varint(arr.shape[0], out)
    put_varint(arr.shape[1], out)
    return bytes(out) + _rans_encode(arr)


def decode_bilevel(data: bytes) -> np.ndarray:
    """Decode :func:`encode_bilevel`'s bytes to the ``(H, W)`` bool array that was coded.

    Raises :class:`~diffeic.bitstream.BitstreamError` (a ``ValueError``) naming the problem when the
    bytes are not such a stream: unknown version, bad size, truncated, corrupt or trailing bytes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"a bi-level stream is bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise BitstreamError("empty bi-level stream")
    if data[0] != FORMAT_VERSION:
        raise BitstreamError(f"unsupported bi-level format version {data[0]} (this reader knows {FORMAT_VERSION})")
    h, pos = get_varint(data, 1, len(data), "bi-level image height")
    w, pos = get_varint(data, pos, len(data), "bi-level image width")
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE and h * w <= MAX_PIXELS):
        raise BitstreamError(f"corrupt bi-level stream: size {size_text(h, w)} outside 1..{MAX_SIDE} per side, "
                             f"≤ {MAX_PIXELS} pixels")
    payload = data[pos:]
    if len(payload) < 8 or len(payload) % 4:
        raise BitstreamError(f"truncated or corrupt bi-level stream: a {len(payload)}-byte payload is not a "
                             f"rANS stream (whole 32-bit words, at least 8 bytes)")
    bits = _rans_decode(payload, h, w)
    if _rans_encode(bits) != payload:
        raise BitstreamError("truncated or corrupt bi-level stream: the payload is not the coding of the "
                             "pixels it decodes to")
    return bits


# --------------------------------------------------------------------------- edges

CANNY_SHORT_SIDE = 512   #: edge maps are computed at this short side (the image is resized to it)
CANNY_SIGMA = 1.0        #: Gaussian smoothing before the gradient (skimage.feature.canny)
CANNY_LOW = 0.1          #: hysteresis thresholds on the Sobel gradient magnitude of the grey image in [0, 1]
CANNY_HIGH = 0.2


def canny_edges(image, short_side: Optional[int] = CANNY_SHORT_SIDE, sigma: float = CANNY_SIGMA,
                low: float = CANNY_LOW, high: float = CANNY_HIGH) -> np.ndarray:
    """Canny edge map of an image, as a ``(h, w)`` bool array (True = edge).

    ``image``: ``(H, W)`` grey or ``(H, W, 3|4)`` RGB(A) array, ``uint8`` (0..255) or float in [0, 1].
    It is converted to grey (ITU-R 601 luma, ``skimage.color.rgb2gray``), resized with anti-aliasing so
    that its short side is ``short_side`` (``None``: its own size), and passed to
    ``skimage.feature.canny(sigma=sigma, low_threshold=low, high_threshold=high)``: thresholds on the
    gradient magnitude of the [0, 1] grey image (skimage's own defaults for float images).
    """
    from skimage import color, feature, transform

    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        grey = color.rgb2gray(arr[..., :3])            # uint8 or float; returns float in [0, 1]
    elif arr.ndim == 2:
        grey = arr / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float64)
    else:
        raise ValueError(f"canny_edges takes an (H, W) or (H, W, 3|4) image, got shape {arr.shape}")
    if arr.dtype != np.uint8 and (not np.isfinite(grey).all() or grey.min() < 0 or grey.max() > 1):
        raise ValueError("a float image for canny_edges must hold finite values in [0, 1]")
    if min(grey.shape) < 1:
        raise ValueError(f"canny_edges needs a non-empty image, got shape {arr.shape}")
    if short_side is not None:
        if short_side < 1:
            raise ValueError(f"short_side must be ≥ 1, got {short_side}")
        h, w = grey.shape
        scale = short_side / min(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        if size != (h, w):
            grey = transform.resize(grey, size, anti_aliasing=scale < 1)
    return feature.canny(grey, sigma=sigma, low_threshold=low, high_threshold=high)

"""The diffeic stream container: a small, versioned, self-checking wrapper around the rANS payload.

Layout (all multi-byte integers big-endian; ``varint`` = unsigned LEB128)::

    offset  size  field
    0       2     magic  b"\\xde\\x1c"
    2       1     format version (1 or 2)
    3       1     flags: bit 0 sampler, bit 1 steps, bit 2 seed present; version 2 adds
                  bit 3 model family present, bit 4 rate present; others 0
    4       4     model fingerprint (first 4 bytes of the model's SHA-256 fingerprint)
    8       …     varint H, varint W            (original image size, before padding)
    …       …     [family id: 1 byte] [rate: float32]                 (version 2, only when flagged)
    …       …     [sampler id: 1 byte] [steps: varint] [seed: varint]   (only when flagged)
    …       …     payload: the model family's coded strings (DiffEIC: one rANS string, z then y)
    end-4   4     CRC-32 of every byte before it

A stream is written as version 1 whenever it needs none of the version-2 fields (a fixed-rate
DiffEIC stream), so such streams stay byte-identical to those of earlier releases; a stream with a
family other than DiffEIC or a rate parameter is version 2, which readers of version 1 refuse as
"unsupported format version" instead of misreading it.

Overhead for a 768×512 image with default decode settings: 16 bytes.  Decode settings are written
only when the encoder chose something other than the model's defaults.  The official DiffEIC file
stores neither the image size nor a model check (20-byte header); this one stores both.
"""
from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .sizes import size_text

MAGIC = b"\xde\x1c"
FORMAT_VERSION = 2          # the newest version this module writes
SUPPORTED_VERSIONS = (1, 2)
FINGERPRINT_BYTES = 4
CRC_BYTES = 4

#: Sampler names by their id in the stream. Never renumber: ids are part of the format.
SAMPLER_IDS = {"ddpm": 0, "ddim": 1, "dpmpp": 2, "fewstep": 3, "onestep": 4}
SAMPLER_NAMES = {v: k for k, v in SAMPLER_IDS.items()}

#: Codec families by their id in a version-2 stream (absent: ``diffeic``). Never renumber.
FAMILY_IDS = {"diffeic": 0, "hific": 1, "refine": 2, "semantic": 3}
FAMILY_NAMES = {v: k for k, v in FAMILY_IDS.items()}
DEFAULT_FAMILY = "diffeic"

MAX_SIDE = 1 << 16          # largest H or W a stream may declare
MAX_STEPS = 10_000
_MAX_VARINT_BYTES = 10      # enough for a 64-bit seed

_FLAG_SAMPLER, _FLAG_STEPS, _FLAG_SEED, _FLAG_FAMILY, _FLAG_RATE = 1, 2, 4, 8, 16
_KNOWN_FLAGS = {1: _FLAG_SAMPLER | _FLAG_STEPS | _FLAG_SEED,
                2: _FLAG_SAMPLER | _FLAG_STEPS | _FLAG_SEED | _FLAG_FAMILY | _FLAG_RATE}


#: What a stream that decodes to NaN/Inf means (every codec family): the payload is corrupt, or its model
#: is not this one.
NON_FINITE_STREAM = "stream decodes to non-finite values: corrupt or made by another model"


class BitstreamError(ValueError):
    """A byte string that is not a valid diffeic stream, or not one this model can decode."""


@dataclass(frozen=True)
class StreamHeader:
    """Everything in a stream except the payload."""

    fingerprint: str                 # 8 hex digits
    height: int
    width: int
    sampler: Optional[str] = None    # None: the decoding model's default
    steps: Optional[int] = None
    seed: Optional[int] = None
    family: str = DEFAULT_FAMILY     # which codec family made the stream (version 2)
    rate: Optional[float] = None     # rate parameter q of a variable-rate model (version 2), as float32

    @property
    def version(self) -> int:
        """The format version this header is written in: 2 only when it uses a version-2 field."""
        return 2 if (self.family != DEFAULT_FAMILY or self.rate is not None) else 1


#: The smallest normal float32: a rate field below it (and above 0) is a subnormal.
_FLOAT32_TINY = 2.0 ** -126


def float32(value: float) -> float:
    """``value`` rounded to the nearest float32 (what a stream stores; ``±inf`` beyond float32's range)."""
    return float(np.float32(value))


def canonical_rate(rate: float) -> float:
    """A float32 rate in its one stored form: ``-0.0`` and the subnormals (|q| < 2^-126, which no model can tell
    from 0: the gains interpolate to those of q = 0) become ``+0.0``; other values are returned unchanged."""
    return 0.0 if abs(rate) < _FLOAT32_TINY else rate


def put_varint(value: int, out: bytearray) -> None:
    """Append ``value`` (>= 0) as a LEB128 varint: 7 bits a byte, low bits first."""
    if value < 0:
        raise ValueError(f"varint must be non-negative, got {value}")
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return


def get_varint(data: bytes, pos: int, end: int, what: str) -> Tuple[int, int]:
    """``(value, next position)`` of the minimally encoded varint at ``data[pos:end]``; a truncated, overlong or
    non-minimal one raises :class:`BitstreamError` naming ``what``."""
    value = shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= end:
            raise BitstreamError(f"truncated header: {what} is cut off")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if byte == 0 and i > 0:        # 0x80 0x00 = 0x00: one value, one encoding, one stream
                raise BitstreamError(f"corrupt header: {what} is not minimally encoded")
            return value, pos + i + 1
    raise BitstreamError(f"corrupt header: {what} is longer than {_MAX_VARINT_BYTES} bytes")


def pack(header: StreamHeader, payload: bytes) -> bytes:
    """Serialise a header and payload into a stream."""
    if not (1 <= header.height <= MAX_SIDE and 1 <= header.width <= MAX_SIDE):
        raise ValueError(f"image size {size_text(header.height, header.width)} outside 1..{MAX_SIDE}")
    fp = bytes.fromhex(header.fingerprint)
    if len(fp) != FINGERPRINT_BYTES:
        raise ValueError(f"fingerprint must be {FINGERPRINT_BYTES} bytes, got {header.fingerprint!r}")
    family = header.family != DEFAULT_FAMILY
    flags = ((_FLAG_SAMPLER if header.sampler is not None else 0) | (_FLAG_STEPS if header.steps is not None else 0)
             | (_FLAG_SEED if header.seed is not None else 0) | (_FLAG_FAMILY if family else 0)
             | (_FLAG_RATE if header.rate is not None else 0))
    out = bytearray(MAGIC)
    out += bytes([header.version, flags])
    out += fp
    put_varint(header.height, out)
    put_varint(header.width, out)
    if family:
        if header.family not in FAMILY_IDS:
            raise ValueError(f"unknown codec family {header.family!r}; known: {', '.join(FAMILY_IDS)}")
        out.append(FAMILY_IDS[header.family])
    if header.rate is not None:
        rate = float(header.rate)
        if not math.isfinite(rate) or struct.unpack(">f", struct.pack(">f", rate))[0] != rate:
            raise ValueError(f"rate must be a finite float32 value, got {header.rate!r}")
        if struct.pack(">f", rate) != struct.pack(">f", canonical_rate(rate)):
            raise ValueError(f"rate {rate!r} is not in canonical form (-0.0 and subnormals are written as 0.0: "
                             f"one encoding per value); pass canonical_rate(rate)")
        out += struct.pack(">f", rate)
    if header.sampler is not None:
        if header.sampler not in SAMPLER_IDS:
            raise ValueError(f"unknown sampler {header.sampler!r}; known: {', '.join(SAMPLER_IDS)}")
        out.append(SAMPLER_IDS[header.sampler])
    if header.steps is not None:
        if not 1 <= header.steps <= MAX_STEPS:
            raise ValueError(f"steps must be in 1..{MAX_STEPS}, got {header.steps}")
        put_varint(header.steps, out)
    if header.seed is not None:
        if not 0 <= header.seed < (1 << 64):
            raise ValueError(f"seed must be in 0..2**64-1, got {header.seed}")
        put_varint(header.seed, out)
    out += payload
    out += zlib.crc32(out).to_bytes(CRC_BYTES, "big")
    return bytes(out)


def unpack(data: bytes) -> Tuple[StreamHeader, bytes]:
    """Parse and check a stream → ``(header, payload)``; raises :class:`BitstreamError` saying what is wrong."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"a diffeic stream is bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise BitstreamError("empty input: not a diffeic stream")
    if data[:len(MAGIC)] != MAGIC[:len(data)]:
        raise BitstreamError("not a diffeic stream (bad magic bytes)")
    if len(data) < len(MAGIC) + 1:
        raise BitstreamError(f"truncated stream: {len(data)} bytes, too short for a header")
    version = data[2]
    if version not in SUPPORTED_VERSIONS:
        raise BitstreamError(f"unsupported format version {version} (this diffeic reads version "
                             f"{', '.join(map(str, SUPPORTED_VERSIONS))}); upgrade diffeic to decode it")
    min_len = len(MAGIC) + 2 + FINGERPRINT_BYTES + 2 + CRC_BYTES
    if len(data) < min_len:
        raise BitstreamError(f"truncated stream: {len(data)} bytes, a version-{version} stream has at least {min_len}")
    body, crc = data[:-CRC_BYTES], int.from_bytes(data[-CRC_BYTES:], "big")
    if zlib.crc32(body) != crc:
        raise BitstreamError("checksum mismatch: the stream is corrupt or truncated")
    flags = data[3]
    unknown = flags & ~_KNOWN_FLAGS[version]
    if unknown:
        raise BitstreamError(f"corrupt header: unknown flag bits 0x{unknown:02x} for format version {version}")
    fingerprint = data[4:8].hex()
    end = len(body)
    height, pos = get_varint(body, 8, end, "image height")
    width, pos = get_varint(body, pos, end, "image width")
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise BitstreamError(f"corrupt header: image size {size_text(height, width)} outside 1..{MAX_SIDE}")
    family, rate = DEFAULT_FAMILY, None
    if flags & _FLAG_FAMILY:
        if pos >= end:
            raise BitstreamError("truncated header: codec family id is cut off")
        fid = body[pos]
        pos += 1
        if fid not in FAMILY_NAMES or fid == FAMILY_IDS[DEFAULT_FAMILY]:   # the default is never written
            raise BitstreamError(f"corrupt header: unknown codec family id {fid}")
        family = FAMILY_NAMES[fid]
    if flags & _FLAG_RATE:
        if pos + 4 > end:
            raise BitstreamError("truncated header: rate parameter is cut off")
        rate = struct.unpack(">f", body[pos:pos + 4])[0]
        if not math.isfinite(rate):
            raise BitstreamError("corrupt header: the rate parameter is not a finite number")
        if struct.pack(">f", canonical_rate(rate)) != body[pos:pos + 4]:
            raise BitstreamError(f"corrupt header: rate field {body[pos:pos + 4].hex()} ({rate!r}) is not in canonical "
                                 f"form (-0.0 and subnormals are stored as 0.0: one encoding per value)")
        pos += 4
    if version == 2 and family == DEFAULT_FAMILY and rate is None:
        raise BitstreamError("corrupt header: a version-2 stream without version-2 fields (streams have one encoding)")
    sampler = steps = seed = None
    if flags & _FLAG_SAMPLER:
        if pos >= end:
            raise BitstreamError("truncated header: sampler id is cut off")
        sid = body[pos]
        pos += 1
        if sid not in SAMPLER_NAMES:
            raise BitstreamError(f"corrupt header: unknown sampler id {sid}")
        sampler = SAMPLER_NAMES[sid]
    if flags & _FLAG_STEPS:
        steps, pos = get_varint(body, pos, end, "step count")
        if not 1 <= steps <= MAX_STEPS:
            raise BitstreamError(f"corrupt header: step count {steps} outside 1..{MAX_STEPS}")
    if flags & _FLAG_SEED:
        seed, pos = get_varint(body, pos, end, "seed")
        if seed >= (1 << 64):
            raise BitstreamError("corrupt header: seed larger than 64 bits")
    header = StreamHeader(fingerprint=fingerprint, height=height, width=width, sampler=sampler,
                          steps=steps, seed=seed, family=family, rate=rate)
    return header, body[pos:]


def unpack_for(data: bytes, family: str, fingerprint: str, model: str, max_pixels: int,
               owner: str) -> Tuple[StreamHeader, bytes]:
    """:func:`unpack` for one model: a stream of another codec family, of another model (``fingerprint``,
    ``model`` names it) or of more than ``max_pixels`` pixels (``owner.max_pixels``) is refused before decoding."""
    header, payload = unpack(data)
    if header.family != family:
        raise BitstreamError(f"stream was made by a {header.family!r} codec, not by a {family!r} one; decode it "
                             f"with a {header.family!r} model")
    if header.fingerprint != fingerprint:
        raise BitstreamError(f"stream was made by model {header.fingerprint}, but this codec is model {fingerprint} "
                             f"({model}); decode it with the model that encoded it")
    if header.height * header.width > max_pixels:
        raise BitstreamError(f"stream declares an image of {size_text(header.height, header.width)}, more than this "
                             f"codec's limit of {max_pixels} pixels (raise {owner}.max_pixels to decode it)")
    return header, payload


def describe(data: bytes) -> Dict[str, Any]:
    """A stream's header as a dict (no model needed): format version, family, fingerprint, size,
    rate, decode settings (None = the decoding model's default), payload/container/total bytes and bpp.

    Raises :class:`BitstreamError` like :func:`unpack`.  ``DiffEICCodec.inspect`` returns this.
    """
    header, payload = unpack(data)
    total = len(data)
    return {"version": header.version, "family": header.family, "fingerprint": header.fingerprint,
            "height": header.height, "width": header.width, "rate": header.rate,
            "sampler": header.sampler, "steps": header.steps, "seed": header.seed,
            "payload_bytes": len(payload), "container_bytes": total - len(payload), "total_bytes": total,
            "bpp": 8 * total / (header.height * header.width)}


def container_overhead(header: StreamHeader) -> int:
    """Bytes the container adds around the payload for this header."""
    return len(pack(header, b""))

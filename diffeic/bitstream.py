"""The diffeic stream container: a small, versioned, self-checking wrapper around the rANS payload.

Layout of format version 1 (all multi-byte integers big-endian; ``varint`` = unsigned LEB128)::

    offset  size  field
    0       2     magic  b"\\xde\\x1c"
    2       1     format version (1)
    3       1     flags: bit 0 sampler present, bit 1 steps present, bit 2 seed present; others 0
    4       4     model fingerprint (first 4 bytes of the model's SHA-256 fingerprint)
    8       …     varint H, varint W            (original image size, before padding)
    …       …     [sampler id: 1 byte] [steps: varint] [seed: varint]   (only when flagged)
    …       …     payload: one rANS string holding z then every slice pass of y
    end-4   4     CRC-32 of every byte before it

Overhead for a 768×512 image with default decode settings: 16 bytes.  Decode settings are written
only when the encoder chose something other than the model's defaults.  The official DiffEIC file
stores neither the image size nor a model check (20-byte header); this one stores both.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Optional, Tuple

MAGIC = b"\xde\x1c"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
FINGERPRINT_BYTES = 4
CRC_BYTES = 4

#: Sampler names by their id in the stream. Never renumber: ids are part of the format.
SAMPLER_IDS = {"ddpm": 0, "ddim": 1, "dpmpp": 2, "fewstep": 3}
SAMPLER_NAMES = {v: k for k, v in SAMPLER_IDS.items()}

MAX_SIDE = 1 << 16          # largest H or W a stream may declare
MAX_STEPS = 10_000
_MAX_VARINT_BYTES = 10      # enough for a 64-bit seed

_FLAG_SAMPLER, _FLAG_STEPS, _FLAG_SEED = 1, 2, 4
_KNOWN_FLAGS = _FLAG_SAMPLER | _FLAG_STEPS | _FLAG_SEED


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
    version: int = FORMAT_VERSION


def _put_varint(value: int, out: bytearray) -> None:
    if value < 0:
        raise ValueError(f"varint must be non-negative, got {value}")
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return


def _get_varint(data: bytes, pos: int, end: int, what: str) -> Tuple[int, int]:
    value = shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= end:
            raise BitstreamError(f"truncated header: {what} is cut off")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos + i + 1
    raise BitstreamError(f"corrupt header: {what} is longer than {_MAX_VARINT_BYTES} bytes")


def pack(header: StreamHeader, payload: bytes) -> bytes:
    """Serialise a header and payload into a stream."""
    if not (1 <= header.height <= MAX_SIDE and 1 <= header.width <= MAX_SIDE):
        raise ValueError(f"image size {header.height}x{header.width} outside 1..{MAX_SIDE}")
    fp = bytes.fromhex(header.fingerprint)
    if len(fp) != FINGERPRINT_BYTES:
        raise ValueError(f"fingerprint must be {FINGERPRINT_BYTES} bytes, got {header.fingerprint!r}")
    flags = ((_FLAG_SAMPLER if header.sampler is not None else 0) | (_FLAG_STEPS if header.steps is not None else 0)
             | (_FLAG_SEED if header.seed is not None else 0))
    out = bytearray(MAGIC)
    out += bytes([FORMAT_VERSION, flags])
    out += fp
    _put_varint(header.height, out)
    _put_varint(header.width, out)
    if header.sampler is not None:
        if header.sampler not in SAMPLER_IDS:
            raise ValueError(f"unknown sampler {header.sampler!r}; known: {', '.join(SAMPLER_IDS)}")
        out.append(SAMPLER_IDS[header.sampler])
    if header.steps is not None:
        if not 1 <= header.steps <= MAX_STEPS:
            raise ValueError(f"steps must be in 1..{MAX_STEPS}, got {header.steps}")
        _put_varint(header.steps, out)
    if header.seed is not None:
        if not 0 <= header.seed < (1 << 64):
            raise ValueError(f"seed must be in 0..2**64-1, got {header.seed}")
        _put_varint(header.seed, out)
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
    if flags & ~_KNOWN_FLAGS:
        raise BitstreamError(f"corrupt header: unknown flag bits 0x{flags & ~_KNOWN_FLAGS:02x}")
    fingerprint = data[4:8].hex()
    end = len(body)
    height, pos = _get_varint(body, 8, end, "image height")
    width, pos = _get_varint(body, pos, end, "image width")
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise BitstreamError(f"corrupt header: image size {height}x{width} outside 1..{MAX_SIDE}")
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
        steps, pos = _get_varint(body, pos, end, "step count")
        if not 1 <= steps <= MAX_STEPS:
            raise BitstreamError(f"corrupt header: step count {steps} outside 1..{MAX_STEPS}")
    if flags & _FLAG_SEED:
        seed, pos = _get_varint(body, pos, end, "seed")
        if seed >= (1 << 64):
            raise BitstreamError("corrupt header: seed larger than 64 bits")
    header = StreamHeader(fingerprint=fingerprint, height=height, width=width, sampler=sampler,
                          steps=steps, seed=seed, version=version)
    return header, body[pos:]


def container_overhead(header: StreamHeader) -> int:
    """Bytes the container adds around the payload for this header."""
    return len(pack(header, b""))

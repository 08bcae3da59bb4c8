"""The stream container: layout, overhead, and clear errors for every kind of bad stream."""
import zlib

import pytest

from diffeic.bitstream import (MAGIC, MAX_SIDE, BitstreamError, StreamHeader, container_overhead,
                               pack, unpack)

HEADER = StreamHeader(fingerprint="0123abcd", height=512, width=768)


def test_round_trip_with_and_without_decode_settings():
    payload = bytes(range(200))
    assert unpack(pack(HEADER, payload)) == (HEADER, payload)
    custom = StreamHeader(fingerprint="ffffffff", height=17, width=33, sampler="dpmpp", steps=12, seed=2 ** 64 - 1)
    assert unpack(pack(custom, b"x")) == (custom, b"x")


def test_overhead_at_kodak_size_is_at_most_16_bytes():
    assert container_overhead(HEADER) == 16
    assert container_overhead(StreamHeader(fingerprint="0123abcd", height=768, width=512)) <= 16


def test_layout_starts_with_magic_and_version():
    data = pack(HEADER, b"payload")
    assert data[:2] == MAGIC and data[2] == HEADER.version == 1
    assert int.from_bytes(data[-4:], "big") == zlib.crc32(data[:-4])


def _recrc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


@pytest.mark.parametrize("data, message", [
    (b"", "empty input"),
    (b"\x89PNG\r\n\x1a\n" + bytes(40), "not a diffeic stream"),
    (MAGIC, "truncated"),
    (MAGIC + bytes([1]), "truncated"),
])
def test_clear_errors_for_non_streams(data, message):
    with pytest.raises(BitstreamError, match=message):
        unpack(data)


def test_future_version_is_named():
    data = bytearray(pack(HEADER, b"abc"))
    data[2] = 7
    with pytest.raises(BitstreamError, match="unsupported format version 7"):
        unpack(_recrc(bytes(data[:-4])))


def test_truncation_and_bit_flips_fail_the_checksum():
    data = pack(HEADER, bytes(range(100)))
    with pytest.raises(BitstreamError, match="checksum mismatch|truncated"):
        unpack(data[:-1])
    flipped = bytearray(data)
    flipped[40] ^= 0x10
    with pytest.raises(BitstreamError, match="checksum mismatch"):
        unpack(bytes(flipped))


def test_mutated_header_fields_are_rejected_even_with_a_valid_checksum():
    body = bytearray(pack(HEADER, b"abc")[:-4])
    body[3] = 0x80                                          # unknown flag
    with pytest.raises(BitstreamError, match="unknown flag"):
        unpack(_recrc(bytes(body)))
    huge = bytearray(MAGIC) + bytes([1, 0]) + bytes(4) + b"\xff\xff\xff\xff\x0f" + b"\x01"
    with pytest.raises(BitstreamError, match=f"outside 1..{MAX_SIDE}"):
        unpack(_recrc(bytes(huge)))
    endless = bytearray(MAGIC) + bytes([1, 0]) + bytes(4) + b"\xff" * 12
    with pytest.raises(BitstreamError, match="longer than"):
        unpack(_recrc(bytes(endless)))
    bad_sampler = bytearray(MAGIC) + bytes([1, 1]) + bytes(4) + b"\x01\x01\x09"
    with pytest.raises(BitstreamError, match="unknown sampler id 9"):
        unpack(_recrc(bytes(bad_sampler)))


def test_bitstream_error_is_a_value_error():
    assert issubclass(BitstreamError, ValueError)
    with pytest.raises(TypeError):
        unpack("not bytes")


def test_version_2_fields_round_trip_and_version_1_stays_byte_identical():
    v1 = pack(HEADER, b"abc")
    assert v1[2] == 1 and HEADER.version == 1          # fixed-rate DiffEIC streams keep format 1
    for header in (StreamHeader(fingerprint="0123abcd", height=5, width=7, family="hific"),
                   StreamHeader(fingerprint="0123abcd", height=5, width=7, rate=1.25, seed=3),
                   StreamHeader(fingerprint="0123abcd", height=5, width=7, family="refine", rate=-0.5)):
        data = pack(header, b"xyz")
        assert data[2] == 2 == header.version
        assert unpack(data) == (header, b"xyz")


def test_version_2_errors_are_clear():
    with pytest.raises(ValueError, match="float32"):
        pack(StreamHeader(fingerprint="0123abcd", height=5, width=7, rate=0.1), b"")    # not representable
    with pytest.raises(ValueError, match="unknown codec family"):
        pack(StreamHeader(fingerprint="0123abcd", height=5, width=7, family="jpeg"), b"")
    base = bytearray(MAGIC) + bytes([2, 8]) + bytes(4) + b"\x05\x07"
    with pytest.raises(BitstreamError, match="unknown codec family id 9"):
        unpack(_recrc(bytes(base + b"\x09")))
    with pytest.raises(BitstreamError, match="one encoding"):        # version 2 with nothing of version 2
        unpack(_recrc(bytes(bytearray(MAGIC) + bytes([2, 0]) + bytes(4) + b"\x05\x07")))
    with pytest.raises(BitstreamError, match="unknown flag bits 0x08 for format version 1"):
        unpack(_recrc(bytes(bytearray(MAGIC) + bytes([1, 8]) + bytes(4) + b"\x05\x07\x01")))
    nan = bytearray(MAGIC) + bytes([2, 16]) + bytes(4) + b"\x05\x07" + b"\x7f\xc0\x00\x00"
    with pytest.raises(BitstreamError, match="not a finite number"):
        unpack(_recrc(bytes(nan)))

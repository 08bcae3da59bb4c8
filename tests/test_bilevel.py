"""The bi-level coder for edge maps (diffeic.bilevel): exact round trips, refusals, a pinned format."""
from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from diffeic.bilevel import CANNY_SHORT_SIDE, FORMAT_VERSION, MAX_PIXELS, canny_edges, decode_bilevel, encode_bilevel
from diffeic.bitstream import BitstreamError

ROOT = Path(__file__).resolve().parent.parent


def synthetic_map(h: int, w: int) -> np.ndarray:
    """A fixed edge-like map from integer arithmetic only (no library whose output could drift): a circle,
    two lines and sparse hashed dots."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    d2 = (2 * y - h) ** 2 + (2 * x - w) ** 2
    r = min(h, w) * 3 // 4
    circle = (d2 >= r * r) & (d2 < (r + 2) * (r + 2))
    lines = (y == (x * 2) // 3) | (x == w // 5)
    dots = ((x * 73856093) ^ (y * 19349663)) % 89 == 0
    return circle | lines | dots


def edge_map(name: str, short_side: int) -> np.ndarray:
    import skimage.data

    return canny_edges(getattr(skimage.data, name)(), short_side=short_side)


def roundtrip(bits) -> np.ndarray:
    out = decode_bilevel(encode_bilevel(bits))
    assert out.dtype == np.bool_ and out.shape == np.shape(bits)
    return out


# --------------------------------------------------------------------------- exact round trips

SHAPES = [(1, 1), (1, 2), (1, 9), (9, 1), (2, 3), (3, 5), (4, 4), (5, 2), (37, 53), (64, 1), (1, 130)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("density", [0.0, 0.03, 0.2, 0.5, 0.9, 1.0])
def test_random_maps_roundtrip_exactly(shape, density):
    rng = np.random.default_rng(hash((shape, density)) % 2**32)
    bits = rng.random(shape) < density
    np.testing.assert_array_equal(roundtrip(bits), bits)


def test_real_edge_maps_of_odd_sizes_roundtrip_exactly():
    edges = edge_map("coffee", 131)                        # 131 x 196
    assert edges.shape == (131, 196) and 0.02 < edges.mean() < 0.3
    np.testing.assert_array_equal(roundtrip(edges), edges)
    crop = edge_map("chelsea", 256)[17:17 + 101, 5:5 + 77]  # odd H x W from the middle of a photo
    assert crop.any()
    np.testing.assert_array_equal(roundtrip(crop), crop)
    np.testing.assert_array_equal(roundtrip(crop.T), crop.T)


def test_structured_maps_roundtrip_and_cost_little():
    for h, w in [(31, 47), (100, 3), (3, 100)]:
        bits = synthetic_map(h, w)
        np.testing.assert_array_equal(roundtrip(bits), bits)
    empty, full = np.zeros((300, 301), bool), np.ones((300, 301), bool)
    for bits, most in ((empty, 40), (full, 300)):          # 90 300 pixels of one value: < 0.03 bit each
        data = encode_bilevel(bits)
        np.testing.assert_array_equal(decode_bilevel(data), bits)
        assert len(data) <= most


def test_accepts_zero_one_numbers_and_returns_bools():
    bits = synthetic_map(20, 30)
    for arr in (bits.astype(np.uint8), bits.astype(np.int64), bits.astype(np.float32), bits.tolist()):
        assert encode_bilevel(arr) == encode_bilevel(bits)


# --------------------------------------------------------------------------- compression

def test_real_edge_map_beats_group4_and_png():
    from PIL import Image

    edges = edge_map("astronaut", CANNY_SHORT_SIDE)          # 512 x 512, the documented resolution
    ours = len(encode_bilevel(edges))
    g4, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(edges).convert("1").save(g4, "TIFF", compression="group4")
    Image.fromarray(edges).convert("1").save(png, "PNG", optimize=True)
    assert ours < 0.7 * len(g4.getvalue()) and ours < 0.7 * len(png.getvalue()), (ours, len(g4.getvalue()),
                                                                                    len(png.getvalue()))


# --------------------------------------------------------------------------- pinned format

# Version-1 stream of synthetic_map(9, 13): decoding it must give that map for as long as version 1 is read.
V1_STREAM_9x13 = bytes.fromhex("01090d20effd53bb0000003588cc5c6cd3882464a50f8c")


def test_format_is_pinned():
    bits = synthetic_map(9, 13)
    assert encode_bilevel(bits) == V1_STREAM_9x13
    np.testing.assert_array_equal(decode_bilevel(V1_STREAM_9x13), bits)
    big = encode_bilevel(synthetic_map(233, 311))
    assert big[0] == FORMAT_VERSION == 1
    assert (len(big), hashlib.sha256(big).hexdigest()[:16]) == (1101, "70681584242f08f8")


# --------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("bad, error", [
    (np.zeros(5, bool), ValueError),
    (np.zeros((2, 3, 4), bool), ValueError),
    (np.zeros((0, 5), bool), ValueError),
    (np.zeros((5, 0), bool), ValueError),
    (np.array([[0, 1], [2, 0]]), ValueError),
    (np.array([[0.0, 0.5]]), ValueError),
    (np.array([[0.0, np.nan]]), ValueError),
    (np.array([["a", "b"]]), TypeError),
    ("0101", TypeError),
    (None, TypeError),
])
def test_bad_input_is_refused(bad, error):
    with pytest.raises(error):
        encode_bilevel(bad)


def test_too_large_is_refused_before_allocating():
    with pytest.raises(ValueError, match="larger"):
        encode_bilevel(np.broadcast_to(np.zeros((1, 1), bool), (1, MAX_PIXELS + 1)))
    header = bytes([FORMAT_VERSION]) + bytes([0x80, 0x80, 0x04]) + bytes([0x80, 0x80, 0x04])   # 65536 x 65536
    with pytest.raises(BitstreamError, match="size"):
        decode_bilevel(header + bytes(8))


def test_every_truncation_and_trailing_byte_is_refused():
    data = encode_bilevel(synthetic_map(40, 50))
    for n in range(len(data)):
        with pytest.raises(BitstreamError):
            decode_bilevel(data[:n])
    for extra in (b"\x00", b"\x00" * 4, b"\xff" * 4):
        with pytest.raises(BitstreamError):
            decode_bilevel(data + extra)


def test_header_damage_is_named():
    data = encode_bilevel(synthetic_map(40, 50))
    with pytest.raises(BitstreamError, match="version"):
        decode_bilevel(b"\x02" + data[1:])
    with pytest.raises(BitstreamError, match="minimally"):
        decode_bilevel(data[:1] + b"\xa8\x00" + data[2:])          # 40 written as two varint bytes
    with pytest.raises(BitstreamError, match="size"):
        decode_bilevel(data[:1] + b"\x00" + data[2:])              # height 0
    with pytest.raises(BitstreamError, match="empty"):
        decode_bilevel(b"")
    with pytest.raises(TypeError):
        decode_bilevel("01")


def test_every_flipped_payload_bit_is_refused():
    data = encode_bilevel(edge_map("camera", 32))
    assert len(data) > 40
    for i in range(3, len(data)):
        for mask in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= mask
            with pytest.raises(BitstreamError):
                decode_bilevel(bytes(bad))


def test_random_mutations_are_refused_in_a_child_process():
    """Random damage (bytes, runs of 0xff, insertions, cuts), in a child: a crash in the C++ coder would
    show as a failure here, not kill the suite."""
    code = textwrap.dedent("""
        import random, sys
        import numpy as np
        sys.path.insert(0, sys.argv[1])
        from diffeic.bilevel import encode_bilevel, decode_bilevel
        from diffeic.bitstream import BitstreamError
        rng = random.Random(7)
        base = [encode_bilevel(np.random.default_rng(s).random((s + 3, 2 * s + 1)) < 0.1) for s in range(12)]
        refused = 0
        for case in range(300):
            d = bytearray(rng.choice(base))
            kind = case % 4
            if kind == 0:
                for _ in range(rng.randint(1, 4)):
                    d[rng.randrange(len(d))] = rng.randrange(256)
            elif kind == 1:
                i = rng.randrange(1, len(d)); d[i:i + rng.randint(1, 12)] = b"\\xff" * 8
            elif kind == 2:
                i = rng.randrange(len(d)); d[i:i] = bytes(rng.randrange(256) for _ in range(4 * rng.randint(1, 3)))
            else:
                d = d[:rng.randrange(len(d))] + bytes(rng.randrange(256) for _ in range(rng.randint(0, 9)))
            if bytes(d) in base:
                continue
            try:
                decode_bilevel(bytes(d))
            except BitstreamError:
                refused += 1
            else:
                print("ACCEPTED", bytes(d).hex()); sys.exit(1)
        print("refused", refused)
    """)
    res = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert int(res.stdout.split()[-1]) > 270


# --------------------------------------------------------------------------- edges

def test_canny_edges_resolution_and_inputs():
    import skimage.data

    rgb = skimage.data.chelsea()                                     # 300 x 451
    edges = canny_edges(rgb)
    assert edges.dtype == np.bool_ and edges.shape == (512, 770)     # short side CANNY_SHORT_SIDE
    assert 0.03 < edges.mean() < 0.15
    assert canny_edges(rgb, short_side=None).shape == (300, 451)
    np.testing.assert_array_equal(canny_edges(rgb, short_side=150), canny_edges(rgb / 255.0, short_side=150))
    grey = skimage.data.camera()
    np.testing.assert_array_equal(canny_edges(grey, short_side=128),
                                  canny_edges(np.stack([grey] * 3, -1), short_side=128))
    assert not canny_edges(np.full((40, 60, 3), 128, np.uint8), short_side=None).any()   # flat: no edges
    for bad in (np.zeros((4, 4, 2)), np.zeros(5), np.full((4, 4), 2.0), np.full((4, 4), np.nan)):
        with pytest.raises(ValueError):
            canny_edges(bad)


def test_benchmark_runs_and_ours_is_smallest():
    sys.path.insert(0, str(ROOT))
    from benchmarks import bilevel_coder

    rows = bilevel_coder.run(["retina"], repeats=1)
    assert [r["image"] for r in rows] == ["retina", "**total**"]
    r = rows[0]
    assert r["size"] == "512x512" and r["ours"] < r["g4"] < r["g4_tiff"] and r["ours"] < r["png"] < r["png_file"]
    assert r["static"] < r["ours"] and r["ctx"] > 0
    assert "| retina | 512x512 |" in bilevel_coder.format_table(rows)

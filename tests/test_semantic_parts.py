"""The semantic family's parts layer (diffeic.semantic): exact round trips, a pinned framing, strict parsing,
the never-larger rule, kept-region checks and the prompt/caption rules."""
from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffeic.bilevel import canny_edges, encode_bilevel
from diffeic.bitstream import BitstreamError, put_varint
from diffeic.semantic import (CaptionUnavailable, FallbackUsed, KeptRegion, caption_image, choose_fallback,
                              decode_parts, encode_parts, inspect_parts, paste_regions, upsample_palette)
from diffeic.semantic.palette import encode_palette, palette_grid, palette_shape
from diffeic.semantic.parts import CodedParts, edge_shape, pack_parts, read_parts, unpack_parts
from diffeic.semantic.prompt import CAPTION_ENV, MAX_PROMPT_BYTES
from diffeic.semantic.regions import MAX_REGIONS

PROMPT = "Café crème ☕ on a wooden table — naïve 東京 photo"     # non-ASCII: 1-, 2-, 3-byte UTF-8


def coffee(h: int = 131, w: int = 197) -> np.ndarray:
    """An odd-sized crop of scikit-image's coffee photo, uint8 (h, w, 3)."""
    import skimage.data

    return np.ascontiguousarray(skimage.data.coffee()[100:100 + h, 200:200 + w])


def webp_pixels(data: bytes) -> np.ndarray:
    """What Pillow (libwebp) decodes from WebP bytes: the independent reference for the WebP parts."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def raw_stream(flags: int, h: int, w: int, *chunks: bytes) -> bytes:
    """A parts stream assembled by hand: version 1, flags, size, then each chunk with its varint length."""
    out = bytearray([1, flags])
    put_varint(h, out)
    put_varint(w, out)
    for c in chunks:
        put_varint(len(c), out)
        out += c
    return bytes(out)


def parts_only(*args, **kwargs) -> bytes:
    """encode_parts without the never-larger rule's fallback (and its warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackUsed)
        return encode_parts(*args, fallback=False, **kwargs)


@pytest.fixture(scope="module")
def full():
    """An odd-sized image and its stream with every part."""
    img = coffee()
    box = (20, 30, 61, 77)                                          # 41 x 47, odd
    return img, box, parts_only(img, PROMPT, edges=True, palette=32, keep=[box])


@pytest.fixture(scope="module")
def small():
    """A stream with every part of a small image (quick to decode: for the loops over many streams)."""
    return parts_only(coffee(23, 37), "a cup", edges=True, palette=8, keep=[(3, 4, 12, 11)])


# --------------------------------------------------------------------------- exact round trips

def test_every_part_roundtrips_exactly(full):
    img, box, data = full
    parts = decode_parts(data)
    coded = unpack_parts(data)
    assert (parts.height, parts.width) == (131, 197) and not parts.is_fallback
    assert parts.prompt == PROMPT and coded.prompt.encode("utf-8") == PROMPT.encode("utf-8")
    # edges: bit-exact against the detector run independently at the documented resolution (own size here)
    np.testing.assert_array_equal(parts.edges, canny_edges(img, short_side=131))
    assert parts.edges.dtype == np.bool_ and parts.edges.any()
    # palette: exactly what libwebp decodes from the stored bytes, and close to the box-averaged grid
    assert parts.palette.shape == (21, 32, 3) == palette_shape(131, 197, 32) + (3,)
    np.testing.assert_array_equal(parts.palette, webp_pixels(coded.palette))
    assert np.abs(parts.palette.astype(int) - palette_grid(img, 32)).mean() < 10   # lossy q 75 of 21 x 32 cells: ~7
    # kept region: exactly what libwebp decodes, close to the crop (WebP quality 90)
    (region,) = parts.regions
    assert region.box == box and region.pixels.shape == (47, 41, 3)
    np.testing.assert_array_equal(region.pixels, webp_pixels(coded.regions[0][1]))
    assert np.abs(region.pixels.astype(int) - img[30:77, 20:61]).mean() < 4


def test_inspect_counts_every_byte(full):
    _, box, data = full
    info = inspect_parts(data)
    coded = unpack_parts(data)
    assert info["parts"] == ["prompt", "edges", "palette", "regions"] and not info["fallback"]
    assert info["bytes"]["prompt"] == len(PROMPT.encode("utf-8"))
    assert info["bytes"]["edges"] == len(coded.edges) == len(encode_bilevel(canny_edges(coffee(), short_side=131)))
    assert info["bytes"]["palette"] == len(coded.palette)
    assert info["bytes"]["regions"] == len(coded.regions[0][1])
    assert sum(info["bytes"].values()) == info["total"] == len(data)
    # framing: version, flags, H, W (1 + 1 + 2 + 2), four part lengths (1 + 2 + 2 + 1: palette over 127 bytes),
    # region count and box (1 + 4)
    assert info["bytes"]["framing"] == 6 + 1 + 2 + 2 + (1 if info["bytes"]["regions"] < 128 else 2) + 5
    assert info["boxes"] == [box] and info["prompt"] == PROMPT
    # self-delimiting: read from inside a longer buffer, it ends where the stream ends
    parts, end, sizes = read_parts(b"ab" + data + b"\x00tail", 2)
    assert end == 2 + len(data) and sizes == info["bytes"] and parts.prompt == PROMPT


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 3), (17, 33), (40, 9)])
def test_odd_sizes_roundtrip(shape):
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    img = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    data = parts_only(img, "noise", edges=True, palette=4, keep=[(0, 0, 1, 1)])
    parts = decode_parts(data)
    np.testing.assert_array_equal(parts.edges, canny_edges(img, short_side=min(shape)))
    assert parts.palette.shape == palette_shape(*shape, 4) + (3,)
    np.testing.assert_array_equal(parts.palette, webp_pixels(unpack_parts(data).palette))
    assert parts.regions[0].pixels.shape == (1, 1, 3) and parts.prompt == "noise"


def test_edges_of_large_images_are_at_short_side_512():
    img = np.zeros((513, 771, 3), np.uint8)
    img[:, 400:] = 200
    assert edge_shape(513, 771) == (512, 769) == canny_edges(img, short_side=512).shape
    assert edge_shape(300, 451) == (300, 451) and edge_shape(2000, 1001) == (1023, 512)
    parts = decode_parts(parts_only(img, None, edges=True, palette=None))
    np.testing.assert_array_equal(parts.edges, canny_edges(img, short_side=512))
    assert parts.prompt is None and parts.palette is None and parts.regions == ()


def test_given_edge_map_is_sent_as_is_and_must_have_the_edge_shape():
    img = coffee(20, 30)
    bits = np.random.default_rng(0).random((20, 30)) < 0.2
    np.testing.assert_array_equal(decode_parts(parts_only(img, "x", edges=bits, palette=None)).edges, bits)
    with pytest.raises(ValueError, match=r"shape \(20, 30\)"):
        parts_only(img, "x", edges=bits[:, :29])


def test_palette_grid_is_the_box_average_and_lossless_when_smaller():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    grid = palette_grid(img, 32)                                    # 4 x 4 cells
    ref = img.reshape(16, 4, 32, 4, 3).mean(axis=(1, 3))
    assert grid.shape == (16, 32, 3) and np.abs(grid - ref).max() < 1      # Pillow's fixed-point BOX filter
    flat = np.zeros((40, 60, 3), np.uint8)
    flat[:, 30:] = (200, 10, 90)                                    # two flat colours: lossless WebP is smaller
    cells = decode_parts(parts_only(flat, "x", edges=False, palette=32)).palette
    np.testing.assert_array_equal(cells, palette_grid(flat, 32))
    assert palette_shape(10, 5, 32) == (10, 5) and palette_shape(100, 3, 32) == (32, 1)
    up = upsample_palette(np.full((3, 2, 3), 77, np.uint8), 31, 17)
    assert up.shape == (31, 17, 3) and (up == 77).all()


# --------------------------------------------------------------------------- pinned framing

def test_framing_is_pinned():
    """Version 1 streams assembled by hand from the layout: the writer and the reader must agree with them."""
    img = coffee(20, 300)
    text = "a é 東"
    prompt_only = bytes([1, 1, 20, 0xAC, 0x02, 8]) + text.encode("utf-8")      # W = 300: varint ac 02
    assert parts_only(img, text, edges=False, palette=None) == prompt_only
    assert decode_parts(prompt_only).prompt == text
    bits = np.zeros((20, 300), bool)
    bits[5, 7:200] = True
    edges = encode_bilevel(bits)
    with_edges = raw_stream(3, 20, 300, text.encode("utf-8"), edges)
    assert parts_only(img, text, edges=bits, palette=None) == with_edges
    np.testing.assert_array_equal(decode_parts(with_edges).edges, bits)


# --------------------------------------------------------------------------- strict parsing

def test_every_truncation_and_trailing_byte_is_refused(full, small):
    data = full[2]
    for n in range(len(data)):
        with pytest.raises(BitstreamError):
            decode_parts(data[:n])
    for extra in (b"\x00", b"\x01\x01"):
        with pytest.raises(BitstreamError, match="after its end"):
            decode_parts(data + extra)
    for n in range(len(small)):
        with pytest.raises(BitstreamError):
            decode_parts(small[:n])
    decode_parts(small)


@pytest.mark.parametrize("stream, fragment", [
    (b"", "empty"),
    (b"\x02\x01\x01\x01\x01a", "version 2"),
    (b"\x01", "flags"),
    (b"\x01\x20\x01\x01\x01a", "unknown flags"),
    (b"\x01\x00\x01\x01", "no part"),
    (b"\x01\x11\x01\x01\x01a\x01a", "fallback stream with other parts"),
    (b"\x01\x01\x00\x01\x01a", "size"),
    (b"\x01\x01\x80\x80\x05\x01\x01a", "size"),                    # H = 81920 > 65536
    (b"\x01\x01\x81\x00\x01\x01a", "minimally"),
    (b"\x01\x01\x01\x01\x00", "empty prompt"),
    (b"\x01\x01\x01\x01\x02\xc3\x28", "not UTF-8"),
    (b"\x01\x01\x01\x01\x01\x07", "control character"),
    (b"\x01\x01\x01\x01\x05abc", "needs 5 bytes"),
    (b"\x01\x02\x01\x01\x03\x02\x01\x01", "bi-level"),            # edges part of another version
    (b"\x01\x08\x10\x10\x00", "0 kept regions"),
    (b"\x01\x08\x10\x10\x11", "17 kept regions"),
])
def test_malformed_streams_are_refused_by_name(stream, fragment):
    with pytest.raises(BitstreamError, match=fragment):
        decode_parts(stream)
    with pytest.raises(BitstreamError):
        inspect_parts(stream)


def test_writer_refuses_parts_that_break_the_format():
    webp = encode_palette(coffee(4, 4), 4)
    with pytest.raises(ValueError, match="fallback image only"):
        pack_parts(CodedParts(4, 4, prompt="x", fallback=webp))
    with pytest.raises(ValueError, match="nothing to send"):
        pack_parts(CodedParts(4, 4))
    with pytest.raises(ValueError, match="canonical order"):
        pack_parts(CodedParts(8, 8, regions=(((4, 0, 8, 4), webp), ((0, 0, 4, 4), webp))))
    with pytest.raises(ValueError, match="edges part"):
        pack_parts(CodedParts(4, 4, prompt="x", edges=b""))
    with pytest.raises(ValueError, match="empty prompt"):
        pack_parts(CodedParts(4, 4, prompt=""))
    with pytest.raises(ValueError, match="outside"):
        pack_parts(CodedParts(0, 4, prompt="x"))
    assert unpack_parts(pack_parts(CodedParts(4, 4, fallback=webp))).fallback == webp


def test_prompt_over_the_limit_is_refused_in_streams_and_calls():
    long = "é" * (MAX_PROMPT_BYTES // 2 + 1)                        # 1026 bytes
    out = bytearray([1, 1, 1, 1])
    put_varint(len(long.encode()), out)
    with pytest.raises(BitstreamError, match="at most 1024"):
        decode_parts(bytes(out) + long.encode())
    with pytest.raises(ValueError, match="at most 1024"):
        parts_only(coffee(8, 8), long)


def test_parts_of_the_wrong_size_are_refused():
    img = coffee(20, 30)
    good = encode_bilevel(np.zeros((20, 30), bool))
    wrong = encode_bilevel(np.zeros((20, 31), bool))
    decode_parts(raw_stream(2, 20, 30, good))
    with pytest.raises(BitstreamError, match="edge map"):
        decode_parts(raw_stream(2, 20, 30, wrong))
    palette = encode_palette(img, 32)                                # 20 x 30 grid (image smaller than 32)
    decode_parts(raw_stream(4, 20, 30, palette))
    with pytest.raises(BitstreamError, match="not the palette"):
        decode_parts(raw_stream(4, 20, 31, palette))
    with pytest.raises(BitstreamError, match="not a WebP"):
        decode_parts(raw_stream(4, 20, 30, b"\x89PNG\r\n\x1a\n" + bytes(20)))
    with pytest.raises(BitstreamError, match="WebP container says"):
        decode_parts(raw_stream(4, 20, 30, palette + b"\x00"))
    with pytest.raises(BitstreamError, match="fallback image"):
        decode_parts(raw_stream(16, 20, 31, palette))


def test_kept_region_boxes_in_streams_are_checked():
    crop = Image.new("RGB", (4, 4), (9, 9, 9))
    buf = io.BytesIO()
    crop.save(buf, "WEBP", quality=90)
    webp = buf.getvalue()

    def regions(*boxes):
        out = bytearray([1, 8, 10, 10, len(boxes)])
        for x0, y0 in boxes:
            out += bytes([x0, y0, 4, 4])
            put_varint(len(webp), out)
            out += webp
        return bytes(out)

    parts = decode_parts(regions((0, 0), (4, 0)))
    assert [r.box for r in parts.regions] == [(0, 0, 4, 4), (4, 0, 8, 4)]
    assert (parts.regions[0].pixels == webp_pixels(webp)).all()
    with pytest.raises(BitstreamError, match=r"\(8, 0, 12, 4\)"):       # outside the 10 x 10 image
        decode_parts(regions((8, 0)))
    with pytest.raises(BitstreamError, match="overlap"):
        decode_parts(regions((0, 0), (2, 2)))
    with pytest.raises(BitstreamError, match="canonical order"):
        decode_parts(regions((4, 0), (0, 0)))


def test_random_bytes_and_mutations_raise_only_the_stream_error(small):
    """200 seeded random streams (a valid version byte, random flags and bytes) and 200 mutations (1-3 bytes) of a
    real stream with every part: each decodes or raises BitstreamError, nothing else.  In this process: the
    bi-level coder's C++ decoder, the one native part besides libwebp, has its own crash-isolated fuzz test."""
    import random

    rng = random.Random(30)
    outcome = {"refused": 0, "decoded": 0}
    for case in range(400):
        if case < 200:
            d = bytes([1, rng.randrange(32)]) + bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        else:
            m = bytearray(small)
            for _ in range(rng.randint(1, 3)):
                m[rng.randrange(len(m))] = rng.randrange(256)
            d = bytes(m)
        try:
            inspect_parts(d)
            decode_parts(d)
        except BitstreamError:
            outcome["refused"] += 1
        except Exception as err:                                    # pragma: no cover - the failure to report
            pytest.fail(f"case {case}: {type(err).__name__}: {err} on {d.hex()}")
        else:
            outcome["decoded"] += 1
    assert outcome["refused"] >= 250, outcome


# --------------------------------------------------------------------------- never larger

def test_tiny_image_gets_the_fallback():
    img = coffee(16, 16)
    kept = parts_only(img, "a cup of coffee", edges=True, palette=32)
    with pytest.warns(FallbackUsed, match="stored instead"):
        data = encode_parts(img, "a cup of coffee", edges=True, palette=32)
    assert len(data) <= len(kept)
    info = inspect_parts(data)
    assert info["fallback"] and info["parts"] == ["fallback"]
    parts = decode_parts(data)
    assert parts.is_fallback and parts.prompt is None and parts.edges is None
    np.testing.assert_array_equal(parts.fallback, webp_pixels(unpack_parts(data).fallback))
    mse = np.mean((parts.fallback.astype(float) - img) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 30                       # WebP at quality >= 75 of a 16 x 16 crop


def test_fallback_stream_is_never_larger_than_the_parts():
    """The rule counts the fallback stream's own framing: across small images and prompt lengths, every fallback
    stream is at most as long as the parts stream it replaces."""
    chosen = 0
    for i, side in enumerate((8, 12, 16, 20, 24, 28)):
        for prompt in ("cup", "a cup of coffee on a saucer, seen from above"):
            img = coffee(side, side + i)
            kept = parts_only(img, prompt, edges=True, palette=8)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FallbackUsed)
                data = encode_parts(img, prompt, edges=True, palette=8)
            assert len(data) <= len(kept), (side, prompt, len(data), len(kept))
            chosen += inspect_parts(data)["fallback"]
    assert chosen >= 6


def test_small_parts_of_a_photo_are_kept_without_a_warning():
    img = coffee(300, 400)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackUsed)
        data = encode_parts(img, "a cup of coffee on a table", edges=False, palette=32)
    assert not inspect_parts(data)["fallback"]


def test_choose_fallback_fits_the_budget_at_the_highest_quality():
    img = coffee(48, 64)
    ref = choose_fallback(img, 10 ** 6)
    assert ref.use_fallback and ref.quality == 100
    budget = ref.reference_bytes + 200
    choice = choose_fallback(img, budget, overhead=7)
    assert choice.use_fallback and 75 <= choice.quality < 100 and len(choice.webp) + 7 <= budget
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "WEBP", quality=choice.quality + 1, method=6)
    assert len(buf.getvalue()) + 7 > budget                          # one quality step more no longer fits
    kept = choose_fallback(img, ref.reference_bytes - 1)
    assert not kept.use_fallback and kept.webp is None and "parts kept" in kept.message


# --------------------------------------------------------------------------- kept regions

def test_boxes_outside_or_overlapping_are_refused_by_name():
    img = coffee(100, 131)
    with pytest.raises(ValueError, match=r"\(120, 5, 140, 20\).*not inside"):
        parts_only(img, "x", keep=[(0, 0, 10, 10), (120, 5, 140, 20)])
    with pytest.raises(ValueError, match=r"\(3, 3, 3, 9\)"):
        parts_only(img, "x", keep=[(3, 3, 3, 9)])
    with pytest.raises(ValueError, match=r"\(-1, 0, 5, 5\)"):
        parts_only(img, "x", keep=[(-1, 0, 5, 5)])
    with pytest.raises(ValueError, match=r"\(0, 0, 10, 10\) and \(5, 5, 20, 20\) overlap"):
        parts_only(img, "x", keep=[(5, 5, 20, 20), (0, 0, 10, 10)])
    with pytest.raises(ValueError, match="at most 16"):
        parts_only(img, "x", keep=[(i, 0, i + 1, 1) for i in range(MAX_REGIONS + 1)])
    with pytest.raises(ValueError, match="four integers"):
        parts_only(img, "x", keep=[(0.5, 0, 4, 4)])


def test_regions_come_back_in_canonical_order_and_paste():
    img = coffee(60, 80)
    data = parts_only(img, None, edges=False, palette=None, keep=[(40, 30, 60, 50), (0, 0, 16, 16)])
    parts = decode_parts(data)
    assert [r.box for r in parts.regions] == [(0, 0, 16, 16), (40, 30, 60, 50)]
    base = np.zeros_like(img)
    out = paste_regions(base, parts.regions)
    np.testing.assert_array_equal(out[30:50, 40:60], parts.regions[1].pixels)
    np.testing.assert_array_equal(out[:16, :16], parts.regions[0].pixels)
    mask = np.ones(img.shape[:2], bool)
    mask[30:50, 40:60] = mask[:16, :16] = False
    assert (out[mask] == 0).all() and (base == 0).all()
    with pytest.raises(ValueError, match="pixels of shape"):
        paste_regions(base, [KeptRegion((0, 0, 2, 2), np.zeros((3, 2, 3), np.uint8))])


# --------------------------------------------------------------------------- prompt

def test_prompt_rules():
    img = coffee(8, 8)
    with pytest.raises(ValueError, match="prompt=None"):
        parts_only(img, "")
    with pytest.raises(TypeError, match="str"):
        parts_only(img, b"bytes")
    with pytest.raises(ValueError, match="control character"):
        parts_only(img, "a\x00b")
    with pytest.raises(ValueError, match="surrogate"):
        parts_only(img, "a\ud800")
    with pytest.raises(ValueError, match="nothing to send"):
        parts_only(img, None, edges=False, palette=None)
    assert decode_parts(parts_only(img, "tab\tand\nnewline", edges=False, palette=None)).prompt == "tab\tand\nnewline"
    assert inspect_parts(parts_only(img, None, edges=True, palette=None))["parts"] == ["edges"]


def test_caption_needs_a_local_model_and_never_returns_empty(tmp_path, monkeypatch):
    img = coffee(8, 8)
    monkeypatch.delenv(CAPTION_ENV, raising=False)
    with pytest.raises(CaptionUnavailable, match=f"{CAPTION_ENV}.*prompt=None"):
        caption_image(img)
    with pytest.raises(CaptionUnavailable, match="no config.json"):
        caption_image(img, tmp_path)
    monkeypatch.setenv(CAPTION_ENV, str(tmp_path / "absent"))
    with pytest.raises(CaptionUnavailable, match="absent"):
        caption_image(img)


# --------------------------------------------------------------------------- benchmark

def test_benchmark_runs_and_its_columns_add_up():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks import semantic_parts

    rows = semantic_parts.run(["chelsea"], repeats=1)
    r = rows[0]
    assert [row["image"] for row in rows] == ["chelsea", "**total** (saving: mean)"] and r["size"] == "451x300"
    assert r["prompt"] == len(semantic_parts.PROMPTS["chelsea"]) and r["fallback"] == "no"
    assert r["prompt"] + r["edges"] + r["palette"] + r["region"] + r["framing"] == r["+region"]
    assert r["text"] < r["+edges"] < r["+palette"] < r["+region"] < r["webp75"] < r["png"]
    assert r["save_+region"] == 1 - r["+region"] / r["png"] and r["bpp"] == 8 * r["+region"] / (451 * 300)


def test_caption_comes_from_the_local_model_and_is_never_empty(tmp_path, monkeypatch):
    """A stand-in ``transformers`` module (loading BLIP itself needs its weights): the folder is loaded offline,
    the caption's spacing is normalised, and an empty caption is an error, not an empty prompt."""
    import types

    (tmp_path / "config.json").write_text("{}")
    seen = {}

    class Loaded:
        caption = ""

        @classmethod
        def from_pretrained(cls, folder, local_files_only=False):
            seen[cls.__name__] = (Path(folder), local_files_only)
            return cls()

        def eval(self):
            return self

        def __call__(self, images, return_tensors):
            seen["image_size"] = images.size
            return {}

        def generate(self, max_new_tokens):
            return [[1, 2, 3]]

        def decode(self, tokens, skip_special_tokens):
            return Loaded.caption

    fake = types.ModuleType("transformers")
    fake.BlipProcessor = type("BlipProcessor", (Loaded,), {})
    fake.BlipForConditionalGeneration = type("BlipForConditionalGeneration", (Loaded,), {})
    monkeypatch.setitem(sys.modules, "transformers", fake)
    monkeypatch.setenv(CAPTION_ENV, str(tmp_path))
    Loaded.caption = "  a cup of\ncoffee  "
    assert caption_image(coffee(10, 14)) == "a cup of coffee"
    assert seen == {"BlipProcessor": (tmp_path, True), "BlipForConditionalGeneration": (tmp_path, True),
                    "image_size": (14, 10)}
    Loaded.caption = " \n "
    with pytest.raises(CaptionUnavailable, match="empty caption"):
        caption_image(coffee(10, 14))

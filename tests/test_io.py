"""Image I/O: orientation, modes, bit depths, errors, saving, and input expansion (diffeic.io)."""
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import rgb16_values, write_png16

from diffeic.io import expand_images, expand_paths, image_size, load_image, save_image, to_uint8, \
    write_bytes_atomic


@pytest.fixture(scope="module")
def rgb8():
    """A 48x64 (HxW) crop of a real photo, uint8 (H,W,3): non-square so transposes change the shape."""
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[80:128, 160:224])


def as_tensor(array: np.ndarray, scale: float) -> torch.Tensor:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return torch.from_numpy(array.astype(np.float32) / np.float32(scale)).permute(2, 0, 1)


# ------------------------------------------------------------------------------------------ basics
def test_png_loads_exactly_as_float_chw(tmp_path, rgb8):
    Image.fromarray(rgb8).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert x.dtype == torch.float32 and x.shape == (3, 48, 64)
    assert torch.equal(x, as_tensor(rgb8, 255))


# EXIF orientation → the transform a viewer applies, written with independent torch ops on (C,H,W).
ORIENTATIONS = {
    2: lambda x: x.flip(2),
    3: lambda x: x.flip(1).flip(2),
    4: lambda x: x.flip(1),
    5: lambda x: x.transpose(1, 2),
    6: lambda x: torch.rot90(x, -1, (1, 2)),       # rotate 90° clockwise
    7: lambda x: x.transpose(1, 2).flip(1).flip(2),
    8: lambda x: torch.rot90(x, 1, (1, 2)),        # rotate 90° counter-clockwise
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(tmp_path, rgb8, orientation):
    plain, tagged = tmp_path / "plain.jpg", tmp_path / "tagged.jpg"
    Image.fromarray(rgb8).save(plain, quality=95)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb8).save(tagged, quality=95, exif=exif)   # same pixels, same encoder: same decode
    stored = load_image(plain)
    shown = load_image(tagged)
    expected = ORIENTATIONS[orientation](stored)
    assert shown.shape == expected.shape
    assert torch.equal(shown, expected)
    if orientation in (5, 6, 7, 8):
        assert shown.shape == (3, 64, 48)


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grayscale_becomes_three_equal_channels(tmp_path, rgb8, mode):
    gray = Image.fromarray(rgb8).convert(mode)
    gray.save(tmp_path / "g.png")
    x = load_image(tmp_path / "g.png")
    expected = np.asarray(gray.convert("L"))
    assert x.shape == (3, 48, 64)
    assert torch.equal(x, as_tensor(expected, 255))


def test_16bit_grayscale_png_scaled_by_65535(tmp_path):
    values = (np.arange(6 * 9).reshape(6, 9) * 1213 + 7).astype(np.uint16)
    assert values.max() > 255
    Image.fromarray(values).save(tmp_path / "g16.png")          # Pillow: mode I;16
    x = load_image(tmp_path / "g16.png")
    assert torch.equal(torch.round(x * 65535).to(torch.int64), as_tensor(values, 1).to(torch.int64))


def test_16bit_rgb_png_values_exact(tmp_path):
    values = rgb16_values()
    write_png16(tmp_path / "rgb16.png", values)
    x = load_image(tmp_path / "rgb16.png")
    assert x.shape == (3, 5, 7)
    assert torch.equal(torch.round(x * 65535).to(torch.int64), as_tensor(values, 1).to(torch.int64))


def test_16bit_rgba_png_values_exact_and_alpha_warned(tmp_path):
    values = rgb16_values()
    rgba = np.concatenate([values, np.full(values.shape[:2] + (1,), 30000, np.uint16)], axis=2)
    write_png16(tmp_path / "rgba16.png", rgba)
    with pytest.warns(UserWarning, match="rgba16.png"):
        x = load_image(tmp_path / "rgba16.png")
    assert torch.equal(torch.round(x * 65535).to(torch.int64), as_tensor(values, 1).to(torch.int64))


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_16bit_rgb_tiff_values_exact(tmp_path, compression):
    tifffile = pytest.importorskip("tifffile")       # only to write the file; reading is Pillow's
    values = rgb16_values()
    tifffile.imwrite(tmp_path / "rgb16.tif", values, compression=compression, photometric="rgb")
    x = load_image(tmp_path / "rgb16.tif")
    assert torch.equal(torch.round(x * 65535).to(torch.int64), as_tensor(values, 1).to(torch.int64))


def test_cmyk_is_converted_to_rgb(tmp_path):
    cmyk = np.zeros((4, 6, 4), np.uint8)
    cmyk[:, :3, 0] = 255            # left half pure cyan → (0, 1, 1)
    cmyk[:, 3:, 3] = 255            # right half pure black → (0, 0, 0)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.tif")
    x = load_image(tmp_path / "c.tif")
    assert x.shape == (3, 4, 6)
    assert torch.equal(x[:, 0, 0], torch.tensor([0.0, 1.0, 1.0]))
    assert torch.equal(x[:, 0, 5], torch.zeros(3))
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.jpg", quality=95)
    assert load_image(tmp_path / "c.jpg").shape == (3, 4, 6)


# ------------------------------------------------------------------------------------------ alpha
def _palette_with_transparency(rgb8):
    im = Image.fromarray(rgb8).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    im.info["transparency"] = 0
    return im


@pytest.mark.parametrize("make", [
    lambda a: Image.fromarray(np.concatenate([a, np.full(a.shape[:2] + (1,), 7, np.uint8)], axis=2)),   # RGBA
    lambda a: Image.fromarray(a).convert("LA"),
    _palette_with_transparency,
], ids=["RGBA", "LA", "P+transparency"])
def test_alpha_dropped_with_warning_naming_file(tmp_path, rgb8, make):
    im = make(rgb8)
    im.save(tmp_path / "alpha.png", **({"transparency": 0} if im.mode == "P" else {}))
    with pytest.warns(UserWarning, match=r"alpha\.png.*alpha") as record:
        x = load_image(tmp_path / "alpha.png")
    assert len(record) == 1
    assert x.shape == (3, 48, 64)
    if im.mode == "RGBA":                     # colours kept as stored despite alpha = 7 (not composited)
        assert torch.equal(x, as_tensor(rgb8, 255))


def test_no_warning_for_opaque_rgb(tmp_path, rgb8):
    Image.fromarray(rgb8).save(tmp_path / "a.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image(tmp_path / "a.png")


# ------------------------------------------------------------------------------------------ errors
def _random_bytes(p):
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())


def _truncated_png(p):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 9).save(p.with_suffix(".full.png"))
    p.write_bytes(p.with_suffix(".full.png").read_bytes()[:70])


@pytest.mark.parametrize("make,why", [
    (_random_bytes, "not an image"),
    (_truncated_png, "corrupt or truncated"),
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "is a directory"),
], ids=["random-bytes", "truncated", "missing", "directory"])
def test_unreadable_input_raises_value_error_naming_file(tmp_path, make, why):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(ValueError, match=why) as info:
        load_image(path)
    assert str(info.value).startswith(f"{path}:")


def _png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _png(width, height, raw_rows: bytes, interlace=0):
    """An 8-bit RGB PNG with valid chunks whose zlib stream holds exactly ``raw_rows``."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(raw_rows))
            + _png_chunk(b"IEND", b""))


def test_png_with_image_data_ending_on_a_row_boundary_is_refused(tmp_path, rgb8):
    # issue 21.3: Pillow loads this silently, the last 16 of 48 rows black.
    h, w, _ = rgb8.shape
    rows = [b"\x00" + rgb8[r].tobytes() for r in range(h)]
    (tmp_path / "short.png").write_bytes(_png(w, h, b"".join(rows[:32])))
    im = Image.open(tmp_path / "short.png")
    im.load()
    assert (np.asarray(im)[32:] == 0).all()             # the silent failure this guards against
    with pytest.raises(ValueError, match="truncated image data") as info:
        load_image(tmp_path / "short.png")
    assert str(info.value).startswith(f"{tmp_path / 'short.png'}:")
    assert f"{32 * (1 + 3 * w)} of the {h * (1 + 3 * w)} bytes" in str(info.value)
    # the same chunks with every row present load exactly
    (tmp_path / "full.png").write_bytes(_png(w, h, b"".join(rows)))
    assert torch.equal(load_image(tmp_path / "full.png"), as_tensor(rgb8, 255))


def test_png_data_size_rule_counts_adam7_passes():
    from diffeic.io import _png_raw_size
    # 5x3 pixels, 24 bits each; Adam7 passes (x0, y0, dx, dy), counted independently with range():
    expected = 0
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                           (0, 1, 1, 2)):
        pw, ph = len(range(x0, 5, dx)), len(range(y0, 3, dy))
        expected += ph * (1 + 3 * pw) if pw and ph else 0
    assert _png_raw_size(5, 3, 24, interlace=1) == expected == 4 + 4 + 0 + 4 + 10 + 2 * 7 + 16
    assert _png_raw_size(5, 3, 24, interlace=0) == 3 * 16
    assert _png_raw_size(9, 2, 1, interlace=0) == 2 * (1 + 2)          # 1-bit rows round up to bytes


def test_declared_size_is_refused_before_decoding(tmp_path):
    # issue 14.8: a few hundred bytes declaring 13000x13000 (about 0.5 GB of pixels) must cost nothing.
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png(13000, 13000, b"\x00" * 100))
    assert bomb.stat().st_size < 200
    import tracemalloc
    tracemalloc.start()
    with pytest.raises(ValueError, match=r"13000x13000 \(width x height\).*refused before decoding") as info:
        load_image(bomb, max_pixels=64 * 1024 * 1024)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10 * 2 ** 20
    assert str(info.value).startswith(f"{bomb}:")
    with pytest.raises(ValueError, match="refused before decoding"):
        image_size(bomb, max_pixels=1000)
    assert image_size(bomb, max_pixels=2 * 10 ** 8) == (13000, 13000)
    with pytest.raises(ValueError, match="limit of 89,478,485"):     # the default: Pillow's bomb limit
        image_size(bomb)
    with pytest.raises(ValueError, match="more than the limit of 1,000"):
        load_image(bomb, max_pixels=1000)


# ------------------------------------------------------------------------------------------ saving
def test_save_png_round_trip_is_exact(tmp_path, rgb8):
    x = as_tensor(rgb8, 255)
    save_image(x, tmp_path / "out.png")
    assert Image.open(tmp_path / "out.png").mode == "RGB"
    assert torch.equal(load_image(tmp_path / "out.png"), x)


def test_to_uint8_rounds_and_clamps():
    x = torch.tensor([-0.5, 0.0, 0.2 / 255, 0.7 / 255, 100.4 / 255, 100.6 / 255, 1.0, 1.7]).view(1, 1, 8)
    assert to_uint8(x).tolist() == [[0, 0, 0, 1, 100, 101, 255, 255]]


@pytest.mark.parametrize("suffix,fmt,exact", [(".jpg", "JPEG", False), (".webp", "WEBP", True),
                                              (".PNG", "PNG", True)])
def test_save_format_follows_suffix(tmp_path, rgb8, suffix, fmt, exact):
    x = as_tensor(rgb8, 255)
    save_image(x, tmp_path / f"out{suffix}")
    assert Image.open(tmp_path / f"out{suffix}").format == fmt
    y = load_image(tmp_path / f"out{suffix}")
    assert torch.equal(y, x) if exact else (y - x).abs().mean() < 0.02


@pytest.mark.parametrize("x,err", [
    (torch.full((3, 4, 4), float("nan")), ValueError),
    (torch.zeros(4, 4), ValueError),
    (torch.zeros(3, 4, 4, dtype=torch.uint8), TypeError),
    (np.zeros((3, 4, 4)), TypeError),
])
def test_save_rejects_bad_tensors_without_writing(tmp_path, x, err):
    with pytest.raises(err):
        save_image(x, tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_save_rejects_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.gif"):
        save_image(torch.zeros(3, 2, 2), tmp_path / "out.gif")
    assert list(tmp_path.iterdir()) == []


def test_exclusive_write_refuses_an_existing_target(tmp_path, rgb8):
    # issue 21.4: two writers without --force: the second must fail, not replace the first.
    target = tmp_path / "out.deic"
    write_bytes_atomic(target, b"first", overwrite=False)
    with pytest.raises(FileExistsError, match="already exists"):
        write_bytes_atomic(target, b"second", overwrite=False)
    save_image(as_tensor(rgb8, 255), tmp_path / "x.png", overwrite=False)
    with pytest.raises(FileExistsError):
        save_image(as_tensor(rgb8, 255), tmp_path / "x.png", overwrite=False)
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.deic", "x.png"]     # no temp files left
    write_bytes_atomic(target, b"third")                                          # overwrite=True replaces
    assert target.read_bytes() == b"third"


def test_write_works_for_names_at_the_file_system_limit(tmp_path):
    # issue 14.13: the temporary name must not be longer than the target's.
    target = tmp_path / ("n" * 250 + ".deic")
    write_bytes_atomic(target, b"abc")
    assert target.read_bytes() == b"abc"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_files_are_written_with_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_bytes_atomic(tmp_path / "a.deic", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.deic").stat().st_mode & 0o777 == 0o640


# ------------------------------------------------------------------------------------------ expansion
@pytest.fixture
def tree(tmp_path):
    for name in ["b.png", "a.jpg", "sub/c.JPG", "sub/deep/d.webp", "sub/notes.txt", "x.deic"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def test_directory_expands_recursively_to_sorted_images(tree):
    got = expand_images([tree])
    assert got == [tree / "a.jpg", tree / "b.png", tree / "sub/c.JPG", tree / "sub/deep/d.webp"]


def test_globs_and_explicit_files(tree):
    assert expand_images([str(tree / "*.png")]) == [tree / "b.png"]
    assert expand_images([str(tree / "**" / "*.webp")]) == [tree / "sub/deep/d.webp"]
    assert expand_paths([str(tree / "**")], [".deic"]) == [tree / "x.deic"]
    # an explicitly named file is kept whatever its suffix; duplicates collapse, first order wins
    assert expand_images([tree / "sub/notes.txt", tree / "b.png", tree]) == [
        tree / "sub/notes.txt", tree / "b.png", tree / "a.jpg", tree / "sub/c.JPG", tree / "sub/deep/d.webp"]


@pytest.mark.timeout(60)
def test_symlink_cycles_are_followed_once(tree):
    # issue 14.10: two links to "." made 'dir/**/*.png' run forever (glob follows the cycle).
    (tree / "loop1").symlink_to(".")
    (tree / "sub" / "loop2").symlink_to("..")
    (tree / "elsewhere").mkdir()
    (tree / "elsewhere" / "e.png").write_bytes(b"")
    (tree / "sub" / "link_to_elsewhere").symlink_to(tree / "elsewhere")
    expected_real = {tree / "a.jpg", tree / "b.png", tree / "sub/c.JPG", tree / "sub/deep/d.webp",
                     tree / "elsewhere/e.png"}
    for item in [tree, str(tree / "**" / "*.*"), str(tree / "**")]:
        got = expand_images([item])
        assert {p.resolve() for p in got} == {p.resolve() for p in expected_real}
        assert len(got) == len(expected_real)
    assert expand_images([str(tree / "**" / "*.png")]) == [tree / "b.png", tree / "elsewhere/e.png"]


@pytest.mark.parametrize("item,why", [("missing.png", "no such file"), ("*.tif", "matches no"),
                                      ("empty", "holds no")])
def test_expansion_errors_name_the_item(tree, item, why):
    (tree / "empty").mkdir()
    with pytest.raises(ValueError, match=why) as info:
        expand_images([str(tree / item)])
    assert str(info.value).startswith(str(tree / item))

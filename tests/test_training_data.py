"""Training data: the paper's crop augmentation ([Li2024] Sec. IV-A), unreadable files, LSDIR error, sampler."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import rgb16_values, write_png16
from diffeic.training.data import (CropSpec, DatasetNotFoundError, DiffEICDataModule, RandomCropDataset,
                                   ResumableDistributedSampler, ValidationDataset, find_images, paper_crop)


def _image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture
def folder(tmp_path):
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    for i, (h, w) in enumerate([(300, 200), (150, 260), (90, 90)]):
        _image(h, w, i).save((sub if i else tmp_path) / f"img{i}.png")
    return tmp_path


@pytest.mark.parametrize("hw", [(700, 1300), (512, 512), (2000, 1100)])
def test_paper_crop_size_range_and_dtype(hw):
    spec = CropSpec(512, 512, 640)
    x = paper_crop(_image(*hw), spec, random.Random(1))
    assert x.shape == (3, 512, 512) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_small_image_is_upscaled_not_rejected():
    spec = CropSpec(64, 64, 80)
    img = Image.fromarray(np.full((20, 30, 3), 77, np.uint8))
    x = paper_crop(img, spec, random.Random(0))
    assert x.shape == (3, 64, 64)
    assert torch.allclose(x, torch.full_like(x, 77 / 255), atol=1 / 255)   # flat colour survives bicubic


def test_hflip_mirrors_the_same_crop():
    img = _image(100, 140)
    flipped = 0
    for seed in range(12):
        a = paper_crop(img, CropSpec(64, 64, 80, hflip=True), random.Random(seed))
        b = paper_crop(img, CropSpec(64, 64, 80, hflip=False), random.Random(seed))
        if torch.equal(a, b.flip(-1)) and not torch.equal(a, b):
            flipped += 1
        else:
            assert torch.equal(a, b)
    assert 2 <= flipped <= 10                       # p = 0.5 over 12 seeds


def test_short_side_scale_uses_the_whole_range():
    # A 1×N ramp image: the crop's value span tells the resize scale, which must vary with S.
    ramp = np.tile(np.linspace(0, 255, 1024, dtype=np.float64)[None, :, None], (512, 1, 3)).astype(np.uint8)
    spans = set()
    for s in range(8):
        row = paper_crop(Image.fromarray(ramp), CropSpec(512, 512, 640, hflip=False), random.Random(s))[0, 0]
        spans.add(round(float(row.max() - row.min()), 3))
    assert len(spans) > 2


def test_crop_spec_validation():
    with pytest.raises(ValueError, match="multiple of 64"):
        CropSpec(100, 100, 120)
    with pytest.raises(ValueError, match="short_min"):
        CropSpec(512, 400, 640)


def test_find_images_recursive_sorted(folder):
    files = find_images(folder)
    assert len(files) == 3 and files == sorted(files)
    assert find_images("samples")[0] == "skimage:astronaut"


def test_missing_folder_explains_lsdir(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="LSDIR") as err:
        find_images(tmp_path / "nothing")
    assert "ofsoundof/LSDIR" in str(err.value) and "--data.root" in str(err.value)


def test_unreadable_file_is_skipped_with_one_warning(folder):
    (folder / "a" / "broken.png").write_bytes(b"not a png at all")
    files = find_images(folder)
    bad = files.index(folder / "a" / "broken.png")
    ds = RandomCropDataset(files, CropSpec(64, 64, 80), seed=0)
    with pytest.warns(RuntimeWarning, match="broken.png"):
        x = ds[bad]
    assert x.shape == (3, 64, 64)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # reported once, then silently skipped
        assert ds[bad].shape == (3, 64, 64)


def test_decompression_bomb_is_skipped_counted_and_warned_once(folder):
    # issue 14.8: DecompressionBombError is not an OSError, so it used to stop the run.
    import struct
    import zlib

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    side = 20000                                   # 4e8 pixels: over twice Pillow's limit -> error, not warning
    (folder / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                                      + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    files = find_images(folder)
    bomb = files.index(folder / "bomb.png")
    ds = RandomCropDataset(files, CropSpec(64, 64, 80), seed=0)
    assert ds.skipped == 0
    with pytest.warns(RuntimeWarning, match="bomb.png"):
        assert ds[bomb].shape == (3, 64, 64)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ds[bomb].shape == (3, 64, 64)
    assert ds.skipped == 1


def test_crops_depend_only_on_seed_and_key(folder):
    files = find_images(folder)
    a = RandomCropDataset(files, CropSpec(64, 64, 80), seed=3)
    b = RandomCropDataset(files, CropSpec(64, 64, 80), seed=3)
    assert torch.equal(a[4], b[4]) and not torch.equal(a[1], a[4])   # key 4 = epoch 1 of image 1


def test_sampler_ranks_disjoint_epochs_differ_and_resume_skips():
    ds = list(range(10))
    r0, r1 = (ResumableDistributedSampler(ds, 2, r, seed=5) for r in (0, 1))
    i0, i1 = list(r0), list(r1)
    assert len(i0) == len(i1) == 5 and not set(i0) & set(i1)
    r0.set_epoch(1)
    e1 = list(r0)
    assert all(k >= 10 for k in e1) and [k - 10 for k in e1] != i0    # keys carry the epoch, new order
    r0.resume(1, 2)
    assert list(r0) == e1[2:] and list(r0) == e1                        # skip applies once


def test_datamodule_resume_state_skips_trained_batches(folder):
    dm = DiffEICDataModule(root="samples", val_root=None, crop_size=64, short_side=(64, 80), batch_size=2,
                           num_workers=0, seed=0)
    dm.setup("fit")
    full = [k for batch in dm.train_dataloader().batch_sampler for k in batch]
    dm.load_state_dict({"batches_done": 1})
    resumed = [k for batch in dm.train_dataloader().batch_sampler for k in batch]
    assert resumed == full[2:]


def test_elongated_image_is_cropped_to_a_bounded_aspect_before_resizing(monkeypatch):
    # A 1x3000 strip used to be resized to ~64 x 192,000 pixels (9 GB at 512 crops) before cropping.
    sizes = []
    original = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        sizes.append(size)
        return original(self, size, *args, **kwargs)
    monkeypatch.setattr(Image.Image, "resize", spy)
    strip = Image.fromarray(np.tile(np.arange(3000, dtype=np.uint8)[None, :, None], (1, 1, 3)))
    x = paper_crop(strip, CropSpec(64, 64, 80), random.Random(0))
    assert x.shape == (3, 64, 64)
    assert sizes and max(w * h for w, h in sizes) <= 80 * 4 * 80     # long side <= 4 x the short side S
    tall = paper_crop(strip.transpose(Image.Transpose.ROTATE_90), CropSpec(64, 64, 80), random.Random(0))
    assert tall.shape == (3, 64, 64)


def test_ordinary_photos_draw_the_same_crops_as_before():
    # The aspect bound draws no random number for photos within 4:1, so their crops are unchanged:
    # pinned against the crop computed by hand from the same RNG stream.
    img = _image(300, 451, 5)
    rng = random.Random(3)
    s = rng.randint(64, 80)
    half = img
    while min(half.size) >= 2 * s:                             # BOX halving first (official ``random_crop_arr``)
        half = half.resize((half.size[0] // 2, half.size[1] // 2), resample=Image.BOX)
    w, h = half.size
    ref = half.resize((max(64, round(w * s / h)), max(64, round(h * s / h))), resample=Image.BICUBIC)
    arr = np.asarray(ref)
    top, left = rng.randrange(arr.shape[0] - 63), rng.randrange(arr.shape[1] - 63)
    arr = arr[top:top + 64, left:left + 64]
    if rng.random() < 0.5:
        arr = arr[:, ::-1]
    want = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 255
    assert torch.equal(paper_crop(img, CropSpec(64, 64, 80), random.Random(3)), want)


# ------------------------------------------------------------------------------ one image reader
def _exif_rotated_jpeg(path):
    exif = Image.Exif()
    exif[0x0112] = 6                                    # "rotate 90° clockwise to display"
    _image(24, 40, 7).save(path, quality=95, exif=exif)


def _gray16_png(path):
    # Values above 255: Pillow's I;16 → RGB conversion clips them to white.
    write_png16(path, (np.arange(6 * 9).reshape(6, 9, 1) * 1201 + 300).astype(np.uint16))


def _rgb16_png(path):
    # Non-zero low bytes: reading the high byte only (truncation) differs from rounding v/65535·255.
    write_png16(path, rgb16_values(6, 9))


@pytest.mark.parametrize("name, write", [("rot.jpg", _exif_rotated_jpeg), ("g16.png", _gray16_png),
                                         ("c16.png", _rgb16_png)])
def test_training_sees_the_pixels_the_codec_reader_sees(tmp_path, name, write):
    """Training reads files through diffeic.io.load_image (EXIF orientation, 16-bit scaling), rounded
    to 8 bits for the augmentation, so it trains on the image that ``compress`` would be given."""
    from diffeic.io import load_image, to_uint8

    write(tmp_path / name)
    want = torch.from_numpy(to_uint8(load_image(tmp_path / name))).permute(2, 0, 1).float() / 255
    got = ValidationDataset([tmp_path / name], size=None)[0]
    assert got.shape == want.shape and torch.equal(got, want)
    assert (got - load_image(tmp_path / name)).abs().max() <= 0.5 / 255 + 1e-6


def test_training_and_evaluation_find_the_same_image_suffixes(tmp_path):
    from diffeic.evaluation.datasets import _list_images
    from diffeic.io import IMAGE_SUFFIXES

    for i, suffix in enumerate(IMAGE_SUFFIXES + (".txt", ".deic")):
        (tmp_path / f"f{i}{suffix.upper() if i % 2 else suffix}").write_bytes(b"")
    found = {p.suffix.lower() for p in find_images(tmp_path)}
    assert found == set(IMAGE_SUFFIXES)
    assert {p.suffix.lower() for p in _list_images(tmp_path)} == set(IMAGE_SUFFIXES)

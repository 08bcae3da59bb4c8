"""Datasets: offline samples, folders, the paper's preprocessing, counts, checksums, offline errors."""
import urllib.error

import numpy as np
import pytest
from PIL import Image

from diffeic.evaluation import datasets as D


def test_samples_are_colour_uint8_photos_offline():
    from diffeic.samples import HELDOUT_PHOTOS, TRAIN_PHOTOS

    ds = D.load_dataset("samples", limit=3)
    assert [im.name for im in ds.images] == ["chelsea", "coffee"] == list(HELDOUT_PHOTOS)
    assert not set(HELDOUT_PHOTOS) & set(TRAIN_PHOTOS)      # the demo evaluates on photos it never trained on
    a = ds.images[0].load()
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 and ds.preprocessing == D.NATIVE


def test_folder_is_recursive_sorted_and_native(tmp_path):
    (tmp_path / "b").mkdir()
    Image.fromarray(np.full((10, 20, 3), 7, np.uint8)).save(tmp_path / "b" / "x.png")
    Image.fromarray(np.full((30, 40), 9, np.uint8)).save(tmp_path / "a.jpg")      # greyscale → RGB
    (tmp_path / "notes.txt").write_text("not an image")
    ds = D.load_dataset(f"folder:{tmp_path}")
    assert [im.name for im in ds.images] == ["a", "b__x"]
    assert ds.images[0].load().shape == (30, 40, 3) and ds.images[1].load().shape == (10, 20, 3)
    with pytest.raises(D.DatasetUnavailable, match="does not exist"):
        D.load_dataset(f"folder:{tmp_path / 'b' / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(D.DatasetUnavailable, match="no images"):
        D.load_dataset(f"folder:{tmp_path / 'empty'}")


@pytest.mark.parametrize("h,w", [(1200, 1200), (1000, 1500), (500, 900)])
def test_resize_crop_gives_768_square(h, w):
    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = D.resize_crop(img)
    assert out.shape == (768, 768, 3) and out.dtype == np.uint8


def test_resize_crop_keeps_the_centre():
    img = np.zeros((768, 1536, 3), np.uint8)
    img[:, 384:1152] = 255                        # the central 768 columns are white
    assert D.resize_crop(img).min() == 255


def test_offline_download_is_one_clear_error_naming_url_and_folder(monkeypatch, tmp_path):
    def offline(url, dest):
        raise urllib.error.URLError("Name or service not known")
    monkeypatch.setattr(D, "_fetch", offline)
    with pytest.raises(D.DatasetUnavailable) as err:
        D.load_dataset("kodak", data_dir=tmp_path)
    msg = str(err.value)
    assert "kodim01.png" in msg and str(tmp_path / "kodak") in msg and "24" in msg


def test_network_timeout_is_short():
    assert D.NETWORK_TIMEOUT_S <= 15


def test_tecnick_has_no_direct_download_and_says_where(tmp_path):
    with pytest.raises(D.DatasetUnavailable, match="drive.google.com") as err:
        D.load_dataset("tecnick", data_dir=tmp_path)
    assert "140" in str(err.value)


def test_wrong_count_is_refused_naming_the_expected_count(tmp_path):
    folder = tmp_path / "kodak"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / f"kodim{i:02d}.png")
    with pytest.raises(D.DatasetUnavailable, match="expected 24 images .* found 3"):
        D.load_dataset("kodak", data_dir=tmp_path, download=False)


def test_checksums_recorded_then_verified(tmp_path, monkeypatch):
    monkeypatch.setitem(D.SPECS, "kodak", D.DatasetSpec("kodak", 2, D.NATIVE))
    folder = tmp_path / "kodak"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(folder / f"kodim{i:02d}.png")
    ds = D.load_dataset("kodak", data_dir=tmp_path, download=False)
    assert len(ds.images) == 2 and (folder / D.CHECKSUM_FILE).read_text().count("kodim") == 2
    D.load_dataset("kodak", data_dir=tmp_path, download=False)          # unchanged: fine
    Image.fromarray(np.full((8, 8, 3), 99, np.uint8)).save(folder / "kodim01.png")
    with pytest.raises(D.DatasetUnavailable, match="differ"):
        D.load_dataset("kodak", data_dir=tmp_path, download=False)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown dataset"):
        D.load_dataset("imagenet")

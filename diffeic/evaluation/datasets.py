"""Evaluation datasets: Kodak, Tecnick, CLIC2020 (downloaded and cached), bundled samples, any folder.

Preprocessing follows the paper ([Li2024] Sec. IV-A): Kodak at native size and orientation; Tecnick
and CLIC2020 resized so the shorter side is 768 px (torchvision bilinear with antialiasing, as the
CDC code the paper cites) and centre-cropped to 768×768.  Images are handed out as uint8 RGB
``(H, W, 3)`` arrays, loaded lazily so a 428-image set does not sit in memory.

Cache: ``--data-dir``, else ``$DIFFEIC_DATA``, else ``~/.cache/diffeic/data``; each set lives in
``<data dir>/<name>/``.  A set's file count is checked (a wrong count is refused, naming the
expected one) and the sha256 of every image is recorded in ``SHA256SUMS`` on first use and
verified afterwards.  No network access takes longer than :data:`NETWORK_TIMEOUT_S` per request.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..io import IMAGE_SUFFIXES, load_image_8bit
from ..util import file_sha256

NETWORK_TIMEOUT_S = 10.0
CROP_768 = "shorter side -> 768 px (torchvision resize, bilinear, antialias=True), centre crop 768x768"
NATIVE = "none (native size and orientation)"
CHECKSUM_FILE = "SHA256SUMS"


class DatasetUnavailable(RuntimeError):
    """A dataset is missing, incomplete or corrupt; the message says what to download and where."""


@dataclass(frozen=True)
class DatasetSpec:
    """A downloadable evaluation set."""

    name: str
    count: int
    preprocessing: str
    #: Files to fetch (images, or zip archives to extract); empty = manual download only.
    urls: Tuple[str, ...] = ()
    #: Where a person gets the set (shown in errors).
    homepage: str = ""
    #: sha256 of downloaded files, where a trustworthy value is known (none are published for these).
    known_sha256: Dict[str, str] = field(default_factory=dict)


SPECS: Dict[str, DatasetSpec] = {
    "kodak": DatasetSpec(
        "kodak", 24, NATIVE,
        urls=tuple(f"http://r0k.us/graphics/kodak/kodak/kodim{i:02d}.png" for i in range(1, 25)),
        homepage="http://r0k.us/graphics/kodak/"),
    "tecnick": DatasetSpec(
        "tecnick", 140, CROP_768,
        # The 140-image selection is only available as the authors' Drive folder (the old
        # TESTIMAGES archive on SourceForge holds 100 images and would be refused by the count).
        homepage="https://drive.google.com/drive/folders/1_EOEzocurEwETqiCjZjOrN_Lui3HaNnn "
                 "(the DiffEIC authors' copy; see https://testimages.org/)"),
    "clic2020": DatasetSpec(
        "clic2020", 428, CROP_768,
        urls=("https://data.vision.ee.ethz.ch/cvl/clic/test/CLIC2020Professional_test.zip",
              "https://data.vision.ee.ethz.ch/cvl/clic/test/CLIC2020Mobile_test.zip"),
        homepage="https://data.vision.ee.ethz.ch/cvl/clic/test/ (professional + mobile test sets)"),
}


@dataclass
class EvalImage:
    """One image of a dataset: a unique name and a loader returning uint8 ``(H, W, 3)``."""

    name: str
    load: Callable[[], np.ndarray]
    path: Optional[Path] = None       # its source file, when it comes from one


@dataclass
class Dataset:
    name: str
    images: List[EvalImage]
    preprocessing: str
    source: str


def default_data_dir() -> Path:
    return Path(os.environ.get("DIFFEIC_DATA") or Path.home() / ".cache" / "diffeic" / "data")


# ---------------------------------------------------------------------------------------------
# reading and preprocessing
def read_rgb(path: Union[str, Path]) -> np.ndarray:
    """An image file as uint8 RGB ``(H, W, 3)`` via the library's reader (:func:`diffeic.io.load_image_8bit`:
    EXIF orientation, greyscale → 3 channels, alpha dropped, 16-bit scaled), rounded to 8 bit."""
    return np.array(load_image_8bit(path))


def resize_crop(img: np.ndarray, size: int = 768) -> np.ndarray:
    """Shorter side → ``size`` (bilinear, antialiased; aspect kept), then centre crop ``size²``."""
    import torch
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    t = torch.from_numpy(img).permute(2, 0, 1)
    t = TF.resize(t, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
    t = TF.center_crop(t, [size, size])
    return t.permute(1, 2, 0).contiguous().numpy()


def _preprocessor(preprocessing: str) -> Callable[[np.ndarray], np.ndarray]:
    return resize_crop if preprocessing == CROP_768 else (lambda a: a)


def _list_images(folder: Path) -> List[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _names(paths: Sequence[Path], root: Path) -> List[str]:
    # Relative path without extension, '/' → '__': unique and safe as a file name.
    return [str(p.relative_to(root).with_suffix("")).replace(os.sep, "__") for p in paths]


def _file_images(paths: Sequence[Path], root: Path, preprocessing: str) -> List[EvalImage]:
    prep = _preprocessor(preprocessing)
    return [EvalImage(n, (lambda p=p: prep(read_rgb(p))), p) for n, p in zip(_names(paths, root), paths)]


# ---------------------------------------------------------------------------------------------
# download, count and checksum
def _fetch(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` atomically with a short timeout (raises on any failure)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=NETWORK_TIMEOUT_S) as resp, \
            tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
        shutil.copyfileobj(resp, tmp)
    os.replace(tmp.name, dest)


def _download(spec: DatasetSpec, folder: Path) -> None:
    if not spec.urls:
        raise DatasetUnavailable(f"{spec.name}: no direct download exists; get the {spec.count} images from "
                                 f"{spec.homepage} and put them in {folder}")
    for url in spec.urls:
        dest = folder / url.rsplit("/", 1)[-1]
        if dest.exists():
            continue
        try:
            _fetch(url, dest)
        except OSError as err:   # URLError, timeouts, DNS failures are all OSErrors
            raise DatasetUnavailable(
                f"{spec.name}: not in {folder} and downloading {url} failed ({type(err).__name__}: "
                f"{str(err)[:80]}). Get the {spec.count} images from {spec.homepage or url} and put them in "
                f"{folder}") from err
        known = spec.known_sha256.get(dest.name)
        if known and file_sha256(dest) != known:
            dest.unlink()
            raise DatasetUnavailable(f"{spec.name}: checksum mismatch for {url}; the download was deleted")
        if dest.suffix == ".zip":
            with zipfile.ZipFile(dest) as z:
                z.extractall(folder / dest.stem)
            dest.unlink()


def _verify_checksums(folder: Path, paths: Sequence[Path]) -> None:
    """Record the images' sha256 on first use; on later uses refuse files that changed."""
    sums = folder / CHECKSUM_FILE
    current = {str(p.relative_to(folder)): file_sha256(p) for p in paths}
    if not sums.is_file():
        sums.write_text("".join(f"{h}  {n}\n" for n, h in sorted(current.items())))
        return
    recorded = dict(reversed(line.split("  ", 1)) for line in sums.read_text().splitlines() if line.strip())
    bad = [n for n, h in current.items() if recorded.get(n) != h]
    if bad:
        raise DatasetUnavailable(f"{folder.name}: {len(bad)} file(s) differ from {sums} (e.g. {bad[0]}); "
                                 f"delete the folder to download again, or delete {CHECKSUM_FILE} to accept them")


def load_standard(name: str, data_dir: Optional[Union[str, Path]] = None, download: bool = True) -> Dataset:
    """Kodak / Tecnick / CLIC2020 from the cache, downloading first if needed."""
    spec = SPECS[name]
    folder = Path(data_dir or default_data_dir()) / name
    paths = _list_images(folder) if folder.is_dir() else []
    if len(paths) < spec.count and download:
        _download(spec, folder)
        paths = _list_images(folder)
    if len(paths) != spec.count:
        where = spec.urls[0] if len(spec.urls) == 1 else spec.homepage
        raise DatasetUnavailable(f"{name}: expected {spec.count} images in {folder}, found {len(paths)}. "
                                 f"Get the set from {where} and put the {spec.count} images there")
    _verify_checksums(folder, paths)
    return Dataset(name, _file_images(paths, folder, spec.preprocessing), spec.preprocessing, str(folder))


def load_samples() -> Dataset:
    """The bundled scikit-image photos that no demo model trained on (``diffeic.samples.HELDOUT_PHOTOS``)."""
    from ..samples import HELDOUT_PHOTOS, load_photo

    def loader(n: str) -> Callable[[], np.ndarray]:
        return lambda: load_photo(n)
    return Dataset("samples", [EvalImage(n, loader(n)) for n in HELDOUT_PHOTOS], NATIVE, "skimage.data (held out)")


def load_folder(path: Union[str, Path]) -> Dataset:
    """Every image under ``path`` (recursive, sorted by path), native size."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetUnavailable(f"folder {root} does not exist")
    paths = _list_images(root)
    if not paths:
        raise DatasetUnavailable(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return Dataset(root.name or "folder", _file_images(paths, root, NATIVE), NATIVE, str(root))


def load_dataset(spec: str, data_dir: Optional[Union[str, Path]] = None, limit: Optional[int] = None,
                 download: bool = True) -> Dataset:
    """``kodak | tecnick | clic2020 | samples | folder:PATH`` → :class:`Dataset` (first ``limit`` images)."""
    if spec == "samples":
        ds = load_samples()
    elif spec.startswith("folder:"):
        ds = load_folder(spec[len("folder:"):])
    elif spec in SPECS:
        ds = load_standard(spec, data_dir, download)
    else:
        raise ValueError(f"unknown dataset {spec!r}; choose {', '.join(SPECS)}, samples or folder:PATH")
    if limit is not None:
        ds.images = ds.images[:max(0, int(limit))]
    return ds

"""Training and validation data: image folders, the paper's crop augmentation, a resumable sampler.

Augmentation ([Li2024] Sec. IV-A; official ``utils/image/common.py`` ``random_crop_arr``): short side ``S``
uniform in the integers ``[short_min, short_max]`` → halve with a BOX filter while the short side
is ≥ 2S → BICUBIC resize so the short side is ``S`` → uniform random ``crop×crop`` crop → random
horizontal flip (p = 0.5) → float in [0, 1].  Because the short side is always resized to
``S ≥ crop``, images smaller than the crop are *upscaled* (bicubic) rather than rejected.

Colour augmentation (off by default, as the paper; on for the demo model, whose few photos would otherwise
teach it their palette): with probability ``colour`` a crop gets a random colour transform — a hue rotation
about the grey axis, a random channel permutation, and saturation / contrast / brightness jitter — one affine
map per crop, drawn from the same per-sample RNG.

Reproducibility: each sample's randomness comes from ``(seed, key)`` only, where ``key`` is the
global sample number ``epoch · N + index`` produced by :class:`ResumableDistributedSampler`.  Crops
therefore do not depend on worker count, worker seeding or prefetching, every DDP rank draws
different images (the sampler splits the permutation by rank), and a resumed run sees exactly the
samples an uninterrupted run would.
"""
from __future__ import annotations

import functools
import math
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..io import IMAGE_SUFFIXES, load_image_8bit
from ..lfgcm import PAD_MULTIPLE
from ..sizes import size_text

SAMPLES = "samples"                     # the bundled training photos (diffeic.samples.TRAIN_PHOTOS)
HELDOUT = "samples-heldout"             # the bundled photos no training run sees (HELDOUT_PHOTOS)
LSDIR_HF_REPO = "ofsoundof/LSDIR"
LSDIR_SITE = "https://ofsoundof.github.io/lsdir-data/"

Source = Union[Path, str]      # a file path, or "skimage:<name>" for a bundled photo


class DatasetNotFoundError(FileNotFoundError):
    """No training images where the config points; the message says how to get LSDIR."""


def lsdir_help(root: Union[str, Path]) -> str:
    return (f"no training images found under {str(root)!r}. DiffEIC trains on LSDIR (84,991 images): "
            f"get it from {LSDIR_SITE} or the Hugging Face dataset {LSDIR_HF_REPO!r} (e.g. `huggingface-cli "
            f"download {LSDIR_HF_REPO} --repo-type dataset --local-dir data/LSDIR`, then extract the archives), or "
            f"run once online with --data.download true. Put it under data/LSDIR (or anywhere) and pass "
            f"--data.root <folder>; any folder of images works (searched recursively). For a quick offline run "
            f"use --data.root samples.")


# --------------------------------------------------------------------------- sources

def find_images(root: Union[str, Path]) -> List[Source]:
    """Images under ``root`` (recursive, sorted for reproducibility), or bundled photos for ``"samples"``
    (training photos) and ``"samples-heldout"`` (the held-out ones).

    Raises :class:`DatasetNotFoundError` (with LSDIR instructions) when nothing is found.
    """
    if str(root) in (SAMPLES, HELDOUT):
        from ..samples import HELDOUT_PHOTOS, TRAIN_PHOTOS

        return [f"skimage:{name}" for name in (TRAIN_PHOTOS if str(root) == SAMPLES else HELDOUT_PHOTOS)]
    folder = Path(root).expanduser()
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()) \
        if folder.is_dir() else []
    if not files:
        raise DatasetNotFoundError(lsdir_help(root))
    return files


@functools.lru_cache(maxsize=128)
def open_rgb(source: Source) -> Image.Image:
    """Decode a file (or a bundled photo) to an 8-bit RGB PIL image; ``ValueError`` if unreadable.

    The last 128 images decoded are kept (callers never modify them): a few photos drawn thousands of times
    are decoded once, not once per crop.

    Files go through the codec's reader (:func:`diffeic.io.load_image_8bit`: EXIF orientation, 16-bit
    and grayscale handling), so training sees the pixels ``compress`` would be given, rounded to 8 bits.
    """
    if isinstance(source, str) and source.startswith("skimage:"):
        from ..samples import load_photo

        return Image.fromarray(load_photo(source.split(":", 1)[1]))
    return load_image_8bit(source)


def download_lsdir(dest: Union[str, Path]) -> Path:
    """Download LSDIR from the Hugging Face hub into ``dest`` and extract its archives.

    Only called when the user asks (``--data.download true``) and the hub is reachable; never in tests.
    The repository layout (tar archives of PNGs) is unverified here, so every archive found is extracted.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise RuntimeError("--data.download true needs network access, but HF_HUB_OFFLINE is set")
    import shutil
    import tarfile
    import zipfile

    from huggingface_hub import snapshot_download

    dest = Path(dest)
    snapshot_download(repo_id=LSDIR_HF_REPO, repo_type="dataset", local_dir=str(dest))
    for archive in sorted(dest.rglob("*")):
        name = archive.name.lower()
        if name.endswith((".tar", ".tar.gz", ".tgz")):
            with tarfile.open(archive) as tar:
                tar.extractall(archive.parent, filter="data")
        elif name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(archive.parent)
        else:
            continue
        archive.unlink()
    shutil.rmtree(dest / ".cache", ignore_errors=True)
    return dest


# --------------------------------------------------------------------------- augmentation

@dataclass(frozen=True)
class CropSpec:
    """Paper crop: ``size`` crop from an image whose short side is resized to S ∈ [short_min, short_max]."""

    size: int = 512
    short_min: int = 512
    short_max: int = 640
    hflip: bool = True
    colour: float = 0.0                 # probability of a random colour transform (colour_transform)

    def __post_init__(self) -> None:
        if self.size % PAD_MULTIPLE:
            raise ValueError(f"crop size {self.size} must be a multiple of {PAD_MULTIPLE} (the LFGCM's stride)")
        if not 0.0 <= self.colour <= 1.0:
            raise ValueError(f"colour augmentation probability must be in [0, 1], got {self.colour}")
        if not self.size <= self.short_min <= self.short_max:
            raise ValueError(f"need crop size ≤ short_min ≤ short_max, got {self.size}, {self.short_min}, "
                             f"{self.short_max}")


#: Longest side / shortest side a training image may have before resizing; longer images are cropped
#: to this ratio first (a 1x3000 strip would otherwise be resized to 64x192000 pixels and more).
MAX_ASPECT = 4


def _bounded_aspect(img: Image.Image, rng: random.Random) -> Image.Image:
    """A random window of ``img`` whose long side is at most ``MAX_ASPECT`` times its short side."""
    w, h = img.size
    short, long_ = min(w, h), max(w, h)
    if long_ <= MAX_ASPECT * short:
        return img                      # every ordinary photo: no extra random draw, crops unchanged
    keep = MAX_ASPECT * short
    start = rng.randrange(long_ - keep + 1)
    return img.crop((start, 0, start + keep, h) if w > h else (0, start, w, start + keep))


def colour_transform(rng: random.Random) -> Tuple[np.ndarray, np.ndarray]:
    """A random affine colour map ``x ↦ M x + b`` on RGB in [0, 1]: hue rotation about the grey axis (any
    angle), a channel permutation (p = 0.5), saturation ×[0.5, 1.5], contrast ×[0.7, 1.3] about mid-grey and
    brightness ×[0.75, 1.25].  Grey stays grey under the hue and saturation parts."""
    theta = rng.uniform(-math.pi, math.pi)
    k = np.full((3, 3), 1.0 / 3.0)                      # projection onto the grey axis
    cross = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / math.sqrt(3.0)   # u× for u = (1,1,1)/√3
    m = k + math.cos(theta) * (np.eye(3) - k) + math.sin(theta) * cross     # Rodrigues' rotation about u
    if rng.random() < 0.5:
        m = np.eye(3)[rng.sample(range(3), 3)] @ m
    sat = rng.uniform(0.5, 1.5)
    m = (k + sat * (np.eye(3) - k)) @ m
    contrast, brightness = rng.uniform(0.7, 1.3), rng.uniform(0.75, 1.25)
    m = brightness * contrast * m
    b = np.full(3, brightness * (1 - contrast) * 0.5)
    return m.astype(np.float32), b.astype(np.float32)


def paper_crop(img: Image.Image, spec: CropSpec, rng: random.Random) -> torch.Tensor:
    """One augmented ``(3, size, size)`` float tensor in [0, 1] ([Li2024] Sec. IV-A)."""
    img = _bounded_aspect(img, rng)
    s = rng.randint(spec.short_min, spec.short_max)
    # BOX halving first (cheap, alias-free), then one bicubic resize to the exact short side.
    while min(img.size) >= 2 * s:
        img = img.resize(tuple(v // 2 for v in img.size), resample=Image.BOX)
    scale = s / min(img.size)
    # max(): round() could land one pixel short of the crop for extreme aspect ratios.
    img = img.resize(tuple(max(spec.size, round(v * scale)) for v in img.size), resample=Image.BICUBIC)
    arr = np.asarray(img)
    top = rng.randrange(arr.shape[0] - spec.size + 1)
    left = rng.randrange(arr.shape[1] - spec.size + 1)
    arr = arr[top:top + spec.size, left:left + spec.size]
    if spec.hflip and rng.random() < 0.5:
        arr = arr[:, ::-1]
    out = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float().div_(255.0)
    if spec.colour and rng.random() < spec.colour:
        m, b = colour_transform(rng)
        out = (torch.einsum("ij,jhw->ihw", torch.from_numpy(m), out) + torch.from_numpy(b)[:, None, None]).clamp_(0, 1)
    return out


def center_view(img: Image.Image, size: Optional[int]) -> torch.Tensor:
    """Validation view: short side resized to ``size`` then a centred ``size×size`` crop (``None``: whole image)."""
    if size is not None:
        scale = size / min(img.size)
        img = img.resize(tuple(max(size, round(v * scale)) for v in img.size), resample=Image.BICUBIC)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div_(255.0)


#: The smallest hyper-latent side a training crop should give.  z has the LFGCM's full stride (``PAD_MULTIPLE``,
#: 64 pixels), so a 64-pixel crop codes one z surrounded by zero padding: the hyper-synthesis never sees z's
#: neighbours, z's magnitude drifts unchecked, and on a whole photo its neighbouring values combine into scales the
#: model never trained on (``configs/tiny.yaml`` trained at 64 pixels once spent 5-7x the untrained model's bits).
MIN_Z_SIDE = 4


def warn_if_small_hyper_latent(crop_size: int, module: object = None) -> None:
    """Warn when a ``crop_size`` training crop gives the codec's hyper-latent z fewer than ``MIN_Z_SIDE²`` positions.

    ``module`` is the LightningModule being trained: one without a ``codec`` (the backbone pretraining, which
    codes nothing) is not warned about.
    """
    side = crop_size // PAD_MULTIPLE
    if side >= MIN_Z_SIDE or (module is not None and not hasattr(module, "codec")):
        return
    good = MIN_Z_SIDE * PAD_MULTIPLE
    warnings.warn(f"crop_size {crop_size} gives a {size_text(side, side)} hyper-latent z (stride {PAD_MULTIPLE}): the "
                  f"hyperprior then learns crop borders, not images, and the trained codec can spend more bits on "
                  f"whole photos than an untrained one. Use crop_size >= {good} (z {size_text(MIN_Z_SIDE, MIN_Z_SIDE)}) and a "
                  f"short side >= {good}.", UserWarning, stacklevel=2)


# --------------------------------------------------------------------------- datasets

class RandomCropDataset(Dataset):
    """Paper crops of a list of images; indexed by *sample keys* (``epoch · N + index``).

    An unreadable file — corrupt, or over Pillow's decompression-bomb limit — is reported once (a warning
    naming it), counted in :attr:`skipped` and replaced by the next readable image, so one bad file never
    stops a 300K-step run.  ``crops_per_image`` makes an epoch draw that many independent crops of every
    image (a handful of photos still fills a batch).
    """

    def __init__(self, sources: Sequence[Source], crop: CropSpec, seed: int = 0, crops_per_image: int = 1) -> None:
        if not sources:
            raise ValueError("RandomCropDataset needs at least one image")
        if int(crops_per_image) < 1:
            raise ValueError(f"crops_per_image must be >= 1, got {crops_per_image}")
        self.sources = list(sources)
        self.crop = crop
        self.seed = int(seed)
        self.crops_per_image = int(crops_per_image)
        self._bad: set = set()

    def __len__(self) -> int:
        return len(self.sources) * self.crops_per_image

    @property
    def skipped(self) -> int:
        """How many files this process found unreadable and skipped."""
        return len(self._bad)

    def __getitem__(self, key: int) -> torch.Tensor:
        # String seeding hashes with SHA-512: independent streams per (seed, key), same on every platform.
        rng = random.Random(f"diffeic-crop-{self.seed}-{int(key)}")
        n = len(self.sources)
        for attempt in range(n):
            source = self.sources[(int(key) + attempt) % n]
            if source in self._bad:
                continue
            try:
                return paper_crop(open_rgb(source), self.crop, rng)
            except (OSError, ValueError) as err:       # the reader's ValueError names the file and the reason
                self._bad.add(source)
                warnings.warn(f"skipping unreadable training image {source}: {err}", RuntimeWarning, stacklevel=2)
        raise RuntimeError(f"none of the {n} training images could be read")


class ValidationDataset(Dataset):
    """Whole (or centre-cropped) images for the real-bitstream validation."""

    def __init__(self, sources: Sequence[Source], size: Optional[int] = None) -> None:
        self.sources = list(sources)
        self.size = size

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> torch.Tensor:
        return center_view(open_rgb(self.sources[index]), self.size)


class ResumableDistributedSampler(DistributedSampler):
    """Lightning's default DDP sampler (shuffled permutation per epoch, split by rank) that

    * yields sample keys ``epoch · N + index`` (so crops differ per epoch, see :class:`RandomCropDataset`);
    * can skip the samples a resumed run already trained on in its current epoch (:meth:`resume`).

    Being a ``DistributedSampler``, Lightning leaves it in place and calls ``set_epoch`` every epoch.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self._resume: Optional[Tuple[int, int]] = None

    def resume(self, epoch: int, skip: int) -> None:
        """The next iteration over ``epoch`` starts ``skip`` samples in (applies once)."""
        self.set_epoch(epoch)
        self._resume = (epoch, skip) if skip else None

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        if self._resume is not None and self._resume[0] == self.epoch:
            indices = indices[self._resume[1]:]
            self._resume = None
        offset = self.epoch * len(self.dataset)
        return iter([offset + i for i in indices])


# --------------------------------------------------------------------------- data module

class DiffEICDataModule(LightningDataModule):
    """LSDIR-style training crops + a real-bitstream validation set ([Li2024] Sec. IV-A).

    Args:
        root: folder of training images (recursive; e.g. ``data/LSDIR``), or ``samples`` for the
            bundled scikit-image photos.
        val_root: folder of validation images, ``samples``, or ``None`` for no validation.
        crop_size: training crop (512 in the paper; multiples of ``PAD_MULTIPLE``, 64).
        short_side: range of the random short side S before cropping ([512, 640] in the paper).
        batch_size: per-device batch (4 in the paper).
        num_workers: DataLoader workers per device.
        val_size: validation images are resized/centre-cropped to this square (``None``: full size,
            as the official code; slow at 50 steps).
        val_limit: at most this many validation images.
        seed: augmentation seed; ``None`` uses ``seed_everything``'s value (``PL_GLOBAL_SEED``).
        download: download LSDIR into ``root`` first if it is empty (online only; never implicit).
        crops_per_image: independent crops of each image per epoch (1 for LSDIR; more for a few photos).
        colour: probability of a random colour transform per crop (:func:`colour_transform`; 0: the paper's).
    """

    def __init__(self, root: str = "data/LSDIR", val_root: Optional[str] = SAMPLES, crop_size: int = 512,
                 short_side: Tuple[int, int] = (512, 640), batch_size: int = 4, num_workers: int = 8,
                 val_size: Optional[int] = 512, val_limit: int = 4, seed: Optional[int] = None,
                 download: bool = False, crops_per_image: int = 1, colour: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.crop = CropSpec(crop_size, int(short_side[0]), int(short_side[1]), colour=float(colour))
        self.train_set: Optional[RandomCropDataset] = None
        self.val_set: Optional[ValidationDataset] = None
        self._batches_done = 0          # restored from a checkpoint, see load_state_dict

    @property
    def seed(self) -> int:
        if self.hparams.seed is not None:
            return int(self.hparams.seed)
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    def prepare_data(self) -> None:
        if self.hparams.download and str(self.hparams.root) != SAMPLES:
            try:
                find_images(self.hparams.root)
            except DatasetNotFoundError:
                download_lsdir(self.hparams.root)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_set is None:
            warn_if_small_hyper_latent(self.crop.size, self.trainer.lightning_module if self.trainer else None)
            self.train_set = RandomCropDataset(find_images(self.hparams.root), self.crop, self.seed,
                                               self.hparams.crops_per_image)
        if stage in ("fit", "validate") and self.val_set is None and self.hparams.val_root is not None:
            self.val_set = ValidationDataset(find_images(self.hparams.val_root)[: self.hparams.val_limit],
                                             self.hparams.val_size)

    def _world(self) -> Tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        world, rank = self._world()
        sampler = ResumableDistributedSampler(self.train_set, num_replicas=world, rank=rank, seed=self.seed)
        per_epoch = len(sampler) // self.hparams.batch_size
        if per_epoch == 0:
            raise ValueError(f"{len(self.train_set)} training images give no full batch of "
                             f"{self.hparams.batch_size} per device on {world} device(s)")
        # Resume mid-epoch: skip what the interrupted run already trained on (batches are per rank).
        done = self._batches_done
        sampler.resume(done // per_epoch, (done % per_epoch) * self.hparams.batch_size)
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, sampler=sampler,
                          num_workers=self.hparams.num_workers, drop_last=True, pin_memory=torch.cuda.is_available(),
                          persistent_workers=self.hparams.num_workers > 0)

    def val_dataloader(self) -> List[DataLoader]:
        if self.val_set is None or len(self.val_set) == 0:
            return []
        # Images differ in size: batch 1, as the official validation.
        return DataLoader(self.val_set, batch_size=1, shuffle=False, num_workers=min(self.hparams.num_workers, 2))

    # Lightning stores these in its checkpoint under this class's name.
    def state_dict(self) -> dict:
        trainer = self.trainer
        if trainer is None:
            return {"batches_done": self._batches_done}
        return {"batches_done": int(trainer.fit_loop.epoch_loop.batch_progress.total.processed)}

    def load_state_dict(self, state_dict: dict) -> None:
        self._batches_done = int(state_dict.get("batches_done", 0))


__all__ = ["CropSpec", "paper_crop", "colour_transform", "center_view", "find_images", "open_rgb", "RandomCropDataset",
           "ValidationDataset", "ResumableDistributedSampler", "warn_if_small_hyper_latent", "MIN_Z_SIDE",
           "DiffEICDataModule", "DatasetNotFoundError",
           "download_lsdir", "lsdir_help", "SAMPLES", "HELDOUT", "LSDIR_HF_REPO"]

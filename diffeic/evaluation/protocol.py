"""What makes a run follow the protocol and its folder impossible to mix up.

* **Seeds**: each image is decoded with its own seed, ``seed + image index`` (the official script
  draws fresh noise for every image after seeding once; every image starting from the same noise
  would correlate the errors across a dataset).  With several decode seeds, the k-th adds
  ``k × SEED_STRIDE``; the stream eval writes stores the first (k = 0), so ``diffeic decompress``
  of that file gives the reconstruction eval scored with it.
* **Tiling**: which parts of the pipeline ran tiled for each image is recorded, never silent; the
  paper's datasets run untiled (their images are at most 768×768) unless memory forces it.
* **Run identity**: the model fingerprint and decode settings behind every rate point, kept in the
  output folder's ``run.json``.  A folder holding rows of another model or other settings is
  refused with a message naming both, never resumed into (a resume would relabel old numbers).
* **Environment**: precision, device and package versions, for the summary.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping

from .published import PROTOCOL_DATASETS

SEED_POLICY = "seed + image index (+ k x 1000000 for the k-th of several decode seeds; the stream stores k = 0)"
#: Distance between the k-th and (k+1)-th decode seed of an image (larger than any dataset).
SEED_STRIDE = 1_000_000
RUN_FILE = "run.json"
#: Bumped whenever a change makes old rows incomparable to new ones (then old folders are refused).
PROTOCOL_VERSION = 3       # 3: streams store their decode seed; rows keyed by seed
_TILED_PARTS = ("vae-encoder", "latent", "vae-decoder")


class OutputFolderConflict(ValueError):
    """The output folder holds results of another model or other settings; the message says which."""


def image_seed(base: int, index: int) -> int:
    """The decode seed of the ``index``-th image of a dataset (0-based, dataset order)."""
    return (int(base) + int(index)) % 2 ** 64


def decode_seeds(base: int, index: int, n: int) -> List[int]:
    """The ``n`` decode seeds of the ``index``-th image: :func:`image_seed` plus ``k × SEED_STRIDE``."""
    return [(image_seed(base, index) + k * SEED_STRIDE) % 2 ** 64 for k in range(n)]


def runs_untiled(dataset: str) -> bool:
    """Whether the dataset is one of the paper's (run untiled, as published, unless memory forces it)."""
    return dataset in PROTOCOL_DATASETS


def tiling_record(codec: Any, height: int, width: int) -> str:
    """Which parts run tiled for an image of ``height × width``: ``"none"`` or a ``+``-joined subset of
    ``vae-encoder``, ``latent``, ``vae-decoder``, from the codec's own tiling decisions."""
    import torch

    from diffeic.codecs.base import padded_size

    if not hasattr(codec, "fast_decoder"):      # HiFiC / refine codecs: no diffusion tiling
        return "none"
    decoder = codec.fast_decoder()
    opts = decoder.options
    hp, wp = padded_size(height, width)
    vae_tiles = max(hp, wp) > opts.vae_tile_pixels           # diffusers tiles only images above one tile
    latent = decoder.tiles_for(torch.empty(1, 4, hp // 8, wp // 8)) is not None
    parts = {"vae-encoder": (codec.encoder_tiling or opts.exceeds_auto_tile(hp * wp)) and vae_tiles,
             "latent": latent, "vae-decoder": latent and vae_tiles}
    return "+".join(p for p in _TILED_PARTS if parts[p]) or "none"


def precision(codec: Any) -> str:
    """The dtype the diffusion decoder runs in (the entropy coder is always exact)."""
    if not hasattr(codec, "fast_decoder"):
        return "float32"
    return codec.fast_decoder().options.dtype or "float32"


def versions(extra: Mapping[str, str] = ()) -> Dict[str, str]:
    """Python and package versions that influence the numbers (installed ones only)."""
    import importlib.metadata as md

    v = {"python": platform.python_version()}
    for pkg in ("diffeic", "torch", "torchvision", "numpy", "pillow", "lpips", "pytorch-msssim", "torch-fidelity",
                "dists-pytorch", "compressai", "diffusers", "scipy", "scikit-image", "pyiqa", "pillow-heif",
                "imagecodecs"):
        try:
            v[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    if "diffeic" not in v:
        import diffeic

        v["diffeic"] = diffeic.__version__
    v.update(extra)
    return v


# --------------------------------------------------------------------------- run identity

def point_identity(fingerprint: str, config: str, trained: bool, source: str, sampler: str, steps: int,
                   seed: int, precision: str, device: str, tiling: str) -> Dict[str, Any]:
    """Everything our rows (and the baselines quality-matched to them) depend on, for one rate point."""
    return {"fingerprint": fingerprint, "config": config, "trained": trained, "source": source,
            "sampler": sampler, "steps": steps, "seed": seed, "seed_policy": SEED_POLICY,
            "precision": precision, "device": str(device).split(":")[0], "tiling": tiling}


#: Fields whose difference makes rows incomparable (``source`` may move, ``trained`` follows the weights).
_IDENTITY_KEYS = ("fingerprint", "config", "sampler", "steps", "seed", "seed_policy", "precision", "device", "tiling")


def claim_folder(out: Path, points: Mapping[str, Mapping[str, Any]], has_rows: bool) -> None:
    """Record this run's identity in ``out/run.json``, or refuse a folder made by another model/settings.

    ``points`` maps ``"<dataset>/<point>"`` to its :func:`point_identity`.  Points already recorded must
    match exactly; new ones are added (one folder can hold several points and datasets).  A folder that
    has results but no ``run.json`` (an older eval, another tool) is refused as well.
    """
    path = out / RUN_FILE
    recorded: Dict[str, Any] = {}
    if path.is_file():
        try:
            recorded = json.loads(path.read_text())
        except ValueError as err:
            raise OutputFolderConflict(f"{path} is unreadable ({err}); use another --out folder") from err
    elif has_rows:
        raise OutputFolderConflict(f"{out} holds results.csv from an earlier eval version (no {RUN_FILE} says which "
                                   f"model made them); use another --out folder or delete it")
    if recorded and recorded.get("protocol_version") != PROTOCOL_VERSION:
        raise OutputFolderConflict(f"{out} was written under eval protocol version {recorded.get('protocol_version')},"
                                   f" this is version {PROTOCOL_VERSION}; use another --out folder or delete it")
    old = recorded.get("points", {})
    for point, new in points.items():
        if point in old:
            diff = [k for k in _IDENTITY_KEYS if old[point].get(k) != new.get(k)]
            if diff:
                said = ", ".join(f"{k} {old[point].get(k)!r} there, {new.get(k)!r} now" for k in diff)
                raise OutputFolderConflict(
                    f"{out} holds results of {point!r} made by model {old[point].get('fingerprint')} "
                    f"({old[point].get('source')}); this run's differ ({said}); use another --out folder "
                    f"(the default folder is named by the model's fingerprint)")
    merged = {"protocol_version": PROTOCOL_VERSION, "points": {**points, **old}}   # first record of a point stays
    if merged != recorded:
        out.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{RUN_FILE}.tmp")
        tmp.write_text(json.dumps(merged, indent=2))
        os.replace(tmp, path)


def folder_tag(fingerprints: List[str]) -> str:
    """8 hex digits naming a run's models: the stream fingerprint for one model, a hash of all for several."""
    if len(fingerprints) == 1:
        return fingerprints[0][:8]
    import hashlib

    return hashlib.sha256(",".join(fingerprints).encode()).hexdigest()[:8]


# --------------------------------------------------------------------------- tiling policy

def run_untiled(codec: Any) -> None:
    """Switch the codec's automatic tiling off (the paper's datasets are decoded whole)."""
    if hasattr(codec, "fast_decoder"):
        codec.optimize(codec.fast_decoder().options, auto_tile_pixels=None)


@contextlib.contextmanager
def forced_tiling(codec: Any) -> Iterator[None]:
    """Tile the latent (and the VAE decoder above one tile) for a decode that did not fit untiled."""
    from diffeic.diffusion.tiling import TileOptions

    if not hasattr(codec, "fast_decoder"):      # other families decode whole images
        yield
        return
    saved = codec.fast_decoder().options
    codec.optimize(saved, tiles=TileOptions())
    try:
        yield
    finally:
        codec.optimize(saved)


def tiling_policy(codec: Any) -> str:
    """The codec's tiling rule in words (part of the run identity)."""
    if not hasattr(codec, "fast_decoder"):
        return "never"
    opts = codec.fast_decoder().options
    if opts.tiles is not None or codec.encoder_tiling:
        return "always"
    if opts.auto_tile_pixels is None:
        return "never, unless out of memory"
    return f"above {opts.auto_tile_pixels} padded pixels"

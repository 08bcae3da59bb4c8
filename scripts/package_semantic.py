"""Package the semantic decoder trained by ``scripts/train_semantic.sh`` into a checkpoint folder (by default the
shipped model ``diffeic/data/pretrained/semantic-tiny-trained``).

    python scripts/package_semantic.py [--export runs/semantic_tiny/export] [--name semantic-tiny-trained]
                                       [--out FOLDER] [--force]

The export holds ``decoder.safetensors`` (the decoder's trainable state: control module + hint encoder),
``arch.yaml`` (its architecture) and ``run.yaml`` (step, backbone fingerprint, run id).  The folder written is a
``SemanticCodec`` checkpoint (``config.yaml`` + ``decoder.safetensors``) over the shipped ``tiny-backbone``, marked
trained, with its provenance.  The decoder's weights are stored as ``--storage`` keeps them (default ``int8``: the
large tensors int8 with a per-row scale, as the demo model, so every shipped model fits the 25 MB budget); the model
is rounded first, so what is written is what loads.  The folder is built beside ``out`` and checked by loading it
back (fingerprint) before it replaces ``out``.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))     # weight_storage, when loaded as a module

from diffeic.codecs.folder import replace_folder  # noqa: E402
from diffeic.codecs.registry import PRETRAINED_DIR  # noqa: E402
from diffeic.codecs.semantic import DECODER_FILE, SemanticCodec  # noqa: E402
from diffeic.training.semantic import load_export  # noqa: E402
from weight_storage import STORAGES, record_hashes, round_to_storage, store_file  # noqa: E402

PROVENANCE = {"what": "semantic_tiny decoder trained on a CPU on photos other packages ship; not the paper's SD1.5",
              "command": "bash scripts/train_semantic.sh",
              "configs": ["diffeic/configs/semantic_tiny_train.yaml"],
              "data": {"train": "scripts/fetch_demo_photos.py (data/demo_photos)",
                       "held_out": "every scikit-image photo (skimage.data)"}}


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package(export: Path, out: Path, force: bool = False, storage: str = "int8") -> Path:
    """Write the checkpoint folder ``out`` from the training ``export``; returns it."""
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists: pass --force to replace it")
    decoder = load_export(export)                 # checks the files and the backbone it was trained on
    run = yaml.safe_load((export / "run.yaml").read_text()) if (export / "run.yaml").is_file() else {}
    config = dataclasses.replace(SemanticCodec.get_config("semantic_tiny"), arch=dict(decoder.arch))
    for part in (decoder.control, decoder.hint):  # what trainable_state stores (the backbone is the shipped one)
        round_to_storage(part, storage)
    codec = SemanticCodec(config, decoder, trained=True).eval()
    provenance = {**PROVENANCE, "commit": _git("rev-parse", "HEAD"), "steps": run.get("step"),
                  "run_id": run.get("run_id"), "storage": storage}
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    codec.save_pretrained(tmp, preset="semantic_tiny", provenance=provenance)
    store_file(tmp / DECODER_FILE, storage)
    record_hashes(tmp)
    loaded = SemanticCodec.from_pretrained(tmp)
    if loaded.fingerprint() != codec.fingerprint() or not loaded.is_trained:
        raise RuntimeError(f"{tmp}: the reloaded decoder differs from the one packaged")
    replace_folder(tmp, out)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export", type=Path, default=REPO / "runs" / "semantic_tiny" / "export")
    p.add_argument("--name", default="semantic-tiny-trained", help="shipped model name (folder in data/pretrained)")
    p.add_argument("--out", type=Path, default=None, help="write here instead of diffeic/data/pretrained/NAME")
    p.add_argument("--force", action="store_true", help="replace an existing folder")
    p.add_argument("--storage", choices=STORAGES, default="int8", help="how the decoder's weights are stored")
    args = p.parse_args(argv)
    folder = package(args.export, args.out or PRETRAINED_DIR / args.name, args.force, args.storage)
    size = sum(f.stat().st_size for f in folder.iterdir())
    print(f"wrote {folder} ({size / 1e6:.2f} MB): diffeic.load_codec({args.name!r} or {str(folder)!r})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python train.py fit --config configs/<name>.yaml``: LightningCLI over the training modules and data.

A config names its LightningModule (``model.class_path``: ``diffeic.training.DiffEICModule`` for DiffEIC,
``diffeic.training.BackbonePretrainModule`` for the demo prior, ...) with its arguments under
``model.init_args``.  Every value can be overridden on the command line (``--data.root DIR``,
``--trainer.max_steps N``, ``--model.lmbda 4``); ``--print_config`` shows the merged result and each
run saves it next to its logs, so a run is reproducible from config + ``seed_everything``.

The configs ship inside the package (``diffeic/configs``; the repository's ``configs/`` points there), so
``--config tiny.yaml`` or ``--config tiny`` also works outside a checkout: a ``--config`` that is not an
existing file is looked up by name among them (:func:`config_path`).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LightningCLI

from .data import DiffEICDataModule


class DiffEICCLI(LightningCLI):
    """LightningCLI with the image-crop data module fixed; the model is chosen by ``model.class_path``.

    ``seed_everything`` (default 231, the official seed) also seeds the augmentation and the per-step
    noise: both read it from ``PL_GLOBAL_SEED`` unless ``--data.seed``/``--model.seed`` are given.
    """


CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def shipped_configs() -> List[str]:
    """Names of the configs that ship with the package (``tiny.yaml``, ``sd21_stage1.yaml``, ...)."""
    return sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))


def config_path(value: str) -> str:
    """An existing file as is; else a shipped config by name (``tiny``, ``tiny.yaml``, ``configs/tiny.yaml``)."""
    if os.path.exists(value) or value.lstrip().startswith(("{", "-")):
        return value
    name = Path(value).name
    for candidate in (name, f"{name}.yaml"):
        if (CONFIG_DIR / candidate).is_file():
            return str(CONFIG_DIR / candidate)
    return value            # LightningCLI reports the missing file


def _with_shipped_configs(args: List[str]) -> List[str]:
    out = list(args)
    for i, arg in enumerate(out):
        if arg in ("--config", "-c") and i + 1 < len(out):
            out[i + 1] = config_path(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + config_path(arg[len("--config="):])
    return out


def main(args: Optional[List[str]] = None) -> DiffEICCLI:
    args = _with_shipped_configs(sys.argv[1:] if args is None else list(args))
    return DiffEICCLI(LightningModule, DiffEICDataModule, subclass_mode_model=True, seed_everything_default=231,
                      save_config_kwargs={"overwrite": True}, args=args)


__all__ = ["DiffEICCLI", "config_path", "main", "shipped_configs"]

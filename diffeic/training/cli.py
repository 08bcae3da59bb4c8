"""``python train.py fit --config configs/<name>.yaml``: LightningCLI over the DiffEIC module and data.

Every value of a config can be overridden on the command line (``--data.root DIR``,
``--trainer.max_steps N``, ``--model.lmbda 4``); ``--print_config`` shows the merged result and each
run saves it next to its logs, so a run is reproducible from config + ``seed_everything``.
"""
from __future__ import annotations

from typing import List, Optional

from lightning.pytorch.cli import LightningCLI

from .data import DiffEICDataModule
from .module import DiffEICModule


class DiffEICCLI(LightningCLI):
    """LightningCLI with the DiffEIC model and data module fixed (no ``class_path`` needed).

    ``seed_everything`` (default 231, the official seed) also seeds the augmentation and the per-step
    noise: both read it from ``PL_GLOBAL_SEED`` unless ``--data.seed``/``--model.seed`` are given.
    """


def main(args: Optional[List[str]] = None) -> DiffEICCLI:
    return DiffEICCLI(DiffEICModule, DiffEICDataModule, seed_everything_default=231,
                      save_config_kwargs={"overwrite": True}, args=args)


__all__ = ["DiffEICCLI", "main"]

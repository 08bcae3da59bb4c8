"""``python train.py fit --config configs/<name>.yaml``: LightningCLI over the training modules and data.

A config names its LightningModule (``model.class_path``: ``diffeic.training.DiffEICModule`` for DiffEIC,
``diffeic.training.BackbonePretrainModule`` for the demo prior, ...) with its arguments under
``model.init_args``.  Every value can be overridden on the command line (``--data.root DIR``,
``--trainer.max_steps N``, ``--model.lmbda 4``); ``--print_config`` shows the merged result and each
run saves it next to its logs, so a run is reproducible from config + ``seed_everything``.
"""
from __future__ import annotations

from typing import List, Optional

from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LightningCLI

from .data import DiffEICDataModule


class DiffEICCLI(LightningCLI):
    """LightningCLI with the image-crop data module fixed; the model is chosen by ``model.class_path``.

    ``seed_everything`` (default 231, the official seed) also seeds the augmentation and the per-step
    noise: both read it from ``PL_GLOBAL_SEED`` unless ``--data.seed``/``--model.seed`` are given.
    """


def main(args: Optional[List[str]] = None) -> DiffEICCLI:
    return DiffEICCLI(LightningModule, DiffEICDataModule, subclass_mode_model=True, seed_everything_default=231,
                      save_config_kwargs={"overwrite": True}, args=args)


__all__ = ["DiffEICCLI", "main"]

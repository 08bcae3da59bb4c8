"""Callbacks: export a ``DiffEICCodec.from_pretrained`` folder during and after training (spec §7.3)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from lightning.pytorch import Callback, LightningModule, Trainer


class ExportCallback(Callback):
    """Write the trainable parts as a checkpoint folder (``config.yaml`` + safetensors + CDF tables).

    The folder is what ``eval.py``, the ``diffeic`` command and stage 2 (``--model.init_from``) load;
    it is replaced atomically, so a crash mid-write never leaves a half folder behind.

    Args:
        dirpath: the export folder (e.g. ``checkpoints/sd21_stage1``).
        every_n_steps: also export every N optimiser steps (0: only at the end of fit).
        keep_steps: additionally keep a copy per export in ``<dirpath>-step<N>``.
    """

    def __init__(self, dirpath: str = "checkpoints/diffeic", every_n_steps: int = 0, keep_steps: bool = False) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_steps = int(every_n_steps)
        self.keep_steps = bool(keep_steps)
        self._last_step: Optional[int] = None

    def export(self, trainer: Trainer, pl_module: LightningModule) -> None:
        step = trainer.global_step
        if self._last_step == step:
            return
        self._last_step = step
        if trainer.is_global_zero:
            pl_module.export(self.dirpath)
            if self.keep_steps:
                pl_module.export(self.dirpath.with_name(f"{self.dirpath.name}-step{step:07d}"))
        trainer.strategy.barrier("diffeic-export")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0:
            self.export(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Not reached when the divergence guard raises: the last good export stays as it was.
        self.export(trainer, pl_module)


__all__ = ["ExportCallback"]

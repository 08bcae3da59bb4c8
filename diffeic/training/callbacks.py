"""Callbacks: export a ``DiffEICCodec.from_pretrained`` folder during and after training ([Li2024] Sec. IV-A)."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Dict, Optional

import yaml
from lightning.pytorch import Callback, LightningModule, Trainer

#: Files of an export folder that record which run wrote it (DiffEIC checkpoints / backbone folders).
_RUN_RECORDS = ("config.yaml", "run.yaml")


class ExportConflictError(RuntimeError):
    """The export folder holds the output of a different training run."""


def recorded_run_id(folder: Path) -> Optional[str]:
    """The ``run_id`` an export folder was written by (``None`` if it records none)."""
    for name in _RUN_RECORDS:
        path = folder / name
        if path.is_file():
            meta = yaml.safe_load(path.read_text()) or {}
            if isinstance(meta, dict) and meta.get("run_id"):
                return str(meta["run_id"])
    return None


class ExportCallback(Callback):
    """Write the trainable parts as a checkpoint folder (``config.yaml`` + safetensors + CDF tables).

    The folder is what ``eval.py``, the ``diffeic`` command and stage 2 (``--model.init_from``) load;
    it is replaced atomically, so a crash mid-write never leaves a half folder behind.  Every export
    records the id of the run that wrote it (kept across resumes in Lightning's checkpoint); a folder
    written by a *different* run is never replaced unless ``overwrite`` is set, so two runs of one
    config cannot silently overwrite each other's result.

    Args:
        dirpath: the export folder; default ``<trainer.default_root_dir>/export`` (follows
            ``--trainer.default_root_dir``).
        every_n_steps: also export every N optimiser steps (0: only at the end of fit).
        keep_steps: additionally keep a copy per export in ``<dirpath>-step<N>``.
        overwrite: replace an export made by another run.
    """

    def __init__(self, dirpath: Optional[str] = None, every_n_steps: int = 0, keep_steps: bool = False,
                 overwrite: bool = False) -> None:
        self._dirpath = dirpath
        self.dirpath: Optional[Path] = Path(dirpath) if dirpath else None
        self.every_n_steps = int(every_n_steps)
        self.keep_steps = bool(keep_steps)
        self.overwrite = bool(overwrite)
        self.run_id: Optional[str] = None
        self._last_step: Optional[int] = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = Path(trainer.default_root_dir) / "export"
        if self.run_id is None:
            self.run_id = uuid.uuid4().hex[:16]

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Checked before the first step, not after hours of training (load_state_dict has run by now).
        if trainer.is_global_zero:
            self._check_owner(self.dirpath)

    def _check_owner(self, folder: Path) -> None:
        owner = recorded_run_id(folder) if folder.exists() else None
        if folder.exists() and owner != self.run_id and not self.overwrite:
            raise ExportConflictError(
                f"{folder} holds an export of another training run ({owner or 'unrecorded'}); choose another "
                f"--trainer.default_root_dir or export dirpath, or allow replacing it with overwrite: true")

    def state_dict(self) -> Dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.run_id = state_dict.get("run_id") or self.run_id

    def export(self, trainer: Trainer, pl_module: LightningModule) -> None:
        step = trainer.global_step
        if self._last_step == step:
            return
        self._last_step = step
        if trainer.is_global_zero:
            self._check_owner(self.dirpath)
            pl_module.export(self.dirpath, run_id=self.run_id)
            if self.keep_steps:
                pl_module.export(self.dirpath.with_name(f"{self.dirpath.name}-step{step:07d}"), run_id=self.run_id)
        trainer.strategy.barrier("diffeic-export")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0:
            self.export(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Not reached when the divergence guard raises: the last good export stays as it was.
        self.export(trainer, pl_module)


__all__ = ["ExportCallback", "ExportConflictError", "recorded_run_id"]

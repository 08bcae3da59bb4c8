"""What the LightningModules of the HiFiC and refinement families share.

Building the codec (a preset, or ``init_from`` a checkpoint folder for a second stage), per-batch
seeded randomness (a resumed run repeats an uninterrupted one), the non-finite-step guard,
validation with real bitstreams (compress → bytes → decompress → bpp from the byte count, PSNR) and
the export of a ``from_pretrained`` folder that :class:`~diffeic.training.ExportCallback` and
``diffeic.load_codec`` understand.
"""
from __future__ import annotations

import copy
import math
import os
import warnings
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule

from ..codecs.transform import TransformCodec
from .module import TrainingDiverged, seeded

Tensor = torch.Tensor


class FamilyModule(LightningModule):
    """Base LightningModule around a :class:`~diffeic.codecs.transform.TransformCodec` subclass."""

    codec_class: ClassVar[type]

    def __init__(self, preset: str, init_from: Optional[str] = None, max_consecutive_skips: int = 5,
                 seed: Optional[int] = None) -> None:
        super().__init__()
        self.automatic_optimization = False       # skip non-finite steps; GAN families step two optimisers
        if init_from:
            self.codec: TransformCodec = self.codec_class.from_pretrained(init_from)
        else:
            self.codec = self.codec_class.from_config(preset)
        self.codec.is_trained = False
        self.codec.train()                        # codecs load in eval mode; Lightning keeps a module's mode
        self.batches_seen = 0
        self.skipped_total = 0
        self.consecutive_skips = 0

    # ------------------------------------------------------------------ helpers for training_step
    def step_seed(self) -> int:
        """Seed of this batch's randomness: a function of (seed, batch number, rank) only."""
        base = self.hparams.seed if self.hparams.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        rank = self.trainer.global_rank if self._trainer is not None else 0
        return int(np.random.SeedSequence([int(base), self.batches_seen, rank]).generate_state(1)[0])

    def seeded(self):
        return seeded(self.step_seed(), self.device)

    @staticmethod
    def bpp(likelihoods: Dict[str, Tensor], num_pixels: int) -> Tensor:
        """Bits of all latents over the batch's pixels (B·H·W)."""
        return sum(-torch.log2(lik.float()).sum() for lik in likelihoods.values()) / num_pixels

    def guarded_step(self, optimizer: torch.optim.Optimizer, loss: Tensor, params: Iterable[torch.nn.Parameter],
                     what: str = "loss") -> bool:
        """Backward + step, unless the loss or a gradient is non-finite (then no update at all); True if stepped."""
        params = list(params)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float()) if grads else loss.new_zeros(())
        finite = bool(torch.isfinite(loss.detach()) & torch.isfinite(norm))
        if self._trainer is not None:
            finite = not self.trainer.strategy.reduce_boolean_decision(not finite, all=False)
        if finite:
            optimizer.step()
            return True
        optimizer.zero_grad(set_to_none=True)
        self.skipped_total += 1
        self.consecutive_skips += 1
        if self.consecutive_skips >= self.hparams.max_consecutive_skips:
            raise TrainingDiverged(f"training diverged: {self.consecutive_skips} consecutive non-finite {what} steps "
                                   f"(batch {self.batches_seen}); no update was applied for them — resume from the "
                                   f"last checkpoint with a lower learning rate")
        warnings.warn(f"non-finite {what} at batch {self.batches_seen}: update skipped", RuntimeWarning, stacklevel=2)
        return False

    def log_losses(self, values: Dict[str, Any], batch: int) -> None:
        logged = {f"train/{k}": (v.detach().float() if isinstance(v, Tensor) else float(v)) for k, v in values.items()}
        self.log_dict(logged, on_step=True, on_epoch=False, batch_size=batch)
        self.log("loss", logged["train/loss"], prog_bar=True, logger=False, batch_size=batch)
        self.log("bpp", logged["train/bpp"], prog_bar=True, logger=False, batch_size=batch)

    def main_parameters(self) -> list:
        """The codec's parameters but the entropy bottleneck's ``quantiles`` (those are the aux group)."""
        return [p for n, p in self.codec.model.named_parameters() if not n.endswith(".quantiles")]

    def aux_parameters(self) -> list:
        return [p for n, p in self.codec.model.named_parameters() if n.endswith(".quantiles")]

    def setup(self, stage: str) -> None:
        warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch",
                                category=UserWarning)

    # ------------------------------------------------------------------ validation with real bitstreams
    def on_validation_epoch_start(self) -> None:
        self.codec.model.hyperprior.update(force=True)

    def validation_step(self, batch: Tensor, batch_idx: int) -> Dict[str, float]:
        x = batch[0].float().clamp(0, 1)
        with torch.autocast(device_type=self.device.type, enabled=False):
            bits = self.codec.compress(x)
            x_hat = self.codec.decompress(bits)
        h, w = x.shape[-2:]
        bpp = 8.0 * len(bits) / (h * w)
        psnr = 10 * math.log10(1.0 / max(F.mse_loss(x_hat.float(), x).item(), 1e-12))
        self.log_dict({"val/bpp": bpp, "val/psnr": psnr}, on_epoch=True, sync_dist=True, batch_size=1, prog_bar=True)
        return {"bpp": bpp, "psnr": psnr}

    # ------------------------------------------------------------------ export and checkpoints
    def export(self, path: Union[str, Path], **metadata: Any) -> Path:
        """Write a ``from_pretrained`` folder of the current weights, atomically replacing ``path``."""
        codec = self.codec
        snapshot = type(codec)(codec.config, copy.deepcopy(codec.model).cpu(), trained=True)
        hp = {k: v for k, v in self.hparams.items()
              if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None)))}
        return snapshot.save_pretrained(path, step=int(self.global_step), training=hp, **metadata)

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["diffeic_family"] = {"batches_seen": self.batches_seen, "skipped_total": self.skipped_total,
                                        "consecutive_skips": self.consecutive_skips, "family": self.codec.family}

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        meta = checkpoint.get("diffeic_family", {})
        self.batches_seen = int(meta.get("batches_seen", 0))
        self.skipped_total = int(meta.get("skipped_total", 0))
        self.consecutive_skips = int(meta.get("consecutive_skips", 0))


__all__ = ["FamilyModule"]

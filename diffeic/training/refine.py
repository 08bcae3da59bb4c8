"""Training the refinement codec (Hoogeboom et al. 2023) with Lightning.

One objective per batch, one optimiser step::

    loss = bpp + λ·255²·MSE(x_mse, x)      (the MSE transform codec; compressai's λ convention)
         + refiner_weight · L_refiner       (v-prediction MSE of the shifted-schedule diffusion, or the
                                             rectified-flow velocity MSE), conditioned on x_mse.detach()

The refiner never sends gradients into the autoencoder, so this is the paper's two-stage recipe
(train the MSE codec, then the refiner on its reconstructions) run concurrently; ``refiner_start_step``
delays the refiner term, and ``init_from`` starts from an exported folder.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F

from ..codecs.refine import RefineCodec
from .family_module import FamilyModule

Tensor = torch.Tensor


class RefineModule(FamilyModule):
    """Trains a :class:`~diffeic.refine.RefineCodec`.

    Args:
        preset: ``refine_tiny``, ``refine``, ``refine_flow``, … or a YAML file (ignored with ``init_from``).
        init_from: a refine checkpoint folder to start from (weights only).
        lmbda: rate–distortion weight λ of ``bpp + λ·255²·MSE`` (compressai's scale: 0.0018 … 0.0483).
        refiner_weight: weight of the refiner's loss.  refiner_start_step: batch from which it is trained.
        lr, aux_lr: Adam learning rates.  seed: base of the per-batch RNG.
    """

    codec_class = RefineCodec

    def __init__(self, preset: str = "refine_tiny", init_from: Optional[str] = None, lmbda: float = 0.0130,
                 refiner_weight: float = 1.0, refiner_start_step: int = 0, lr: float = 1e-4, aux_lr: float = 1e-3,
                 max_consecutive_skips: int = 5, seed: Optional[int] = None) -> None:
        super().__init__(preset, init_from, max_consecutive_skips, seed)
        self.save_hyperparameters()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        return torch.optim.Adam([{"params": self.main_parameters(), "lr": hp.lr, "name": "main"},
                                 {"params": self.aux_parameters(), "lr": hp.aux_lr, "name": "aux"}])

    def compute_losses(self, x: Tensor, t: Optional[Tensor] = None, noise: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """All loss terms for a padded batch ``x`` in [0,1]; ``t``/``noise`` of the refiner may be fixed."""
        hp = self.hparams
        model = self.codec.model
        out = model(x)
        bpp = self.bpp(out["likelihoods"], x.shape[0] * x.shape[-2] * x.shape[-1])
        mse = F.mse_loss(out["x_mse"], x)
        loss = bpp + hp.lmbda * 255.0 ** 2 * mse
        losses = {"bpp": bpp, "mse": mse}
        if self.batches_seen >= hp.refiner_start_step:
            losses["refiner"] = model.refiner_loss(x, out["x_mse"], t, noise)
            loss = loss + hp.refiner_weight * losses["refiner"]
        losses.update(loss=loss, aux=model.hyperprior.aux_loss())
        return losses

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        opt = self.optimizers()
        with self.seeded():
            losses = self.compute_losses(batch)
        if self.guarded_step(opt, losses["loss"] + losses["aux"], self.main_parameters() + self.aux_parameters()):
            self.consecutive_skips = 0
        self.batches_seen += 1
        logs: Dict[str, Any] = dict(losses)
        self.log_losses(logs, batch.shape[0])
        return losses["loss"].detach()


__all__ = ["RefineModule"]

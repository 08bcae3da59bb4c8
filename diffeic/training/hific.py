"""Training HiFiC (Mentzer et al. 2020, §3.2–3.3, Appendix A.1) with Lightning.

Per batch, once the GAN stage has started (``gan_start_step``): one discriminator step on
``(x, ŷ)`` vs ``(x̂, ŷ)`` (ŷ and x̂ detached: D conditions on the real image's latent), then one step
of E, G and the hyperprior on

    λ'·bpp + k_M·MSE₂₅₅ + k_P·perceptual + β·(−log D(x̂, ŷ))   (+ the entropy bottleneck's aux loss)

Before ``gan_start_step`` the β term is off: the paper's first stage (MSE + LPIPS warm-up).  A second
stage can also be a separate run started from the first one's export with ``--model.init_from``.
The rate-target schedule switches λ' on the batch's (noisy) rate; the authors' release switches on
the rounded-latent estimate, which is slightly lower in early training.

Differences from the release, on purpose: D trains on the same batch as G (the release feeds D a
separate sub-batch), and D's optimiser is not a Lightning optimiser, so ``trainer.global_step``
counts G steps only (what ``max_steps``, the schedules and the export step mean).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from ..codecs.hific import HiFiCCodec
from ..hific.discriminator import Discriminator
from ..hific.losses import RateTargetSchedule, discriminator_loss, generator_gan_loss, mse_255
from ..netweights import LossFn, perceptual_loss
from .family_module import FamilyModule

Tensor = torch.Tensor


class HiFiCModule(FamilyModule):
    """Trains a :class:`~diffeic.hific.HiFiCCodec` and its conditional discriminator.

    Args:
        preset: ``hific_tiny``, ``hific`` or a YAML file (ignored with ``init_from``).
        init_from: a HiFiC checkpoint folder to start from (weights only; e.g. the MSE+LPIPS stage).
        target_bpp, lambda_a, lambda_b, schedule_steps: the rate-target schedule (paper: r_t 0.14 →
            λ_a 2, 0.3 → 1, 0.45 → 0.5; λ_b 2⁻⁴; warm-up 50k steps with doubled λ and target × 0.20/0.14).
        k_m: weight of the MSE on the 0–255 scale (0.075·2⁻⁵).  k_p: perceptual weight (1).
        beta: GAN weight (0.15).  gan_start_step: batch at which the GAN term and D training start
            (``-1``: never — the MSE+LPIPS model of the paper).
        perceptual: ``auto`` (LPIPS-Alex, else DISTS, else 1 − MS-SSIM: :func:`~diffeic.netweights.perceptual_loss`),
            ``lpips``, ``dists``, ``ms_ssim`` or ``none``.
        lr, disc_lr, aux_lr: Adam learning rates (1e-4, 1e-4, 1e-3); ``lr_decay_step``: ×0.1 from this step (500k).
        seed: base of the per-batch RNG (``None``: ``seed_everything``'s value).
    """

    codec_class = HiFiCCodec

    def __init__(self, preset: str = "hific_tiny", init_from: Optional[str] = None, target_bpp: float = 0.14,
                 lambda_a: float = 2.0, lambda_b: float = 2.0 ** -4, schedule_steps: int = 50_000,
                 k_m: float = 0.075 * 2.0 ** -5, k_p: float = 1.0, beta: float = 0.15, gan_start_step: int = 0,
                 perceptual: str = "auto", lr: float = 1e-4, disc_lr: float = 1e-4, aux_lr: float = 1e-3,
                 lr_decay_step: int = 500_000, max_consecutive_skips: int = 5, seed: Optional[int] = None) -> None:
        super().__init__(preset, init_from, max_consecutive_skips, seed)
        self.save_hyperparameters()
        self.discriminator = Discriminator(self.codec.config)
        self.schedule = RateTargetSchedule(target_bpp, lambda_a, lambda_b, schedule_steps)
        # A frozen metric network: held outside the module tree so it is neither trained nor checkpointed.
        self.perceptual_name, perceptual_fn = perceptual_loss(perceptual)
        self.__dict__["_perceptual"] = perceptual_fn
        self.disc_optimizer: Optional[torch.optim.Optimizer] = None

    @property
    def perceptual(self) -> LossFn:
        """The perceptual term ``(x_hat, x) -> loss`` (:attr:`perceptual_name` says which network it is)."""
        return self._perceptual

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        self.disc_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=hp.disc_lr)
        return torch.optim.Adam([{"params": self.main_parameters(), "lr": hp.lr, "name": "main"},
                                 {"params": self.aux_parameters(), "lr": hp.aux_lr, "name": "aux"}])

    def on_fit_start(self) -> None:
        self.print(f"HiFiC perceptual term: {self.perceptual_name}")

    def gan_active(self) -> bool:
        start = self.hparams.gan_start_step
        return start >= 0 and self.batches_seen >= start

    def compute_losses(self, x: Tensor, out: Optional[Dict[str, Any]] = None,
                       gan: Optional[bool] = None) -> Dict[str, Tensor]:
        """The E/G/P objective for a padded batch ``x`` in [0,1] (``out``: the codec's forward, if run already).

        The GAN term reads a frozen D: its gradient reaches x̂ (and so G, E, P) but never D's weights.
        """
        hp = self.hparams
        gan = self.gan_active() if gan is None else gan
        out = self.codec.model(x) if out is None else out
        x_hat, y_hat = out["x_hat"], out["y_hat"]
        bpp = self.bpp(out["likelihoods"], x.shape[0] * x.shape[-2] * x.shape[-1])
        lam = self.schedule.weight(float(bpp.detach()), self.batches_seen)
        mse = mse_255(x_hat, x)
        perc = self.perceptual(x_hat, x)
        loss = lam * bpp + hp.k_m * mse + hp.k_p * perc
        losses = {"bpp": bpp, "lambda": torch.tensor(lam), "mse": mse, "perceptual": perc}
        if gan:
            self.discriminator.requires_grad_(False)
            try:
                losses["g_gan"] = generator_gan_loss(self.discriminator(x_hat, y_hat.detach()))
            finally:
                self.discriminator.requires_grad_(True)
            loss = loss + hp.beta * losses["g_gan"]
        losses.update(loss=loss, aux=self.codec.model.hyperprior.aux_loss())
        return losses

    def discriminator_loss(self, x: Tensor, x_hat: Tensor, y_hat: Tensor) -> Tensor:
        """L_D on real ``(x, ŷ)`` vs fake ``(x̂, ŷ)``; ŷ is the real image's latent, both detached."""
        y_hat = y_hat.detach()
        return discriminator_loss(self.discriminator(x, y_hat), self.discriminator(x_hat.detach(), y_hat))

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        opt = self.optimizers()
        hp = self.hparams
        decay = 0.1 if self.global_step >= hp.lr_decay_step else 1.0
        for group in opt.param_groups:
            group["lr"] = (hp.lr if group.get("name") == "main" else hp.aux_lr) * decay
        for group in self.disc_optimizer.param_groups:
            group["lr"] = hp.disc_lr * decay
        gan = self.gan_active()
        logs: Dict[str, Any] = {}
        with self.seeded():
            out = self.codec.model(batch)
            if gan:   # D first, then G against the updated D (the release's order)
                logs["d_loss"] = self.discriminator_loss(batch, out["x_hat"], out["y_hat"])
                self.guarded_step(self.disc_optimizer, logs["d_loss"], self.discriminator.parameters(),
                                  "discriminator loss")
            losses = self.compute_losses(batch, out, gan)
        params = self.main_parameters() + self.aux_parameters()
        if self.guarded_step(opt, losses["loss"] + losses["aux"], params):
            self.consecutive_skips = 0
        self.batches_seen += 1
        logs.update(losses, gan_active=float(gan))
        self.log_losses(logs, batch.shape[0])
        return losses["loss"].detach()

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.disc_optimizer is not None:
            checkpoint["diffeic_family"]["disc_optimizer"] = self.disc_optimizer.state_dict()

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._disc_state = checkpoint.get("diffeic_family", {}).get("disc_optimizer")

    def on_train_start(self) -> None:
        state = getattr(self, "_disc_state", None)
        if state is not None and self.disc_optimizer is not None:
            self.disc_optimizer.load_state_dict(state)
            self._disc_state = None


__all__ = ["HiFiCModule"]

"""HiFiC's training objective (Mentzer et al. 2020, §3.2, Eq. 3–5, Appendix A.1):

    L_EGP = λ'·r(ŷ) + k_M·MSE + k_P·LPIPS − β·log D(x̂, ŷ)        (non-saturating GAN term)
    L_D   = −log(1 − D(x̂, ŷ)) − log D(x, ŷ)

with the *rate-target schedule*: λ' = λ_a when the batch's rate is above the target r_t, else λ_b
(λ_a ≫ λ_b), so training settles near r_t instead of trading rate for distortion at a fixed slope.
For the first ``schedule_steps`` steps both λ values are doubled and r_t is raised by 0.20/0.14, as in
the authors' configs.  MSE is measured on the 0–255 scale, as in the released code (k_M = 0.075·2⁻⁵).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

#: The paper's operating points: target rate r_t → λ_a (Appendix A.1, Table 3a). λ_b = 2⁻⁴ for all.
PAPER_LAMBDA_A = {0.14: 2.0, 0.3: 1.0, 0.45: 0.5}


@dataclass(frozen=True)
class RateTargetSchedule:
    """λ' as a function of the measured rate and the step (see the module docstring)."""

    target_bpp: float = 0.14
    lambda_a: float = 2.0
    lambda_b: float = 2.0 ** -4
    schedule_steps: int = 50_000          # warm-up with doubled λ and a 0.20/0.14 higher target
    warmup_lambda_factor: float = 2.0
    warmup_target_factor: float = 0.20 / 0.14

    def __post_init__(self) -> None:
        if not self.lambda_a > self.lambda_b > 0:
            raise ValueError(f"need lambda_a > lambda_b > 0, got {self.lambda_a} and {self.lambda_b}")
        if self.target_bpp <= 0:
            raise ValueError(f"target_bpp must be positive, got {self.target_bpp}")

    def target(self, step: int) -> float:
        return self.target_bpp * (self.warmup_target_factor if step < self.schedule_steps else 1.0)

    def weight(self, bpp: float, step: int) -> float:
        """λ' for a batch whose (quantised) rate is ``bpp`` at optimiser step ``step``."""
        factor = self.warmup_lambda_factor if step < self.schedule_steps else 1.0
        return factor * (self.lambda_a if bpp > self.target(step) else self.lambda_b)


def mse_255(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error on the 0–255 scale (the scale k_M was tuned for)."""
    return F.mse_loss(x_hat * 255.0, x * 255.0)


def generator_gan_loss(d_fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss −log D(x̂, ŷ) = softplus(−logit)."""
    return F.softplus(-d_fake_logits).mean()


def discriminator_loss(d_real_logits: torch.Tensor, d_fake_logits: torch.Tensor) -> torch.Tensor:
    """−log D(x, ŷ) − log(1 − D(x̂, ŷ))."""
    return F.softplus(-d_real_logits).mean() + F.softplus(d_fake_logits).mean()


class PerceptualLoss(torch.nn.Module):
    """The k_P term: LPIPS-Alex (Zhang et al. 2018) when its backbone weights are on this machine, else 1 − SSIM.

    ``kind``: ``"lpips"`` (required: raises if the torchvision AlexNet weights are not cached),
    ``"ssim"`` (the offline fallback) or ``"auto"`` (LPIPS if available, else SSIM with one warning).
    The LPIPS package ships its linear heads but not the AlexNet backbone; with a *random* backbone
    (``pnet_rand=True``, the only way lpips 0.1.4 runs offline) the heads weight meaningless features,
    so that is never used.  The fallback is 1 − SSIM (pytorch-msssim, 11-px Gaussian window, on [0,1]
    images): weight-free and structure-sensitive, but not LPIPS — runs that used it say so in
    :attr:`kind` and in their logs, and their results are not comparable with the paper's.
    """

    def __init__(self, kind: str = "auto") -> None:
        super().__init__()
        if kind not in ("auto", "lpips", "ssim"):
            raise ValueError(f"perceptual loss must be 'auto', 'lpips' or 'ssim', got {kind!r}")
        self.net: Optional[torch.nn.Module] = None
        if kind != "ssim":
            reason = self._load_lpips()
            if reason and kind == "lpips":
                raise RuntimeError(f"LPIPS requested but unavailable: {reason}")
            if reason:
                warnings.warn(f"perceptual loss: LPIPS unavailable ({reason}); using the offline fallback 1 - SSIM",
                              RuntimeWarning, stacklevel=2)
        self.kind = "lpips" if self.net is not None else "ssim"

    def _load_lpips(self) -> Optional[str]:
        from ..netweights import WeightsUnavailable, alexnet_weights, ensure_weights

        try:
            ensure_weights(alexnet_weights(), allow_download=False)
            import lpips

            self.net = lpips.LPIPS(net="alex", verbose=False).eval()
        except (WeightsUnavailable, ImportError, OSError, RuntimeError) as err:
            return str(err).splitlines()[0][:200]
        for p in self.net.parameters():
            p.requires_grad_(False)
        return None

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        if self.net is not None:
            self.net.eval()                 # a frozen metric, never in training mode
        return self

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.net is not None:
            return self.net(x_hat * 2 - 1, x * 2 - 1).mean()
        from pytorch_msssim import ssim

        return 1.0 - ssim(x_hat.clamp(0, 1), x, data_range=1.0, size_average=True)


__all__ = ["RateTargetSchedule", "PerceptualLoss", "mse_255", "generator_gan_loss", "discriminator_loss",
           "PAPER_LAMBDA_A"]

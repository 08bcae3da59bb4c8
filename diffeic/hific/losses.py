"""HiFiC's training objective (Mentzer et al. 2020, §3.2, Eq. 3–5, Appendix A.1):

    L_EGP = λ'·r(ŷ) + k_M·MSE + k_P·LPIPS − β·log D(x̂, ŷ)        (non-saturating GAN term)
    L_D   = −log(1 − D(x̂, ŷ)) − log D(x, ŷ)

with the *rate-target schedule*: λ' = λ_a when the batch's rate is above the target r_t, else λ_b
(λ_a ≫ λ_b), so training settles near r_t instead of trading rate for distortion at a fixed slope.
For the first ``schedule_steps`` steps both λ values are doubled and r_t is raised by 0.20/0.14, as in
the authors' configs.  MSE is measured on the 0–255 scale, as in the released code (k_M = 0.075·2⁻⁵).
The perceptual term (LPIPS-Alex in the paper) is :func:`diffeic.netweights.perceptual_loss`, with the
library's one policy for missing weights.
"""
from __future__ import annotations

from dataclasses import dataclass

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


__all__ = ["RateTargetSchedule", "mse_255", "generator_gan_loss", "discriminator_loss",
           "PAPER_LAMBDA_A"]

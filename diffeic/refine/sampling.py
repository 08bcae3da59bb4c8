"""The refiner's noise processes: a shifted-cosine diffusion and a rectified flow (Hoogeboom et al. 2023, §3).

Diffusion (continuous time t ∈ [0, 1], variance preserving, v-prediction of Salimans & Ho 2022)::

    logSNR(t) = −2·log tan(a·t + b) + shift,   a, b such that the unshifted curve runs logsnr_max → logsnr_min
    z_t = α_t·x + σ_t·ε,   α_t² = sigmoid(logSNR),  σ_t² = sigmoid(−logSNR),   target v = α_t·ε − σ_t·x

The shift (> 0) moves every t to *less* noise than the standard cosine schedule: the MSE
reconstruction already fixes the layout, so the model's capacity goes to details (the paper's
argument for its shifted schedule; the value of the shift is a config setting).  Sampling is
ancestral over ``steps`` uniform steps and starts at t = 1 from ``α_1·x_mse + σ_1·ε`` — the best
available guess of x at that (non-negligible) signal level — rather than from pure noise.

Rectified flow (Liu et al. 2023) from the MSE image to the image, in few steps::

    x_0 = x_mse + flow_noise·ε,   x_t = (1 − t)·x_0 + t·x,   target v = x − x_0,   Euler steps t: 0 → 1

All images here are in [−1, 1]; the refiner sees ``[x_t, x_mse]`` and the time ``1000·t``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch

Tensor = torch.Tensor
Refiner = Callable[[Tensor, Tensor, Tensor], Tensor]     # (x_t, condition, t) -> prediction


class ShiftedCosineSchedule:
    """logSNR(t) of the module docstring, and α, σ from it."""

    def __init__(self, logsnr_min: float, logsnr_max: float, shift: float) -> None:
        self.b = math.atan(math.exp(-0.5 * logsnr_max))
        self.a = math.atan(math.exp(-0.5 * logsnr_min)) - self.b
        self.shift = shift

    def logsnr(self, t: Tensor) -> Tensor:
        return -2.0 * torch.log(torch.tan(self.a * t + self.b)) + self.shift

    def alpha_sigma(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        lam = self.logsnr(t)
        return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()


def _per_item(t: Tensor, x: Tensor) -> Tensor:
    return t.view(-1, *([1] * (x.dim() - 1)))


def diffusion_loss(refiner: Refiner, schedule: ShiftedCosineSchedule, x: Tensor, cond: Tensor,
                   t: Optional[Tensor] = None, noise: Optional[Tensor] = None) -> Tensor:
    """MSE of the v-prediction at ``t ~ U(0, 1)`` (or the given ``t``/``noise``)."""
    t = torch.rand(x.shape[0], device=x.device) if t is None else t
    noise = torch.randn_like(x) if noise is None else noise
    alpha, sigma = (_per_item(v, x) for v in schedule.alpha_sigma(t))
    z_t = alpha * x + sigma * noise
    return torch.mean((refiner(z_t, cond, t) - (alpha * noise - sigma * x)) ** 2)


def flow_loss(refiner: Refiner, x: Tensor, cond: Tensor, flow_noise: float, t: Optional[Tensor] = None,
              noise: Optional[Tensor] = None) -> Tensor:
    """MSE of the rectified-flow velocity from ``cond + flow_noise·ε`` to ``x``."""
    t = torch.rand(x.shape[0], device=x.device) if t is None else t
    noise = torch.randn_like(x) if noise is None else noise
    x0 = cond + flow_noise * noise
    tt = _per_item(t, x)
    return torch.mean((refiner((1 - tt) * x0 + tt * x, cond, t) - (x - x0)) ** 2)


@torch.no_grad()
def sample_diffusion(refiner: Refiner, schedule: ShiftedCosineSchedule, cond: Tensor, steps: int,
                     generator: torch.Generator) -> Tensor:
    """Ancestral sampling t = 1 → 0 in ``steps`` steps, conditioned on (and started from) ``cond``."""
    def randn() -> Tensor:
        return torch.randn(cond.shape, generator=generator, dtype=cond.dtype).to(cond.device)

    ones = torch.ones(cond.shape[0], device=cond.device)
    alpha1, sigma1 = schedule.alpha_sigma(ones[:1])
    z = alpha1 * cond + sigma1 * randn()
    for i in range(steps, 0, -1):
        t, s = ones * (i / steps), ones * ((i - 1) / steps)
        a_t, s_t = (_per_item(v, cond) for v in schedule.alpha_sigma(t))
        v = refiner(z, cond, t)
        x0 = (a_t * z - s_t * v).clamp(-1, 1)
        if i == 1:
            return x0
        a_s, s_s = (_per_item(v_, cond) for v_ in schedule.alpha_sigma(s))
        a_ts = a_t / a_s
        var_ts = s_t ** 2 - a_ts ** 2 * s_s ** 2
        mean = (a_ts * s_s ** 2 / s_t ** 2) * z + (a_s * var_ts / s_t ** 2) * x0
        z = mean + (var_ts * s_s ** 2 / s_t ** 2).clamp(min=0).sqrt() * randn()
    return z


@torch.no_grad()
def sample_flow(refiner: Refiner, cond: Tensor, steps: int, flow_noise: float,
                generator: torch.Generator) -> Tensor:
    """Euler integration of the rectified flow from ``cond + flow_noise·ε`` (t = 0) to t = 1."""
    x = cond + flow_noise * torch.randn(cond.shape, generator=generator, dtype=cond.dtype).to(cond.device)
    ones = torch.ones(cond.shape[0], device=cond.device)
    for i in range(steps):
        x = x + refiner(x, cond, ones * (i / steps)) / steps
    return x.clamp(-1, 1)


__all__ = ["ShiftedCosineSchedule", "diffusion_loss", "flow_loss", "sample_diffusion", "sample_flow"]

"""Variable-rate control of the LFGCM: asymmetric gain units on the latent y.

Cui et al., "Asymmetric Gained Deep Image Compression with Continuous Rate Adaptation" (CVPR 2021):
the encoder multiplies y channel-wise by a gain vector before quantisation and the decoder multiplies
ŷ by a separate inverse-gain vector before synthesis; one pair of vectors per trained rate level, and
any rate in between by exponential (geometric) interpolation of the neighbouring levels, i.e. linear
interpolation of the log-gains.

How it sits in the LFGCM (see :class:`~diffeic.lfgcm.model.LFGCM`)::

    y = N_e(x, z_g);  ỹ = y ⊙ g(q);  z = N_he(ỹ, z_g)          (the hyperprior describes ỹ)
    ỹ, z → entropy coder → ŷ, ẑ                                  (unchanged, exact integer path)
    z_c = N_d(ŷ ⊙ g⁻(q), f_c(ẑ))

The gains never enter the networks that choose the coder's CDFs, so streams stay bit-exact across
devices for every q; the decoder needs q only for the float synthesis, and reads it from the stream.

The rate parameter is ``q = log2(λ_max / λ)`` ∈ ``[0, log2(λ_max / λ_min)]``: larger q, more bits.
"""
from __future__ import annotations

import math
from typing import List, Tuple, Union

import torch
from torch import nn

from ..bitstream import canonical_rate, float32
from ..config import RateConfig, check_float

#: Initial gains: 1 at q_max, times 2^-INIT_SLOPE per unit of q below it (a coarser quantiser for a
#: larger λ).  So a fresh model's rate already rises with q, and stage 2 from a stage-1 (λ = λ_min)
#: model starts with that model unchanged at q_max.
INIT_SLOPE = 0.5

RateLike = Union[float, torch.Tensor]


def rate_range(cfg: RateConfig) -> Tuple[float, float]:
    """``(q_min, q_max)`` of a variable-rate config, both exact float32 values."""
    return 0.0, float32(math.log2(cfg.lmbda_max / cfg.lmbda_min))


def check_rate(q: object, cfg: RateConfig) -> float:
    """Validate a user's rate parameter → the float32 value the encoder and the stream will use.

    Any real scalar (:func:`~diffeic.config.check_float`); the float32 value is canonical: ``-0.0`` and the
    subnormals (which float32 arithmetic would treat apart from their neighbours) become ``+0.0`` only when they
    round to it, and are otherwise refused, so each rate has one encoding in the stream.
    """
    lo, hi = rate_range(cfg)
    q32 = canonical_rate(float32(check_float("rate", q)))
    if not lo <= q32 <= hi:
        raise ValueError(f"rate = {q32:g}: outside this model's range [{lo:g}, {hi:g}] "
                         f"(q = log2({cfg.lmbda_max:g}/λ) for λ in [{cfg.lmbda_min:g}, {cfg.lmbda_max:g}])")
    return q32


class RateGains(nn.Module):
    """Per-level gain and inverse-gain vectors for the M channels of y, stored as natural logs.

    Log storage keeps every gain positive and makes the paper's geometric interpolation a linear one.
    """

    def __init__(self, channels: int, cfg: RateConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.q_min, self.q_max = rate_range(cfg)
        knots = torch.linspace(self.q_min, self.q_max, cfg.levels, dtype=torch.float64)
        init = ((knots - self.q_max) * INIT_SLOPE * math.log(2.0)).float()[:, None].expand(-1, channels)
        self.log_gain = nn.Parameter(init.clone())
        self.log_inverse_gain = nn.Parameter(-init.clone())

    def levels(self) -> List[float]:
        """The q of each trained gain vector (float32 values), lowest rate first: 0, 1, 2, 3, 4 by default."""
        n = self.cfg.levels
        return [float32(self.q_min + (self.q_max - self.q_min) * i / (n - 1)) for i in range(n)]

    def lmbda(self, q: RateLike) -> RateLike:
        """The rate weight λ = λ_max · 2^-q that q stands for (the training loss uses it)."""
        return self.cfg.lmbda_max * 2.0 ** (-q)

    def _interpolate(self, table: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Log-linear interpolation between the two levels around each q → ``(B, M, 1, 1)`` gains."""
        pos = (q.to(table.dtype) - self.q_min) / (self.q_max - self.q_min) * (table.shape[0] - 1)
        i = pos.floor().clamp(0, table.shape[0] - 2).long()
        frac = (pos - i.to(pos.dtype))[:, None]
        log_g = (1 - frac) * table[i] + frac * table[i + 1]
        return log_g.exp()[:, :, None, None]

    def gain(self, q: torch.Tensor) -> torch.Tensor:
        """Encoder-side gain g(q) for a batch of rate parameters ``q`` (B,)."""
        return self._interpolate(self.log_gain, q)

    def inverse_gain(self, q: torch.Tensor) -> torch.Tensor:
        """Decoder-side inverse gain g⁻(q) (trained separately: the asymmetric pair)."""
        return self._interpolate(self.log_inverse_gain, q)

    def as_batch(self, q: RateLike, batch: int, device: torch.device) -> torch.Tensor:
        """A float rate or a (B,)/scalar tensor → a (B,) tensor checked against the range."""
        q = torch.as_tensor(q, dtype=torch.float32, device=device).reshape(-1)
        if q.numel() == 1:
            q = q.expand(batch)
        if q.numel() != batch:
            raise ValueError(f"got {q.numel()} rate values for a batch of {batch}")
        if not torch.isfinite(q).all() or q.min() < self.q_min or q.max() > self.q_max:
            raise ValueError(f"rate values must lie in [{self.q_min:g}, {self.q_max:g}], got {q.tolist()}")
        return q

"""The refinement codec's networks: MSE transform codec (g_a, hyperprior, g_s) and the conditional refiner."""
from __future__ import annotations

from typing import Dict

import torch
from .. import _compressai  # noqa: F401  (compressai's import warning filtered there)
from compressai.layers import GDN
from compressai.models.utils import conv, deconv
from torch import nn

from ..entropy.hyperprior import MeanScaleHyperprior
from .config import RefineConfig
from .sampling import ShiftedCosineSchedule, diffusion_loss, flow_loss, sample_diffusion, sample_flow


def analysis(cfg: RefineConfig) -> nn.Sequential:
    """g_a: four 5×5 stride-2 convs with GDN (Ballé et al. 2018 / Minnen et al. 2018)."""
    N, M = cfg.N, cfg.M
    return nn.Sequential(conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M))


def synthesis(cfg: RefineConfig) -> nn.Sequential:
    """g_s: the mirror image with inverse GDN."""
    N, M = cfg.N, cfg.M
    return nn.Sequential(deconv(M, N), GDN(N, inverse=True), deconv(N, N), GDN(N, inverse=True),
                         deconv(N, N), GDN(N, inverse=True), deconv(N, 3))


class Refiner(nn.Module):
    """A diffusers ``UNet2DModel`` on ``[x_t, x_mse]`` (6 channels) → prediction (3 channels), time as 1000·t."""

    def __init__(self, cfg: RefineConfig) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.refiner_attention)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.refiner_attention))
        self.unet = UNet2DModel(in_channels=6, out_channels=3, block_out_channels=tuple(cfg.refiner_channels),
                                down_block_types=down, up_block_types=up, layers_per_block=cfg.refiner_layers,
                                norm_num_groups=cfg.refiner_groups, attention_head_dim=8,
                                add_attention=bool(cfg.refiner_attention[-1]))   # mid block as the lowest level

    def forward(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(torch.cat([x_t, cond], dim=1), t * 1000.0).sample


class RefineModel(nn.Module):
    """g_a → ŷ (shared mean-scale hyperprior) → g_s → x_mse → refiner → x̂.  The rate is the autoencoder's alone."""

    def __init__(self, cfg: RefineConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = analysis(cfg)
        self.hyperprior = MeanScaleHyperprior(cfg.M, cfg.hyper_channels, cfg.scale_min, cfg.scale_max,
                                              cfg.scale_levels)
        self.decoder = synthesis(cfg)
        self.refiner = Refiner(cfg)
        self.schedule = ShiftedCosineSchedule(cfg.logsnr_min, cfg.logsnr_max, cfg.logsnr_shift)

    def forward(self, x: torch.Tensor) -> Dict[str, object]:
        """Autoencoder pass on padded ``x`` in [0,1]: ``{"x_mse", "y_hat", "likelihoods"}``."""
        out = self.hyperprior(self.encoder(x))
        out["x_mse"] = self.decoder(out["y_hat"])
        return out

    def refiner_loss(self, x: torch.Tensor, x_mse: torch.Tensor, t=None, noise=None) -> torch.Tensor:
        """The refiner's objective for images in [0,1]; ``x_mse`` is detached (the rate stays the autoencoder's)."""
        x, cond = x * 2 - 1, x_mse.detach().clamp(0, 1) * 2 - 1
        if self.cfg.variant == "flow":
            return flow_loss(self.refiner, x, cond, self.cfg.flow_noise, t, noise)
        return diffusion_loss(self.refiner, self.schedule, x, cond, t, noise)

    def refine(self, x_mse: torch.Tensor, steps: int, seed: int) -> torch.Tensor:
        """x_mse in [0,1] → refined image in [0,1] (``steps`` = 0: x_mse itself)."""
        x_mse = x_mse.clamp(0, 1)
        if steps == 0:
            return x_mse
        generator = torch.Generator("cpu").manual_seed(int(seed))
        cond = x_mse * 2 - 1
        if self.cfg.variant == "flow":
            out = sample_flow(self.refiner, cond, steps, self.cfg.flow_noise, generator)
        else:
            out = sample_diffusion(self.refiner, self.schedule, cond, steps, generator)
        return (out + 1) / 2

    def reconstruct(self, y_hat: torch.Tensor, steps: int, seed: int) -> torch.Tensor:
        return self.refine(self.decoder(y_hat), steps, seed)


__all__ = ["RefineModel", "Refiner", "analysis", "synthesis"]

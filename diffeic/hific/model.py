"""HiFiC's encoder E, generator G and their mean-scale hyperprior P (Mentzer et al. 2020, Fig. 2).

E: 7×7 conv (60) then four 3×3 stride-2 convs (120, 240, 480, 960), each followed by ChannelNorm and
ReLU, then a 3×3 conv to C_y = 220 channels.  G: ChannelNorm, 3×3 conv to 960, ChannelNorm, nine
residual blocks (conv, norm, ReLU, conv, norm) with a skip around all of them, four 3×3 stride-2
transposed convs (480, 240, 120, 60) with ChannelNorm and ReLU, and a 7×7 conv to RGB.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from ..entropy.hyperprior import MeanScaleHyperprior
from .config import HiFiCConfig


class ChannelNorm2d(nn.Module):
    """Normalise each pixel over channels (paper §3.1, "ChannelNorm"), then a per-channel affine map.

    Unlike InstanceNorm it uses no spatial statistics, so a model trained on 256² crops does not
    darken or shift colours on full-size images.  Variance is the unbiased one, ε = 1e-3, as released.
    """

    def __init__(self, channels: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


def _conv_norm_relu(cin: int, cout: int, k: int, stride: int = 1) -> list:
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2), ChannelNorm2d(cout), nn.ReLU()]


class Encoder(nn.Sequential):
    """E: x in [0,1] → y (C_y channels at stride 16)."""

    def __init__(self, cfg: HiFiCConfig) -> None:
        layers = _conv_norm_relu(3, cfg.enc_base, 7)
        for i in range(cfg.num_down):
            layers += _conv_norm_relu(cfg.enc_base * 2 ** i, cfg.enc_base * 2 ** (i + 1), 3, stride=2)
        layers.append(nn.Conv2d(cfg.enc_base * 2 ** cfg.num_down, cfg.latent_channels, 3, padding=1))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), ChannelNorm2d(channels), nn.ReLU(),
                                   nn.Conv2d(channels, channels, 3, padding=1), ChannelNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Generator(nn.Module):
    """G: ŷ → x̂ (unclamped; the codec clamps its output to [0, 1])."""

    def __init__(self, cfg: HiFiCConfig) -> None:
        super().__init__()
        top = cfg.enc_base * 2 ** cfg.num_down
        self.head = nn.Sequential(ChannelNorm2d(cfg.latent_channels), nn.Conv2d(cfg.latent_channels, top, 3, padding=1),
                                  ChannelNorm2d(top))
        self.blocks = nn.Sequential(*(ResidualBlock(top) for _ in range(cfg.res_blocks)))
        tail = []
        for i in reversed(range(cfg.num_down)):
            cin, cout = cfg.enc_base * 2 ** (i + 1), cfg.enc_base * 2 ** i
            tail += [nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1), ChannelNorm2d(cout), nn.ReLU()]
        tail.append(nn.Conv2d(cfg.enc_base, 3, 7, padding=3))
        self.tail = nn.Sequential(*tail)

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        h = self.head(y_hat)
        return self.tail(self.blocks(h) + h)          # skip connection around all residual blocks


class HiFiCModel(nn.Module):
    """E, P, G — what a HiFiC stream needs (the discriminator is a training-only part, see discriminator.py)."""

    def __init__(self, cfg: HiFiCConfig) -> None:
        super().__init__()
        self.encoder = Encoder(cfg)
        self.hyperprior = MeanScaleHyperprior(cfg.latent_channels, cfg.hyper_channels, cfg.scale_min,
                                              cfg.scale_max, cfg.scale_levels)
        self.generator = Generator(cfg)

    def forward(self, x: torch.Tensor) -> Dict[str, object]:
        """Training pass on padded ``x`` in [0,1]: ``{"x_hat", "y_hat", "likelihoods"}``."""
        out = self.hyperprior(self.encoder(x))
        out["x_hat"] = self.generator(out["y_hat"])
        return out

    def reconstruct(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.generator(y_hat).clamp(0, 1)


__all__ = ["ChannelNorm2d", "Encoder", "Generator", "HiFiCModel", "ResidualBlock"]

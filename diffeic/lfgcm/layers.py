"""Building blocks of the LFGCM ([Li2024] Sec. III-B): convolutions, residual blocks, SFT layers.

Attribute names follow the official implementation (``conv1``, ``branch``, ``mlp_shared``,
``norm_0`` …) so that published weights map onto these modules one to one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride, 1)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride)


def conv(in_ch: int, out_ch: int, kernel: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2)


def deconv(in_ch: int, out_ch: int, kernel: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    # output_padding = stride - 1 makes the upsampling exactly ×stride.
    return nn.ConvTranspose2d(in_ch, out_ch, kernel, stride, kernel // 2, output_padding=stride - 1)


def subpel_conv(in_ch: int, out_ch: int, r: int = 2) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch * r * r, 1), nn.PixelShuffle(r))


def guide_stem(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    """conv3x3 → GELU → conv1x1: the small networks that carry guidance features between resolutions."""
    return nn.Sequential(conv3x3(in_ch, out_ch, stride), nn.GELU(), conv1x1(out_ch, out_ch))


def concat_guide_stem(in_ch: int, hidden: tuple, out_ch: int) -> nn.Sequential:
    """Three 3×3 convs with GELUs: fuses a concatenation (guidance feature, latent) into SFT guidance."""
    return nn.Sequential(conv3x3(in_ch, hidden[0]), nn.GELU(), conv3x3(hidden[0], hidden[1]), nn.GELU(),
                         conv3x3(hidden[1], out_ch))


class ResidualBlockWithStride(nn.Module):
    """RBS: two 3×3 convs (first with stride 2) with LeakyReLUs, plus a strided 1×1 skip."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch, 2)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.downsample = conv1x1(in_ch, out_ch, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), 0.01)
        out = F.leaky_relu(self.conv2(out), 0.1)
        return out + self.downsample(x)


class ResidualBlockUpsample(nn.Module):
    """RBU: sub-pixel ×2 upsampling then a 3×3 conv, plus a separate sub-pixel skip."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.subpel_conv = subpel_conv(in_ch, out_ch, 2)
        self.conv = conv3x3(out_ch, out_ch)
        self.upsample = subpel_conv(in_ch, out_ch, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.subpel_conv(x), 0.01)
        out = F.leaky_relu(self.conv(out), 0.1)
        return out + self.upsample(x)


class ResidualBottleneck(nn.Module):
    """RBneck: x + 1×1 → GELU → 3×3 → GELU → 1×1 at half width."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        mid = ch // 2
        self.branch = nn.Sequential(conv1x1(ch, mid), nn.GELU(), conv3x3(mid, mid), nn.GELU(), conv1x1(mid, ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class SFT(nn.Module):
    """Spatial feature transform: ``F' = F·(1+γ(G)) + β(G)`` (the code's 1+γ, not the paper's α)."""

    def __init__(self, x_ch: int, prior_ch: int, hidden: int = 128, ks: int = 3) -> None:
        super().__init__()
        pad = ks // 2
        self.mlp_shared = nn.Sequential(nn.Conv2d(prior_ch, hidden, ks, 1, pad), nn.LeakyReLU(0.2))
        self.mlp_gamma = nn.Conv2d(hidden, x_ch, ks, 1, pad)
        self.mlp_beta = nn.Conv2d(hidden, x_ch, ks, 1, pad)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        if guide.shape[-2:] != x.shape[-2:]:
            guide = F.adaptive_avg_pool2d(guide, x.shape[-2:])
        act = self.mlp_shared(guide)
        return x * (1 + self.mlp_gamma(act)) + self.mlp_beta(act)


class SFTResblk(nn.Module):
    """Residual block with two independent SFT modulations and no normalisation layers."""

    def __init__(self, x_ch: int, prior_ch: int, hidden: int = 128, ks: int = 3) -> None:
        super().__init__()
        self.conv_0 = conv3x3(x_ch, x_ch)
        self.conv_1 = conv3x3(x_ch, x_ch)
        self.norm_0 = SFT(x_ch, prior_ch, hidden, ks)
        self.norm_1 = SFT(x_ch, prior_ch, hidden, ks)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        d = self.conv_0(F.leaky_relu(self.norm_0(x, guide), 0.2))
        d = self.conv_1(F.leaky_relu(self.norm_1(d, guide), 0.2))
        return x + d

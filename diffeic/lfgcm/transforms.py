"""Analysis, synthesis and hyper transforms of the LFGCM, and the extraction network f_c ([Li2024] Sec. III-B).

The encoder side is guided by the SD-VAE latent ``z_g`` through SFT layers; the decoder side,
which never sees ``z_g``, is guided by ``w = f_c(ẑ)`` concatenated with ``ŷ``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import LFGCMConfig
from .layers import (SFT, ResidualBlockUpsample, ResidualBlockWithStride, ResidualBottleneck, SFTResblk,
                     concat_guide_stem, conv, conv1x1, conv3x3, deconv, guide_stem)


def _bottlenecks(ch: int, n: int = 3) -> list:
    return [ResidualBottleneck(ch) for _ in range(n)]


class AnalysisTransform(nn.Module):
    """N_e: image x (3 ch, [0,1]) guided by z_g → latent y (M ch at 1/16)."""

    def __init__(self, cfg: LFGCMConfig) -> None:
        super().__init__()
        c1, c2, c3, c4 = cfg.enc_mid
        p, h = cfg.prior_ch, cfg.sft_hidden
        self.sft_1_8 = guide_stem(cfg.latent_ch, p)
        self.sft_1_16 = guide_stem(p, p, stride=2)
        self.sft_1_16_2 = guide_stem(p, p)
        self.g_a1 = nn.Sequential(
            ResidualBlockWithStride(cfg.in_ch, c1), *_bottlenecks(c1),
            ResidualBlockWithStride(c1, c2), *_bottlenecks(c2),
            ResidualBlockWithStride(c2, c3), *_bottlenecks(c3))
        self.g_a1_ref = SFT(c3, p, h)
        self.g_a2 = nn.Sequential(ResidualBlockWithStride(c3, c4), *_bottlenecks(c4))
        self.g_a2_ref = SFT(c4, p, h)
        self.g_a3 = conv3x3(c4, c4)
        self.g_a4 = SFTResblk(c4, p, h)
        self.g_a5 = SFTResblk(c4, p, h)
        self.g_a6 = conv3x3(c4, cfg.M)

    def forward(self, x: torch.Tensor, z_g: torch.Tensor) -> torch.Tensor:
        g1 = self.sft_1_8(z_g)
        g2 = self.sft_1_16(g1)
        g3 = self.sft_1_16_2(g2)
        h = self.g_a1_ref(self.g_a1(x), g1)
        h = self.g_a2_ref(self.g_a2(h), g2)
        h = self.g_a3(h)
        h = self.g_a5(self.g_a4(h, g3), g3)
        return self.g_a6(h)


class HyperAnalysisTransform(nn.Module):
    """N_he: latent y guided by concat(feature(z_g), y) → hyper-latent z (N ch at 1/64)."""

    def __init__(self, cfg: LFGCMConfig) -> None:
        super().__init__()
        p, h, n = cfg.prior_ch, cfg.sft_hidden, cfg.N
        self.sft_feature = guide_stem(cfg.latent_ch, p, stride=2)
        self.sft_feature_h1 = concat_guide_stem(p + cfg.M, cfg.guide_hidden, p)
        self.sft_feature_h2 = nn.Sequential(conv(p, p, 3, 2), nn.GELU(), conv(p, p, 1, 1))
        self.sft_feature_h3 = nn.Sequential(conv(p, p, 3, 2), nn.GELU(), conv(p, p, 1, 1))
        self.h_a0 = conv3x3(cfg.M, n)
        self.h_a1 = SFT(n, p, h)
        self.h_a2 = nn.GELU()
        self.h_a3 = conv(n, n, 5, 2)
        self.h_a4 = SFT(n, p, h)
        self.h_a5 = nn.GELU()
        self.h_a6 = conv(n, n, 5, 2)
        self.h_a7 = SFTResblk(n, p, h)
        self.h_a8 = SFTResblk(n, p, h)
        self.h_a9 = conv1x1(n, n)

    def forward(self, y: torch.Tensor, z_g: torch.Tensor) -> torch.Tensor:
        # Concatenation order (guidance feature, y) is fixed by the published weights.
        h1 = self.sft_feature_h1(torch.cat([self.sft_feature(z_g), y], dim=1))
        h2 = self.sft_feature_h2(h1)
        h3 = self.sft_feature_h3(h2)
        h = self.h_a2(self.h_a1(self.h_a0(y), h1))
        h = self.h_a5(self.h_a4(self.h_a3(h), h2))
        h = self.h_a8(self.h_a7(self.h_a6(h), h3), h3)
        return self.h_a9(h)


class HyperSynthesisTransform(nn.Module):
    """N_hd: ẑ → ψ, the 2M-channel hyper parameters at 1/16."""

    def __init__(self, cfg: LFGCMConfig) -> None:
        super().__init__()
        n, m = cfg.N, cfg.M
        self.hyper_dec = nn.Sequential(deconv(n, m), nn.GELU(), deconv(m, m * 3 // 2), nn.GELU(),
                                       deconv(m * 3 // 2, m * 2, 3, 1))

    def forward(self, z_hat: torch.Tensor) -> torch.Tensor:
        return self.hyper_dec(z_hat)


def information_extraction(cfg: LFGCMConfig) -> nn.Sequential:
    """f_c: ẑ → w (N/4 ch at 1/16), the decoder's stand-in for the z_g guidance."""
    n = cfg.N
    return nn.Sequential(deconv(n, n // 2), nn.GELU(), deconv(n // 2, n // 4), nn.GELU(), deconv(n // 4, n // 4, 3, 1))


class SynthesisTransform(nn.Module):
    """N_d: ŷ guided by concat(w, ŷ) → content variables z_c (4 ch at 1/8, no output activation)."""

    def __init__(self, cfg: LFGCMConfig) -> None:
        super().__init__()
        p, h, m = cfg.prior_ch, cfg.sft_hidden, cfg.M
        c = cfg.enc_mid[-1]
        self.sft_feature_gs1 = concat_guide_stem(cfg.N // 4 + m, cfg.guide_hidden, p)
        self.sft_feature_gs2 = guide_stem(p, p)
        self.sft_feature_gs3 = nn.Sequential(deconv(p, p, 3, 2), nn.GELU(), conv1x1(p, p))
        self.g_s0 = SFTResblk(m, p, h)
        self.g_s1 = SFTResblk(m, p, h)
        self.g_s2 = nn.Sequential(conv3x3(m, c), *_bottlenecks(c))
        self.g_s2_ref = SFT(c, p, h)
        self.g_s3 = nn.Sequential(ResidualBlockUpsample(c, c), *_bottlenecks(c))
        self.g_s3_ref = SFT(c, p, h)
        self.g_s4 = conv3x3(c, cfg.latent_ch)

    def forward(self, y_hat: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # Concatenation order (w, ŷ) is fixed by the published weights.
        d1 = self.sft_feature_gs1(torch.cat([w, y_hat], dim=1))
        d2 = self.sft_feature_gs2(d1)
        d3 = self.sft_feature_gs3(d2)
        h = self.g_s1(self.g_s0(y_hat, d1), d1)
        h = self.g_s2_ref(self.g_s2(h), d2)
        h = self.g_s3_ref(self.g_s3(h), d3)
        return self.g_s4(h)

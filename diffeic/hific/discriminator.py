"""HiFiC's conditional patch discriminator D(x, ŷ) (Mentzer et al. 2020, Fig. 2; training only).

ŷ goes through a 3×3 conv to 12 channels and LeakyReLU(0.2), is upsampled to the image size by
nearest neighbour and concatenated with the image; then 4×4 convs with stride 2 (64, 128, 256),
a 4×4 conv with stride 1 (512) and a 4×4 conv to one logit per patch.  The authors' release uses
SpectralNorm on every conv and a single scale — which is also the discriminator of the
HiFiC+XGBoost paper's variant; ``disc_norm="instance"`` with ``disc_scales`` 2–3 gives the
pix2pixHD-style multi-scale InstanceNorm discriminator of Agustsson et al. 2019 ("GC") instead.
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .config import HiFiCConfig


class _PatchDiscriminator(nn.Module):
    def __init__(self, cfg: HiFiCConfig) -> None:
        super().__init__()
        sn = cfg.disc_norm == "spectral"

        def conv(cin: int, cout: int, k: int, stride: int, norm: bool) -> List[nn.Module]:
            layer = nn.Conv2d(cin, cout, k, stride=stride, padding=1 if stride == 2 else "same")
            out = [spectral_norm(layer) if sn else layer]
            if norm and not sn:
                out.append(nn.InstanceNorm2d(cout, affine=True))
            return out

        self.latent = nn.Sequential(*conv(cfg.latent_channels, cfg.disc_latent_channels, 3, 1, False), nn.LeakyReLU(0.2))
        layers: List[nn.Module] = []
        cin, width = 3 + cfg.disc_latent_channels, cfg.disc_base
        for i in range(cfg.disc_layers):
            layers += conv(cin, width, 4, 2, norm=i > 0) + [nn.LeakyReLU(0.2)]
            cin, width = width, min(width * 2, 512)
        layers += conv(cin, width, 4, 1, norm=True) + [nn.LeakyReLU(0.2)]
        layers += conv(width, 1, 4, 1, norm=False)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        lat = F.interpolate(self.latent(y_hat), size=x.shape[-2:], mode="nearest")
        return self.net(torch.cat([x, lat], dim=1))


class Discriminator(nn.Module):
    """D(x, ŷ) → patch logits flattened to ``(B, n_patches)`` (all scales concatenated).

    ``x`` is in [0, 1] (real image or reconstruction); ŷ is the quantised latent of the *real* image,
    so D judges whether x is a plausible image *for that latent* (the conditioning of paper §3.2).
    """

    def __init__(self, cfg: HiFiCConfig) -> None:
        super().__init__()
        self.scales = nn.ModuleList(_PatchDiscriminator(cfg) for _ in range(cfg.disc_scales))

    def forward(self, x: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        logits = []
        for i, d in enumerate(self.scales):
            xi = F.avg_pool2d(x, 2 ** i) if i else x
            logits.append(d(xi, y_hat).flatten(1))
        return torch.cat(logits, dim=1)


__all__ = ["Discriminator"]

"""Colour correction of a sampled latent toward the content variables (an option of the decoder).

A small diffusion prior tends to pull colours toward the mean of what it was trained on: the first
high-noise steps set them and the later steps keep them.  StableSR (Wang et al., "Exploiting Diffusion
Prior for Real-World Image Super-Resolution", IJCV 2024, Sec. 3.4) answers this with a wavelet colour fix:
the output keeps its own high frequencies and takes the low frequencies of the low-quality input.  Here the
same is done in the VAE's latent space, where the decoder already has ``z_c``: the sampled ``z_0`` keeps
what the diffusion added above a Gaussian low-pass and takes ``z_c``'s colours and shading below it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

#: Width of the low-pass, in latent pixels (σ = 1.5 latent pixels = 12 image pixels at the VAE's 1/8).
COLOUR_FIX_SIGMA = 1.5


def gaussian_lowpass(z: Tensor, sigma: float = COLOUR_FIX_SIGMA) -> Tensor:
    """Separable Gaussian blur of each channel of ``z`` (B, C, h, w), reflect-padded (replicate when tiny)."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=z.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = (k / k.sum()).to(z.dtype)
    c = z.shape[1]
    mode = "reflect" if min(z.shape[-2:]) > radius else "replicate"
    out = F.conv2d(F.pad(z, (radius, radius, 0, 0), mode=mode), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode=mode), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def colour_fix(z0: Tensor, z_c: Tensor, sigma: float = COLOUR_FIX_SIGMA) -> Tensor:
    """``z0 − lowpass(z0) + lowpass(z_c)``: the sample's detail on the content variables' colours."""
    if z0.shape != z_c.shape:
        raise ValueError(f"colour_fix needs latents of one shape, got {tuple(z0.shape)} and {tuple(z_c.shape)}")
    return z0 - gaussian_lowpass(z0, sigma) + gaussian_lowpass(z_c.to(z0.dtype), sigma)


__all__ = ["colour_fix", "gaussian_lowpass", "COLOUR_FIX_SIGMA"]

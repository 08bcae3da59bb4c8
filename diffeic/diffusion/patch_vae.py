"""A small frozen autoencoder for the CPU demo model: an orthogonal transform of 8×8 blocks plus learned corrections.

DiffEIC codes the latent of a frozen autoencoder (Li et al. 2024, §III-B, Fig. 2); at toy width no pretrained
one exists, so the demo model trains its own.  A small ``AutoencoderKL`` learns slowly on two CPU cores: its
full-resolution layers cost most of the compute, and from a random start it outputs the training set's mean
colour for thousands of steps.  This one starts where a linear transform coder starts (the Karhunen–Loève
transform of JPEG-sized blocks: Goyal, "Theoretical foundations of transform coding", IEEE SPM 2001):

* encoder: ``x → pixel_unshuffle(x, 8)`` (192 values per block) ``→ Pᵀ(u − μ) + E(u)``;
* decoder: ``z → pixel_shuffle(P z + μ + D(z), 8) + R(·)``;

where ``P`` (192 × C, orthonormal columns) and ``μ`` are the principal directions and mean of training blocks
(:meth:`PatchAutoencoder.fit_blocks`), ``E`` and ``D`` are residual networks at 1/8 resolution and ``R`` a small
full-resolution one that removes block edges; their last layers start at zero, so training starts from the
linear coder (12 of 192 values keep about 29 dB on scikit-image's photos) and can only refine it.  With ``P``
orthonormal, squared error in the latent equals squared pixel error of the block projection, which suits the
LFGCM's space-alignment loss (§III-D, Eq. 9) and the diffusion prior's noise.

The encoder is deterministic: its posterior is a point mass (log-variance −30, diffusers' floor), so
``FrozenBackbone.encode`` gives the same latent whether it samples or not.
"""
from __future__ import annotations

from typing import Any, Dict, Type, Union

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

Tensor = torch.Tensor
CLASS_KEY = "_class_name"       # as in diffusers' config.json


class _Residual(nn.Module):
    """``x + conv(silu(conv(silu(x))))`` with the second convolution starting at zero (an identity block)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


def _branch(c_in: int, width: int, blocks: int, c_out: int) -> nn.Sequential:
    last = nn.Conv2d(width, c_out, 3, padding=1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(nn.Conv2d(c_in, width, 3, padding=1), *[_Residual(width) for _ in range(blocks)],
                         nn.SiLU(), last)


class PatchAutoencoder(ModelMixin, ConfigMixin):
    """Block-transform autoencoder with the ``AutoencoderKL`` interface the library uses (see the module doc).

    Args:
        in_channels / out_channels: image channels (3).
        latent_channels: latent values per 8×8 block.
        patch: block side (the latent's downsampling factor, 8 as SD's VAE).
        encoder_width / encoder_blocks: the encoder's residual branch ``E``.
        decoder_width / decoder_blocks: the decoder's residual branch ``D``.
        refine_width: the full-resolution deblocking branch ``R``.
        scaling_factor: kept for diffusers' config compatibility (the library's preset holds the one in use).
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, out_channels: int = 3, latent_channels: int = 12, patch: int = 8,
                 encoder_width: int = 64, encoder_blocks: int = 2, decoder_width: int = 128,
                 decoder_blocks: int = 4, refine_width: int = 16, scaling_factor: float = 0.18215) -> None:
        super().__init__()
        if in_channels != out_channels:
            raise ValueError(f"PatchAutoencoder needs in_channels == out_channels, got {in_channels}, {out_channels}")
        block = in_channels * patch * patch
        if not 0 < latent_channels <= block:
            raise ValueError(f"latent_channels must be in [1, {block}] for blocks of side {patch}, got {latent_channels}")
        # The linear coder: orthonormal columns (the identity's first columns until fit_blocks replaces them).
        self.register_buffer("basis", torch.eye(block)[:, :latent_channels].contiguous())
        self.register_buffer("block_mean", torch.zeros(block))
        self.encoder_residual = _branch(block, encoder_width, encoder_blocks, latent_channels)
        self.decoder_residual = _branch(latent_channels, decoder_width, decoder_blocks, block)
        self.refine = _branch(in_channels, refine_width, 1, out_channels)
        # Latent = block_scale · Pᵀ(u − μ): a fixed rescaling so the latent has unit variance on the fitted blocks.
        self.register_buffer("block_scale", torch.ones(()))

    # ------------------------------------------------------------------ fitting the linear coder
    @torch.no_grad()
    def fit_blocks(self, images: Tensor) -> None:
        """Set ``P``, ``μ`` and the latent scale from images in [-1, 1] (principal directions of their blocks)."""
        p = self.config.patch
        if images.shape[-1] % p or images.shape[-2] % p:
            raise ValueError(f"fit_blocks needs sides that are multiples of {p}, got {tuple(images.shape[-2:])}")
        blocks = F.pixel_unshuffle(images.float(), p).permute(0, 2, 3, 1).reshape(-1, self.basis.shape[0])
        mean = blocks.mean(0)
        centred = (blocks - mean).double()
        eigval, eigvec = torch.linalg.eigh(centred.T @ centred / max(1, centred.shape[0] - 1))
        keep = eigvec[:, eigval.argsort(descending=True)[: self.config.latent_channels]]
        # Eigenvectors have no sign: fix it (largest entry positive) so a refit gives the same latent.
        keep = keep * torch.sign(keep.gather(0, keep.abs().argmax(0, keepdim=True)))
        self.basis.copy_(keep.float())
        self.block_mean.copy_(mean)
        spread = float((centred.float() @ self.basis).std())
        self.block_scale.fill_(1.0 / (self.config.scaling_factor * max(spread, 1e-8)))

    # ------------------------------------------------------------------ the AutoencoderKL interface
    def encode(self, x: Tensor, return_dict: bool = True) -> Union[AutoencoderKLOutput, tuple]:
        u = F.pixel_unshuffle(x, self.config.patch)
        linear = torch.einsum("bkhw,kc->bchw", u - self.block_mean.view(1, -1, 1, 1), self.basis)
        z = (linear + self.encoder_residual(u)) * self.block_scale
        dist = DiagonalGaussianDistribution(torch.cat([z, torch.full_like(z, -30.0)], 1))
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: Tensor, return_dict: bool = True, generator: Any = None) -> Union[DecoderOutput, tuple]:
        z = z / self.block_scale
        u = torch.einsum("bchw,kc->bkhw", z, self.basis) + self.block_mean.view(1, -1, 1, 1)
        x = F.pixel_shuffle(u + self.decoder_residual(z), self.config.patch)
        x = x + self.refine(x)
        return DecoderOutput(sample=x) if return_dict else (x,)

    def enable_slicing(self) -> None:
        """No-op: the decoder holds no full-resolution state worth slicing (AutoencoderKL interface)."""

    def disable_slicing(self) -> None:
        """No-op (AutoencoderKL interface)."""


def vae_class(arch: Dict[str, Any]) -> Type[ModelMixin]:
    """The autoencoder class a backbone config names (``_class_name``; ``AutoencoderKL`` when absent)."""
    name = arch.get(CLASS_KEY, AutoencoderKL.__name__)
    classes = {c.__name__: c for c in (AutoencoderKL, PatchAutoencoder)}
    if name not in classes:
        raise ValueError(f"backbone.vae.{CLASS_KEY} = {name!r}: choose from {', '.join(sorted(classes))}")
    return classes[name]


def build_vae(arch: Dict[str, Any]) -> ModelMixin:
    """A randomly initialised autoencoder from a backbone config's ``vae`` mapping."""
    return vae_class(arch)(**{k: v for k, v in arch.items() if k != CLASS_KEY})


__all__ = ["PatchAutoencoder", "vae_class", "build_vae"]

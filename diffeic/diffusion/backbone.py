"""The frozen Stable Diffusion 2.1 parts: VAE, UNet and the cached empty-prompt embedding.

Contract used by the rest of the library (keep these names):

* ``FrozenBackbone.from_config(cfg: BackboneConfig, seed: int)`` – random, deterministic init
  from the explicit diffusers configs; never downloads.
* ``FrozenBackbone.encode(x01, sample=False, generator=None)`` – ``scale_factor`` times the VAE
  posterior mode (inference) or a posterior sample (training) of an image in [0, 1] (spec §2).
* ``FrozenBackbone.decode(z)`` – image in [0, 1] from a scaled latent.
* ``FrozenBackbone.text_embedding`` – buffer ``(1, text_len, cross_attention_dim)``.
* ``FrozenBackbone.fingerprint()`` – short content hash of the UNet + VAE tensors.
"""
from __future__ import annotations

import hashlib
from typing import Optional

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import nn

from ..config import BackboneConfig


class FrozenBackbone(nn.Module):
    """Frozen SD VAE + UNet + empty-prompt embedding; always in eval mode, never trained."""

    def __init__(self, vae: AutoencoderKL, unet: UNet2DConditionModel, text_embedding: torch.Tensor,
                 scale_factor: float = 0.18215) -> None:
        super().__init__()
        self.vae = vae
        self.unet = unet
        self.scale_factor = float(scale_factor)
        self.register_buffer("text_embedding", text_embedding.detach().clone(), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenBackbone":
        # Frozen parts stay in eval mode whatever the parent module does.
        return super().train(False)

    @classmethod
    def from_config(cls, cfg: BackboneConfig, seed: int = 0) -> "FrozenBackbone":
        gen_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            vae = AutoencoderKL(**cfg.vae)
            unet = UNet2DConditionModel(**cfg.unet)
            dim = unet.config.cross_attention_dim
            text = torch.randn(1, cfg.text_len, dim)
        finally:
            torch.random.set_rng_state(gen_state)
        return cls(vae, unet, text, cfg.scale_factor)

    @torch.no_grad()
    def encode(self, x01: torch.Tensor, sample: bool = False,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        posterior = self.vae.encode(x01 * 2 - 1).latent_dist
        z = posterior.sample(generator) if sample else posterior.mode()
        return z * self.scale_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.vae.decode(z / self.scale_factor).sample
        return ((x + 1) / 2).clamp(0, 1)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for name, t in list(self.unet.state_dict().items()) + list(self.vae.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

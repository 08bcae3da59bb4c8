"""The frozen Stable Diffusion 2.1 parts: VAE, UNet and the cached empty-prompt embedding.

Contract used by the rest of the library (keep these names):

* ``FrozenBackbone.from_config(cfg: BackboneConfig, seed: int)`` – random, deterministic init
  from the explicit diffusers configs; never downloads.
* ``FrozenBackbone.from_pretrained(cfg, sd_path=None, cache_dir=None)`` – pretrained SD2.1-base from a
  hub id, a local diffusers folder or the original single file (see :mod:`.sd_source`); raises
  :class:`BackboneUnavailableError` when the weights cannot be found.
* ``FrozenBackbone.save_pretrained(folder)`` – a local diffusers folder (``vae/``, ``unet/``,
  ``empty_prompt.safetensors``) that ``from_pretrained`` loads without any text encoder.
* ``FrozenBackbone.encode(x01, sample=False, generator=None)`` – ``scale_factor`` times the VAE
  posterior mode (inference) or a posterior sample (training) of an image in [0, 1] (official ``model/diffeic.py``).
* ``FrozenBackbone.decode(z)`` – image in [0, 1] from a scaled latent.
* ``FrozenBackbone.text_embedding`` – buffer ``(1, text_len, cross_attention_dim)``.
* ``FrozenBackbone.fingerprint()`` – short content hash of the UNet + VAE tensors (computed once).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional, Union

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import nn

from ..config import BackboneConfig
from .patch_vae import build_vae
from .sd_source import (EMBEDDING_FILE, BackboneUnavailableError, empty_prompt_embedding, load_single_file_state,
                        load_vae_unet, resolve_source, save_embedding_file)

__all__ = ["FrozenBackbone", "BackboneUnavailableError"]


class FrozenBackbone(nn.Module):
    """Frozen SD VAE + UNet + empty-prompt embedding; always in eval mode, never trained."""

    def __init__(self, vae: AutoencoderKL, unet: UNet2DConditionModel, text_embedding: torch.Tensor,
                 scale_factor: float = 0.18215) -> None:
        super().__init__()
        self.vae = vae
        self.unet = unet
        self.scale_factor = float(scale_factor)
        self.register_buffer("text_embedding", text_embedding.detach().clone(), persistent=False)
        self.source: Optional[str] = None          # where the weights came from (None: random init)
        self._fingerprint: Optional[str] = None
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
            vae = build_vae(cfg.vae)
            unet = UNet2DConditionModel(**cfg.unet)
            dim = unet.config.cross_attention_dim
            text = torch.randn(1, cfg.text_len, dim)
        finally:
            torch.random.set_rng_state(gen_state)
        return cls(vae, unet, text, cfg.scale_factor)

    @classmethod
    def from_pretrained(cls, cfg: BackboneConfig, sd_path: Optional[str] = None,
                        cache_dir: Optional[str] = None) -> "FrozenBackbone":
        """Pretrained SD2.1-base VAE + UNet + empty-prompt embedding ([Li2024] Sec. III-C).

        Args:
            cfg: the backbone config; its ``vae``/``unet`` dicts describe the expected architecture
                (and serve as the configs of single-file loading).
            sd_path: hub id, local diffusers folder, or ``v2-1_512-ema-pruned.safetensors``/``.ckpt``;
                default ``cfg.resolved_sd_path()`` (config → ``DIFFEIC_SD_PATH`` → community mirror).
            cache_dir: where the computed empty-prompt embedding is cached (default
                ``DIFFEIC_CACHE_DIR`` or ``~/.cache/diffeic``).

        Raises:
            BackboneUnavailableError: weights or embedding not found/readable (fails fast offline).
            ValueError: the weights are of a different architecture than ``cfg`` describes.
        """
        source = resolve_source(cfg.resolved_sd_path(sd_path))
        # A single file is read once and shared by the VAE/UNet and the text-encoder conversion.
        state = load_single_file_state(source) if source.kind == "single_file" else None
        vae, unet = load_vae_unet(source, cfg, state)
        text = empty_prompt_embedding(source, cfg, unet.config.cross_attention_dim, cache_dir, state)
        del state
        backbone = cls(vae.float(), unet.float(), text, cfg.scale_factor)
        backbone.source = source.location
        return backbone

    def save_pretrained(self, folder: Union[str, Path]) -> Path:
        """Write ``vae/``, ``unet/`` (diffusers, safetensors) and ``empty_prompt.safetensors`` to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.vae.save_pretrained(os.fspath(folder / "vae"))
        self.unet.save_pretrained(os.fspath(folder / "unet"))
        save_embedding_file(self.text_embedding, folder / EMBEDDING_FILE)
        return folder

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
        """sha256 (16 hex digits) over the UNet + VAE tensor names and fp32 values; cached after the first call."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for name, t in list(self.unet.state_dict().items()) + list(self.vae.state_dict().items()):
                h.update(name.encode())
                h.update(t.detach().to("cpu", torch.float32).contiguous().numpy())   # buffer, no copy
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

"""LFGCM: the latent-feature-guided compression module (spec §3–4).

``x`` (and its SD-VAE latent ``z_g`` as guidance) → ``y`` → ``z`` → one rANS string; the decoder
rebuilds ``ŷ, ẑ`` from the string and synthesises the content variables ``z_c``.  Inputs must be
padded to multiples of 64 (the codec does that).
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from ..config import LFGCMConfig
from .entropy import SliceCheckerboardEntropyModel
from .transforms import (AnalysisTransform, HyperAnalysisTransform, HyperSynthesisTransform, SynthesisTransform,
                         information_extraction)

#: Spatial stride of y relative to the image, and of the image padding multiple.
Y_STRIDE = 16
PAD_MULTIPLE = 64


class LFGCM(SliceCheckerboardEntropyModel):
    """Hyperprior codec whose decoder outputs SD-latent content variables ``z_c`` instead of pixels."""

    def __init__(self, cfg: LFGCMConfig) -> None:
        super().__init__(cfg)
        self.cfg = cfg
        self.encoder = AnalysisTransform(cfg)
        self.hyper_enc = HyperAnalysisTransform(cfg)
        self.hyper_dec = HyperSynthesisTransform(cfg)
        self.f_c = information_extraction(cfg)
        self.decoder = SynthesisTransform(cfg)

    def synthesize(self, y_hat: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
        """``z_c = N_d(ŷ, f_c(ẑ))``."""
        return self.decoder(y_hat, self.f_c(z_hat))

    def forward(self, x: torch.Tensor, z_g: torch.Tensor) -> Dict[str, object]:
        """Training / rate-estimation pass: ``z_c``, ``y_hat``, ``z_hat`` and ``likelihoods`` {y, z}."""
        y = self.encoder(x, z_g)
        z = self.hyper_enc(y, z_g)
        out = self.latent_forward(y, z)
        out["z_c"] = self.synthesize(out["y_hat"], out["z_hat"])
        return out

    @torch.no_grad()
    def compress(self, x: torch.Tensor, z_g: torch.Tensor) -> Tuple[bytes, torch.Tensor, torch.Tensor]:
        """Code one padded image ``(1,3,H,W)`` → ``(string, y_hat, z_hat)``."""
        y = self.encoder(x, z_g)
        z = self.hyper_enc(y, z_g)
        return self.encode_latents(y, z)

    @torch.no_grad()
    def decompress(self, string: bytes, padded_hw: Tuple[int, int],
                   device: torch.device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode a string for a padded image size → ``(z_c, y_hat, z_hat)``."""
        h, w = padded_hw
        y_hat, z_hat = self.decode_latents(string, (h // Y_STRIDE, w // Y_STRIDE), device)
        return self.synthesize(y_hat, z_hat), y_hat, z_hat

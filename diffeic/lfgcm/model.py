"""LFGCM: the latent-feature-guided compression module ([Li2024] Sec. III-B).

``x`` (and its SD-VAE latent ``z_g`` as guidance) → ``y`` → ``z`` → one rANS string; the decoder
rebuilds ``ŷ, ẑ`` from the string and synthesises the content variables ``z_c``.  Inputs must be
padded to multiples of 64 (the codec does that).

With ``cfg.linear_paths`` (the CPU demo presets, not the paper's) two linear shortcuts run beside the deep
transforms: ``y += A(z_g)`` (a stride-2 2×2 convolution of the guidance latent) and ``z_c += S(ŷ)`` (a 1×1
convolution and a ×2 pixel shuffle).  Measured on the 12-channel demo latent: without them the transforms learn
the luma channel but not the two chroma channels in hundreds of steps (correlation with the target ≈ 0.1, even
with the loss on chroma alone and no quantisation), while a linear map learns them in ~100.

They start as a uniform scalar quantiser of the latent, the classic transform coder's starting point: ``A``
gathers each 2×2 block of ``z_g`` into y divided by :data:`LINEAR_START_STEP`, ``S`` puts it back times the
same step, and the deep branches' last layers start at zero, so at step 0 ``z_c = Δ·round(z_g/Δ)`` and training
refines from there.  Why: on the demo latent that quantiser alone (with a per-channel entropy code) gives
26 dB at 0.23 bpp on scikit-image's photos, where 1,200 steps of training from a random start gave 24 dB at 0.19
bpp on easier photos and 23 dB at 0.54 bpp on these.

A variable-rate LFGCM (``cfg.rate`` set) takes a rate parameter ``rate`` (q) in every pass and applies
gain units to y (:mod:`.variable_rate`); a fixed-rate one refuses it.

References:
[Li2024] Z. Li, Y. Zhou, H. Wei, C. Ge, J. Jiang, "Toward Extreme Image Compression with Latent Feature
    Guidance and Diffusion Prior", IEEE TCSVT 35(1):888–899, 2025 (arXiv:2404.18820, "Towards …").
    "official ``path``" names a file of the authors' implementation, github.com/huai-chang/DiffEIC.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch

from torch import nn

from ..config import LFGCMConfig
from .entropy import Z_STRIDE, SliceCheckerboardEntropyModel
from .variable_rate import RateGains, RateLike
from .transforms import (AnalysisTransform, HyperAnalysisTransform, HyperSynthesisTransform, SynthesisTransform,
                         information_extraction)

#: Quantiser step of the linear start (latent units): between the demo latent's top-rate optimum (~0.8 at λ = 0.5)
#: and finer steps; training moves it.
LINEAR_START_STEP = 0.5

#: Spatial stride of y relative to the image, of z relative to y, and the image padding multiple.
Y_STRIDE = 16
PAD_MULTIPLE = Y_STRIDE * Z_STRIDE


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
        if cfg.linear_paths:
            self.linear_analysis = nn.Conv2d(cfg.latent_ch, cfg.M, 2, 2)
            self.linear_synthesis = nn.Sequential(nn.Conv2d(cfg.M, 4 * cfg.latent_ch, 1), nn.PixelShuffle(2))
            self._start_as_block_quantiser(LINEAR_START_STEP)
        # Last, and without drawing random numbers: the other weights equal the fixed-rate model's.
        self.rate_gains = RateGains(cfg.M, cfg.rate) if cfg.rate is not None else None

    @torch.no_grad()
    def _start_as_block_quantiser(self, step: float) -> None:
        """``A``: space-to-depth / step into y's first 4·latent_ch channels; ``S``: its inverse; deep outputs 0."""
        analysis, synthesis = self.linear_analysis, self.linear_synthesis[0]
        for module in (analysis, synthesis, self.encoder.g_a6, self.decoder.g_s4):
            module.weight.zero_()
            module.bias.zero_()
        for c in range(self.cfg.latent_ch):
            for i in range(2):
                for j in range(2):
                    k = 4 * c + 2 * i + j          # PixelShuffle(2)'s order: channel c, row i, column j
                    analysis.weight[k, c, i, j] = 1.0 / step
                    synthesis.weight[k, k, 0, 0] = step

    def _rate(self, rate: Optional[RateLike], batch: int, device: torch.device) -> Optional[torch.Tensor]:
        if self.rate_gains is None:
            if rate is not None:
                raise ValueError("this LFGCM is fixed-rate (trained for one λ); a rate needs a variable-rate "
                                 "model (config lfgcm.rate, presets tiny_vr / sd21_vr)")
            return None
        if rate is None:
            raise ValueError("this LFGCM is variable-rate: pass rate=q in "
                             f"[{self.rate_gains.q_min:g}, {self.rate_gains.q_max:g}]")
        return self.rate_gains.as_batch(rate, batch, device)

    def analyse(self, x: torch.Tensor, z_g: torch.Tensor) -> torch.Tensor:
        """``y = N_e(x, z_g)`` (plus the linear shortcut ``A(z_g)`` when configured), before any rate gain."""
        y = self.encoder(x, z_g)
        return y + self.linear_analysis(z_g) if self.cfg.linear_paths else y

    def hyper_analyse(self, y: torch.Tensor, z_g: torch.Tensor,
                      rate: Optional[RateLike] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(ỹ, z)``: y with the rate's gain applied (variable-rate only), and its hyper-latent."""
        q = self._rate(rate, y.shape[0], y.device)
        if q is not None:
            y = y * self.rate_gains.gain(q)
        return y, self.hyper_enc(y, z_g)

    def synthesize(self, y_hat: torch.Tensor, z_hat: torch.Tensor,
                   rate: Optional[RateLike] = None) -> torch.Tensor:
        """``z_c = N_d(ŷ, f_c(ẑ))`` (ŷ times the rate's inverse gain for a variable-rate model)."""
        q = self._rate(rate, y_hat.shape[0], y_hat.device)
        if q is not None:
            y_hat = y_hat * self.rate_gains.inverse_gain(q)
        z_c = self.decoder(y_hat, self.f_c(z_hat))
        return z_c + self.linear_synthesis(y_hat) if self.cfg.linear_paths else z_c

    def forward(self, x: torch.Tensor, z_g: torch.Tensor, rate: Optional[RateLike] = None) -> Dict[str, object]:
        """Training / rate-estimation pass: ``z_c``, ``y_hat``, ``z_hat`` and ``likelihoods`` {y, z}."""
        y, z = self.hyper_analyse(self.analyse(x, z_g), z_g, rate)
        out = self.latent_forward(y, z)
        out["z_c"] = self.synthesize(out["y_hat"], out["z_hat"], rate)
        return out

    @torch.no_grad()
    def compress(self, x: torch.Tensor, z_g: torch.Tensor, rate: Optional[RateLike] = None) -> Dict[str, Any]:
        """Code padded images ``(B,3,H,W)`` guided by their VAE latents ``z_g`` → ``{"strings", "shape"}``.

        As in compressai's models: ``strings`` holds one list per stream kind — here one, since z and y share
        a single rANS string — with one string per batch item; ``shape`` is z's spatial size.  Each item is
        coded on its own, exactly as :meth:`decompress` decodes it.
        """
        return self.compressor(x, z_g)(rate)

    @torch.no_grad()
    def compressor(self, x: torch.Tensor, z_g: torch.Tensor) -> Callable[[Optional[RateLike]], Dict[str, Any]]:
        """``rate → compress(x, z_g, rate)``, with the analysis transform (which does not depend on the rate)
        run once: a search over rates for a target size probes it ~10 times per image."""
        y_unscaled = self.analyse(x, z_g)

        def at(rate: Optional[RateLike] = None) -> Dict[str, Any]:
            y, z = self.hyper_analyse(y_unscaled, z_g, rate)
            return {"strings": [[self.encode_latents(y[i:i + 1], z[i:i + 1])[0] for i in range(y.shape[0])]],
                    "shape": tuple(z.shape[-2:])}
        return at

    @torch.no_grad()
    def decompress(self, strings: Sequence[Sequence[bytes]], shape: Tuple[int, int],
                   rate: Optional[RateLike] = None) -> Dict[str, torch.Tensor]:
        """Inverse of :meth:`compress` → ``{"z_c", "y_hat", "z_hat"}``, one batch item per string.

        ``ŷ, ẑ`` are bit-identical on every device; a string that cannot be one :meth:`compress` wrote raises
        ``ValueError``.
        """
        device = self.entropy_bottleneck.quantiles.device
        self._rate(rate, len(strings[0]), device)           # refuse a bad rate before decoding anything
        y_hw = (shape[0] * Z_STRIDE, shape[1] * Z_STRIDE)
        y_hat, z_hat = (torch.cat(t) for t in zip(*(self.decode_latents(s, y_hw, device) for s in strings[0])))
        return {"z_c": self.synthesize(y_hat, z_hat, rate), "y_hat": y_hat, "z_hat": z_hat}

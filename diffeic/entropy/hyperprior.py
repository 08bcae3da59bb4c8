"""A mean-scale hyperprior latent coder over one rANS string, shared by the HiFiC and refinement codecs.

``y`` (M channels, stride 16) → hyper-analysis → ``z`` (stride 64) → factorised prior
(compressai's ``EntropyBottleneck``); ``ẑ`` → two hyper-synthesis nets → per-element mean μ and
scale σ of a Gaussian for ``y`` (compressai's ``GaussianConditional``).  This is the mean-scale
hyperprior of Minnen et al. 2018 (NeurIPS, §3, without the autoregressive context), laid out as in
HiFiC (Mentzer et al. 2020, the authors' released ``Hyperprior``: 3×3/5×5↓2/5×5↓2 analysis,
5×5↑2/5×5↑2/3×3 synthesis, separate mean and scale synthesis, ReLU, 64 scales from 0.11 to 256).

Like the LFGCM's entropy model it writes z and then y into **one** rANS string, and the nets that
choose CDFs (hyper-synthesis) run in the exact integer arithmetic of :mod:`diffeic.entropy.exact`, so
a stream encoded on one device decodes bit-exactly on any other.  It also follows the coder's safety
rules (:mod:`diffeic.entropy.rans`): loaded CDF tables are checked before the C++ coder sees them, no
non-finite or out-of-range value is coded, and a payload is decoded only if it can hold its symbols, its
latents stay in the coder's range and it is exactly the coding of what it decodes to.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from .. import _compressai  # noqa: F401  (compressai's import warning filtered there)
from compressai.ans import BufferedRansEncoder
from compressai.ops import quantize_ste
from torch import nn

from .exact import ACT_SCALE, ExactNet, from_grid, to_grid
from .latent_coder import Z_STRIDE, HyperpriorCoder
from .rans import check_canonical, check_encoder_latents, check_symbols, in_range


def hyper_analysis(M: int, hyper: int) -> nn.Sequential:
    """y → z: 3×3 conv, ReLU, 5×5 conv ↓2, ReLU, 5×5 conv ↓2."""
    return nn.Sequential(nn.Conv2d(M, hyper, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(hyper, hyper, 5, stride=2, padding=2), nn.ReLU(),
                         nn.Conv2d(hyper, hyper, 5, stride=2, padding=2))


def hyper_synthesis(hyper: int, M: int) -> nn.Sequential:
    """ẑ → μ or σ of y: 5×5 deconv ↑2, ReLU, 5×5 deconv ↑2, ReLU, 3×3 conv."""
    return nn.Sequential(nn.ConvTranspose2d(hyper, hyper, 5, stride=2, padding=2, output_padding=1), nn.ReLU(),
                         nn.ConvTranspose2d(hyper, hyper, 5, stride=2, padding=2, output_padding=1), nn.ReLU(),
                         nn.Conv2d(hyper, M, 3, padding=1))


class MeanScaleHyperprior(HyperpriorCoder, nn.Module):
    """Rate model and coder of a latent ``y``: ``forward`` for training, ``compress``/``decompress`` for streams.

    Args:
        M: channels of ``y``.
        hyper: channels of ``z`` and of the hyper transforms.
        scale_min, scale_max, scale_levels: the log-spaced σ table of the Gaussian CDFs.
    """

    def __init__(self, M: int, hyper: int, scale_min: float = 0.11, scale_max: float = 256.0,
                 scale_levels: int = 64) -> None:
        super().__init__()
        self.M, self.hyper = M, hyper
        self.h_a = hyper_analysis(M, hyper)
        self.h_s_mean = hyper_synthesis(hyper, M)
        self.h_s_scale = hyper_synthesis(hyper, M)
        self._init_coding(hyper, scale_min, scale_max, scale_levels)

    # ------------------------------------------------------------------ training / rate estimate
    def forward(self, y: torch.Tensor) -> Dict[str, object]:
        """``{"y_hat", "z_hat", "likelihoods": {"y", "z"}}``.

        Training mode: likelihoods under additive uniform noise (the rate term), values passed on by
        mean-shifted straight-through rounding (as HiFiC feeds rounded latents to its generator).
        Eval mode: hard rounding throughout, so ``-log2`` of the likelihoods is the coded rate.
        """
        z = self.h_a(y)
        _, z_lik = self.entropy_bottleneck(z, training=self.training)
        m = self.z_medians()
        z_hat = quantize_ste(z - m) + m
        scales, means = self.h_s_scale(z_hat), self.h_s_mean(z_hat)
        _, y_lik = self.gaussian_conditional(y, scales, means, training=self.training)
        y_hat = quantize_ste(y - means) + means
        return {"y_hat": y_hat, "z_hat": z_hat, "likelihoods": {"y": y_lik, "z": z_lik}}

    def _exact_nets(self, device: torch.device) -> dict:
        return {"mean": ExactNet(self.h_s_mean).to(device), "scale": ExactNet(self.h_s_scale).to(device),
                "z_medians": to_grid(self.z_medians().cpu()).to(device)}

    # ------------------------------------------------------------------ coding
    @torch.no_grad()
    def compress(self, y: torch.Tensor) -> Tuple[bytes, torch.Tensor]:
        """Code one latent ``(1, M, h, w)`` → ``(string, y_hat)``; ``y_hat`` is exactly what :meth:`decompress` returns."""
        if y.dim() != 4 or y.shape[0] != 1:
            raise ValueError(f"compress codes one latent of shape (1, M, h, w), got {tuple(y.shape)}")
        eb_tab, gc_tab, exact = self._coding_state(y.device)
        z = self.h_a(y)
        check_encoder_latents(y=y, z=z)
        z_sym, z_rows = self._z_symbols(z, exact["z_medians"])
        encoder = BufferedRansEncoder()
        encoder.encode_with_indexes(z_sym.reshape(-1).tolist(), z_rows, eb_tab.cdf, eb_tab.lengths, eb_tab.offsets)
        scales, means = self._params(exact, z_sym)
        y_sym = check_symbols(torch.round(y.double() - means / ACT_SCALE).int())
        encoder.encode_with_indexes(y_sym.reshape(-1).tolist(), self._indexes(scales).reshape(-1).tolist(),
                                    gc_tab.cdf, gc_tab.lengths, gc_tab.offsets)
        return encoder.flush(), self._y_hat(y_sym, means)

    @staticmethod
    def _params(exact: dict, z_sym: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        z_hat = z_sym.double() * ACT_SCALE + exact["z_medians"]           # on the grid
        return exact["scale"](z_hat), exact["mean"](z_hat)

    def _y_hat(self, y_sym: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
        return from_grid(y_sym.double() * ACT_SCALE + means, self.entropy_bottleneck.quantiles.dtype)

    @torch.no_grad()
    def decompress(self, string: bytes, y_hw: Tuple[int, int], device: torch.device) -> torch.Tensor:
        """Inverse of :meth:`compress` for a ``y`` grid of ``y_hw`` (multiples of 4) → ``y_hat (1, M, h, w)``.

        Raises ``ValueError`` for a payload that cannot be one :meth:`compress` wrote: too short for its
        symbols (checked first), latents outside the exact coder's range, or bytes that are not exactly the
        coding of the decoded symbols.
        """
        eb_tab, gc_tab, exact = self._coding_state(device)
        decoder, z_values, z_rows = self._start_decoding(string, y_hw, eb_tab, gc_tab)
        h, w = y_hw
        z_sym = torch.tensor(z_values, dtype=torch.int32, device=device).view(1, self.hyper, h // Z_STRIDE,
                                                                              w // Z_STRIDE)
        in_range("z", z_sym.double() * ACT_SCALE + exact["z_medians"])
        scales, means = self._params(exact, z_sym)
        y_rows = self._indexes(scales).reshape(-1).tolist()
        y_values = decoder.decode_stream(y_rows, gc_tab.cdf, gc_tab.lengths, gc_tab.offsets)
        y_sym = torch.tensor(y_values, dtype=torch.int32, device=device).view(1, self.M, h, w)
        in_range("y", y_sym.double() * ACT_SCALE + means)
        check_canonical(string, [(z_values, z_rows, eb_tab.cdf, eb_tab.lengths, eb_tab.offsets),
                                 (y_values, y_rows, gc_tab.cdf, gc_tab.lengths, gc_tab.offsets)])
        return self._y_hat(y_sym, means)


__all__ = ["MeanScaleHyperprior", "hyper_analysis", "hyper_synthesis", "Z_STRIDE"]

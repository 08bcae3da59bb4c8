"""The entropy model of the LFGCM: factorised z + channel-slice × checkerboard Gaussian y ([Li2024] Sec. III-B).

``z`` uses compressai's ``EntropyBottleneck``; ``y`` is split into uneven channel slices, each coded
in two checkerboard passes (anchors = positions with (i+j) odd, then non-anchors) whose Gaussian
parameters come from the hyper parameters ψ, a channel context over all earlier slices and, for
non-anchors, a spatial context over the slice's decoded anchors (ELIC's SCCTX [He2022] with checkerboard
passes [He2021], as in DiffEIC).

Differences from compressai's composed latent codecs, on purpose:
* DiffEIC's channel context sees *all* previous slices and its parameter nets take
  ``[local, channel, ψ]`` in that order, which the published weights fix;
* the whole latent — z first, then every slice pass of y — goes into **one** rANS stream, because
  each stream costs flush bytes and a Kodak image at 0.02 bpp is only ~1 KB;
* coding computes σ and μ with the exact integer twin of the parameter networks
  (:mod:`diffeic.lfgcm.exact`), so any device decodes what any other device encoded.

The coding tables, the coder's safety checks and the z-then-y string are the shared entropy layer's
(:mod:`diffeic.entropy`); this module adds the LFGCM's own context model.

References:
[Li2024] Z. Li, Y. Zhou, H. Wei, C. Ge, J. Jiang, "Toward Extreme Image Compression with Latent Feature
    Guidance and Diffusion Prior", IEEE TCSVT 35(1):888–899, 2025 (arXiv:2404.18820, "Towards …").
    "official ``path``" names a file of the authors' implementation, github.com/huai-chang/DiffEIC.
[He2022] D. He, Z. Yang, W. Peng, R. Ma, H. Qin, Y. Wang, "ELIC: Efficient Learned Image Compression with
    Unevenly Grouped Space-Channel Contextual Adaptive Coding", CVPR 2022.
[He2021] D. He, Y. Zheng, B. Sun, Y. Wang, H. Qin, "Checkerboard Context Model for Efficient Learned Image
    Compression", CVPR 2021.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import torch
from .. import _compressai  # noqa: F401  (compressai's import warning filtered there)
from compressai.ans import BufferedRansEncoder
from torch import nn

from ..config import LFGCMConfig
from ..entropy.exact import ACT_SCALE, from_grid
from ..entropy.latent_coder import Z_STRIDE, HyperpriorCoder
from ..entropy.rans import check_canonical, check_encoder_latents, check_symbols, in_range
from .exact import ExactEntropyPath
from .layers import conv


class Fusion(nn.Module):
    """A named wrapper (``.fusion``) around a small parameter network, as in the published weights."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.fusion = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fusion(x)


def entropy_parameters(in_ch: int, out_ch: int) -> Fusion:
    """Three 1×1 convs: in → ⌊5·out/3⌋ → ⌊4·out/3⌋ → out (out = 2·C_k: scales then means)."""
    a, b = out_ch * 5 // 3, out_ch * 4 // 3
    return Fusion(nn.Conv2d(in_ch, a, 1), nn.GELU(), nn.Conv2d(a, b, 1), nn.GELU(), nn.Conv2d(b, out_ch, 1))


def channel_context(in_ch: int, out_ch: int, hidden: Tuple[int, int]) -> Fusion:
    """Three 5×5 convs over the concatenation of all previously decoded slices."""
    return Fusion(conv(in_ch, hidden[0], 5, 1), nn.GELU(), conv(hidden[0], hidden[1], 5, 1), nn.GELU(),
                  conv(hidden[1], out_ch, 5, 1))


def checkerboard_masks(h: int, w: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Boolean (h, w) masks: anchors where (i+j) is odd, non-anchors where it is even (official ``utils/ckbd.py``)."""
    ij = torch.arange(h, device=device)[:, None] + torch.arange(w, device=device)[None, :]
    anchor = (ij % 2) == 1
    return anchor, ~anchor


def _round_ste(v: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``round(v − μ) + μ`` as the coder computes it (in float64), with the gradient of ``v`` (STE)."""
    coded = (torch.round(v.detach().double() - mean.detach().double()).to(v.dtype) + mean).detach()
    return coded + (v - v.detach())      # forward value exactly ``coded``; d/dv = 1, d/dμ = 0


def _coder_value(value: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The exact twin's value (grid integers) in the forward pass, the float network's gradient."""
    return from_grid(grid, value.dtype) + (value - value.detach())


def _grid(v: torch.Tensor) -> torch.Tensor:
    """Values already on the 2^-8 grid → the exact path's integers (no clamp: the coder has none here)."""
    return v.detach().double() * ACT_SCALE


def slice_walk(nets, psi: torch.Tensor, n_slices: int, masks: Tuple[torch.Tensor, torch.Tensor],
               code_pass: Callable[..., torch.Tensor]) -> List[torch.Tensor]:
    """The one walk over y's channel slices and their two checkerboard passes (training, coding, decoding).

    ``nets``: the parameter networks by the model's attribute names — the model's float modules, or their
    exact integer twin (:class:`~diffeic.lfgcm.exact.ExactEntropyPath`).  Anchors' parameters come from ψ
    and a channel context over all earlier slices; non-anchors' from the same plus a spatial context over
    the slice's decoded anchors; the nets take ``[local, channel, ψ]`` in that order and give scales, then
    means (the published weights fix both orders).  ``code_pass(k, mask, scales, means)`` codes (or decodes)
    the positions ``mask`` of slice k and returns their values, zeros elsewhere.  Returns the slices.
    """
    decoded: List[torch.Tensor] = []
    for k in range(n_slices):
        ctx = [nets.channel_context[k](torch.cat(decoded, dim=1))] if k else []
        params = nets.entropy_parameters_anchor[k](torch.cat(ctx + [psi], dim=1))
        y_a = code_pass(k, masks[0], *params.chunk(2, dim=1))
        params = nets.entropy_parameters_nonanchor[k](torch.cat([nets.local_context[k](y_a)] + ctx + [psi], dim=1))
        decoded.append(y_a + code_pass(k, masks[1], *params.chunk(2, dim=1)))
    return decoded


class SliceCheckerboardEntropyModel(HyperpriorCoder, nn.Module):
    """Rate model and coder for ``(y, z)`` given the hyper-synthesis network ``self.hyper_dec``.

    Subclasses provide ``hyper_dec`` (ẑ → ψ with 2M channels at y's resolution).
    """

    hyper_dec: nn.Module

    def __init__(self, cfg: LFGCMConfig) -> None:
        super().__init__()
        self.slices: Tuple[int, ...] = tuple(cfg.slices)
        self.M = sum(self.slices)
        self.psi_ch = 2 * cfg.M
        self._init_coding(cfg.N, cfg.scale_min, cfg.scale_max, cfg.scale_levels)
        self.local_context = nn.ModuleList(conv(c, 2 * c, 5, 1) for c in self.slices)
        # Index 0 has no channel context (nothing decoded before the first slice).
        self.channel_context = nn.ModuleList(
            [nn.Identity()] + [channel_context(sum(self.slices[:k]), 2 * c, cfg.context_hidden)
                               for k, c in enumerate(self.slices) if k > 0])
        self.entropy_parameters_anchor = nn.ModuleList(
            entropy_parameters(self.psi_ch + (2 * c if k else 0), 2 * c) for k, c in enumerate(self.slices))
        self.entropy_parameters_nonanchor = nn.ModuleList(
            entropy_parameters(self.psi_ch + (4 * c if k else 2 * c), 2 * c) for k, c in enumerate(self.slices))

    def fingerprint_tensors(self) -> List[Tuple[str, torch.Tensor]]:
        """Everything the coder depends on, by name: all parameters and all buffers (the CDF tables, the
        scale table, the bounds), so a model that would decode differently has another fingerprint."""
        if getattr(self, "_param_names", None) is None:    # Parameter objects are stable; gather once
            self._param_names = list(self.named_parameters())
        return self._param_names + list(self.named_buffers())   # buffers are replaced on update()

    def _exact_nets(self, device: torch.device) -> ExactEntropyPath:
        return self._exact_path(device)       # training's and the coder's twin: one, compiled once

    def _exact_path(self, device: torch.device) -> ExactEntropyPath:
        """The exact integer twin of the current weights (recompiled whenever they change)."""
        key = self._weights_key()
        cached = getattr(self, "_exact_cache", None)
        if cached is None or cached[0] != key or cached[1].device != device:
            self._exact_cache = (key, ExactEntropyPath(self, device))
        return self._exact_cache[1]

    # ------------------------------------------------------------------ training / rate estimate
    def latent_forward(self, y: torch.Tensor, z: torch.Tensor) -> Dict[str, object]:
        """Quantised latents and their likelihoods, with the coder's values.

        In training mode the likelihoods use additive uniform noise (the rate term) while the values
        passed on use mean-shifted straight-through rounding (official ``LFGCM.forward``); in eval mode both use hard
        rounding, so ``-log2`` of the likelihoods is the rate the coder will spend (up to CDF precision).

        Training codes the way the coder codes: σ and μ are those of the exact integer twin
        (:mod:`diffeic.lfgcm.exact`) in the forward pass and those of the float networks in the backward
        pass (straight-through), and z's medians are the coder's grid-rounded ones.  So ``y_hat``,
        ``z_hat`` and the rate estimate use exactly the symbols and values that ``encode_latents``
        codes, rather than the float networks' own rounding of them.
        """
        exact = self._exact_path(y.device)
        _, z_lik = self.entropy_bottleneck(z, training=self.training)
        z_hat = _round_ste(z, from_grid(exact.z_medians, z.dtype))
        masks = checkerboard_masks(y.shape[-2], y.shape[-1], y.device)
        y_k = y.split(self.slices, dim=1)
        # First the exact twin's walk: σ and μ as the coder computes them, from the values it decodes ...
        coder_params: List[Tuple[torch.Tensor, torch.Tensor]] = []

        def exact_pass(k: int, mask: torch.Tensor, scales: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
            coder_params.append((scales, means))
            return _grid(_round_ste(y_k[k].detach(), from_grid(means, y.dtype)) * mask.to(y.dtype))

        slice_walk(exact, exact.psi(_grid(z_hat)), len(self.slices), masks, exact_pass)
        # ... then the float networks' walk: the coder's σ and μ forward, their own gradients backward.
        coder = iter(coder_params)
        liks: List[torch.Tensor] = []

        def float_pass(k: int, mask: torch.Tensor, scales: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
            scales_e, means_e = next(coder)
            scales, means = _coder_value(scales, scales_e), _coder_value(means, means_e)
            _, lik = self.gaussian_conditional(y_k[k], scales, means, training=self.training)
            liks.append(lik * mask.to(y.dtype))
            return _round_ste(y_k[k], means) * mask.to(y.dtype)

        decoded = slice_walk(self, self.hyper_dec(z_hat), len(self.slices), masks, float_pass)
        return {"y_hat": torch.cat(decoded, dim=1), "z_hat": z_hat,
                "likelihoods": {"y": torch.cat([a + n for a, n in zip(liks[::2], liks[1::2])], dim=1), "z": z_lik}}

    # ------------------------------------------------------------------ coding
    @torch.no_grad()
    def encode_latents(self, y: torch.Tensor, z: torch.Tensor) -> Tuple[bytes, torch.Tensor, torch.Tensor]:
        """Code one image's ``(y, z)`` (batch size 1) into a single rANS string.

        Returns ``(string, y_hat, z_hat)`` where the latents are exactly those the decoder rebuilds,
        on any device: σ and μ come from the exact integer path, on a 2^-8 grid.
        """
        (z_sym, z_idx), (y_sym, y_idx), y_hat, z_hat = self._latent_symbols(y, z)
        eb_tab, gc_tab, _ = self._coding_state(y.device)
        encoder = BufferedRansEncoder()
        encoder.encode_with_indexes(z_sym, z_idx, eb_tab.cdf, eb_tab.lengths, eb_tab.offsets)
        # One call for every pass of y: the CDF table crosses into C++ once, not once per pass.
        encoder.encode_with_indexes(y_sym, y_idx, gc_tab.cdf, gc_tab.lengths, gc_tab.offsets)
        return encoder.flush(), y_hat, z_hat

    @torch.no_grad()
    def official_strings(self, y: torch.Tensor, z: torch.Tensor) -> Tuple[bytes, bytes]:
        """The same symbols as :meth:`encode_latents`, coded as the official ``write_body`` stores them:
        ``(y_string, z_string)``, each its own rANS stream.  For rate comparisons only (evaluation's
        ``bpp_official``); ``(ŷ, ẑ)`` from a decoded stream give the same strings as ``(y, z)``.
        """
        (z_sym, z_idx), (y_sym, y_idx), _, _ = self._latent_symbols(y, z)
        eb_tab, gc_tab, _ = self._coding_state(y.device)
        strings = []
        for sym, idx, tab in ((y_sym, y_idx, gc_tab), (z_sym, z_idx, eb_tab)):
            encoder = BufferedRansEncoder()
            encoder.encode_with_indexes(sym, idx, tab.cdf, tab.lengths, tab.offsets)
            strings.append(encoder.flush())
        return strings[0], strings[1]

    def _latent_symbols(self, y: torch.Tensor, z: torch.Tensor):
        """``((z symbols, indexes), (y symbols, indexes), y_hat, z_hat)`` in coding order, as lists."""
        if y.shape[0] != 1 or z.shape[0] != 1:
            raise ValueError("encode_latents codes one image at a time (batch size 1)")
        check_encoder_latents(y=y, z=z)
        _, _, exact = self._coding_state(y.device)
        z_sym, z_rows = self._z_symbols(z, exact.z_medians)
        z_hat = exact.z_hat(z_sym)
        y_k = y.double().split(self.slices, dim=1)
        symbols: List[torch.Tensor] = []
        indexes: List[torch.Tensor] = []

        def encode_pass(k: int, mask: torch.Tensor, scales: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
            sym = torch.round(y_k[k][0][:, mask] - means[0][:, mask] / ACT_SCALE).int()
            symbols.append(sym.reshape(-1).cpu())
            indexes.append(self._indexes(scales[0][:, mask]).reshape(-1).cpu())
            return self._place(sym, means, mask)

        masks = checkerboard_masks(y.shape[-2], y.shape[-1], y.device)
        decoded = slice_walk(exact, exact.psi(z_hat), len(self.slices), masks, encode_pass)
        dtype = self.entropy_bottleneck.quantiles.dtype
        return ((z_sym.reshape(-1).tolist(), z_rows),
                (check_symbols(torch.cat(symbols)).tolist(), torch.cat(indexes).tolist()),
                from_grid(torch.cat(decoded, dim=1), dtype), from_grid(z_hat, dtype))

    @staticmethod
    def _place(sym: torch.Tensor, means: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ŷ on the grid at the pass's positions (zeros elsewhere): symbol + μ, exactly."""
        out = torch.zeros_like(means[0])
        out[:, mask] = sym.to(means.dtype) * ACT_SCALE + means[0][:, mask]
        return out.unsqueeze(0)

    @torch.no_grad()
    def decode_latents(self, string: bytes, y_hw: Tuple[int, int],
                       device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        """Inverse of :meth:`encode_latents`: ``(y_hat, z_hat)`` for a y grid of ``y_hw``.

        Raises ``ValueError`` for a payload that cannot be one :meth:`encode_latents` wrote: too short for
        its symbols (checked first), latents outside the exact coder's range (checked pass by pass), or
        bytes that are not exactly the coding of the decoded symbols (unused, altered or non-canonical).
        """
        eb_tab, gc_tab, exact = self._coding_state(device)
        decoder, z_sym, z_rows = self._start_decoding(string, y_hw, eb_tab, gc_tab)
        h, w = y_hw
        z_hat = in_range("z", exact.z_hat(torch.tensor(z_sym, dtype=torch.int32, device=device).view(
            1, self.entropy_bottleneck.channels, h // Z_STRIDE, w // Z_STRIDE)))
        y_sym: List[torch.Tensor] = []
        y_rows: List[torch.Tensor] = []

        def decode_pass(k: int, mask: torch.Tensor, scales: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
            idx = self._indexes(scales[0][:, mask]).reshape(-1).cpu()
            values = decoder.decode_stream(*gc_tab.subset(idx))
            y_sym.append(torch.tensor(values, dtype=torch.int32))
            y_rows.append(idx)
            return in_range("y", self._place(y_sym[-1].to(means.device).view(means.shape[1], -1), means, mask))

        decoded = slice_walk(exact, exact.psi(z_hat), len(self.slices), checkerboard_masks(h, w, device), decode_pass)
        check_canonical(string, [(z_sym, z_rows, eb_tab.cdf, eb_tab.lengths, eb_tab.offsets),
                                 (torch.cat(y_sym).tolist(), *gc_tab.subset(torch.cat(y_rows)))])
        dtype = self.entropy_bottleneck.quantiles.dtype
        return from_grid(torch.cat(decoded, dim=1), dtype), from_grid(z_hat, dtype)

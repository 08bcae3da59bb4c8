"""A mean-scale hyperprior latent coder over one rANS string, shared by the HiFiC and refinement codecs.

``y`` (M channels, stride 16) → hyper-analysis → ``z`` (stride 64) → factorised prior
(compressai's ``EntropyBottleneck``); ``ẑ`` → two hyper-synthesis nets → per-element mean μ and
scale σ of a Gaussian for ``y`` (compressai's ``GaussianConditional``).  This is the mean-scale
hyperprior of Minnen et al. 2018 (NeurIPS, §3, without the autoregressive context), laid out as in
HiFiC (Mentzer et al. 2020, the authors' released ``Hyperprior``: 3×3/5×5↓2/5×5↓2 analysis,
5×5↑2/5×5↑2/3×3 synthesis, separate mean and scale synthesis, ReLU, 64 scales from 0.11 to 256).

Like the LFGCM's entropy model it writes z and then y into **one** rANS string, and the nets that
choose CDFs (hyper-synthesis) run in the exact integer arithmetic of :mod:`diffeic.lfgcm.exact`, so
a stream encoded on one device decodes bit-exactly on any other.  It also follows the LFGCM's safety
rules (:mod:`diffeic.lfgcm.entropy`): loaded CDF tables are checked before the C++ coder sees them, no
non-finite or out-of-range value is coded, and a payload is decoded only if it can hold its symbols, its
latents stay in the coder's range and it is exactly the coding of what it decodes to.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, List, Optional, Tuple

import torch
from compressai.ans import BufferedRansEncoder, RansDecoder
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.ops import quantize_ste
from torch import nn

from .lfgcm.entropy import (_CodingTables, check_canonical, check_encoder_latents, check_entropy_tables,
                            check_payload_size, check_quantiles, check_symbols, in_range)
from .lfgcm.exact import ACT_SCALE, ExactNet, from_grid, to_grid

#: Stride of ``z`` relative to ``y``.
Z_STRIDE = 4
_TABLE_BUFFERS = {"entropy_bottleneck": ("_offset", "_quantized_cdf", "_cdf_length"),
                  "gaussian_conditional": ("_offset", "_quantized_cdf", "_cdf_length", "scale_table")}


class _Relu:
    """ReLU on grid integers: exact by construction."""

    def to(self, device: torch.device) -> "_Relu":
        return self

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        return a.clamp(min=0)


class _ExactReluNet(ExactNet):
    """:class:`ExactNet` that also compiles ReLU (the hyperprior's activation)."""

    @staticmethod
    def _compile(layer: nn.Module):
        return _Relu() if isinstance(layer, nn.ReLU) else ExactNet._compile(layer)


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


class MeanScaleHyperprior(nn.Module):
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
        self.entropy_bottleneck = EntropyBottleneck(hyper)
        self.gaussian_conditional = GaussianConditional(None, scale_bound=scale_min)
        # Python's math, not a vectorised kernel: every machine builds the same table.
        step = (math.log(scale_max) - math.log(scale_min)) / (scale_levels - 1)
        self._scale_table = torch.tensor([math.exp(math.log(scale_min) + i * step) for i in range(scale_levels)],
                                         dtype=torch.float32)
        self._coding: Optional[tuple] = None
        self._tables_key: Optional[tuple] = None
        self.register_load_state_dict_post_hook(_check_loaded_tables)

    # ------------------------------------------------------------------ training / rate estimate
    def z_medians(self) -> torch.Tensor:
        return self.entropy_bottleneck.quantiles[:, 0, 1].detach().view(1, -1, 1, 1)

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

    def aux_loss(self) -> torch.Tensor:
        return self.entropy_bottleneck.loss()

    # ------------------------------------------------------------------ tables
    def update(self, force: bool = False) -> bool:
        """Rebuild the CDF tables on the CPU (identical on every machine) and copy them to the model's device."""
        check_quantiles(self.entropy_bottleneck.quantiles)
        updated = False
        for name, buffers in _TABLE_BUFFERS.items():
            module = getattr(self, name)
            device = module.likelihood_lower_bound.bound.device
            cpu = copy.deepcopy(module).cpu().float()
            changed = (cpu.update(force=force) if name == "entropy_bottleneck"
                       else cpu.update_scale_table(self._scale_table, force=force))
            if changed:
                for buf in buffers:
                    setattr(module, buf, getattr(cpu, buf).to(device))
            updated |= bool(changed)
        self._coding = None
        self._tables_key = self._weights_key()
        return updated

    def refresh_tables(self) -> None:
        """Rebuild the tables if any weight changed since they were built or loaded."""
        if self._tables_key != self._weights_key():
            self.update(force=True)

    def table_names(self) -> List[str]:
        """State-dict names of the coder's tables (derived from the weights by ``update``; resized on load)."""
        return [f"{m}.{b}" for m, bufs in _TABLE_BUFFERS.items() for b in bufs]

    def _weights_key(self) -> tuple:
        if getattr(self, "_param_list", None) is None:     # Parameter objects are stable; gather once
            self._param_list = list(self.parameters())
        return tuple((p.data_ptr(), p._version) for p in self._param_list)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # CDF tables have data-dependent sizes: resize ours to the saved ones before copying.
        for name, buffers in _TABLE_BUFFERS.items():
            module = getattr(self, name)
            for buf in buffers:
                key = f"{prefix}{name}.{buf}"
                if key in state_dict and getattr(module, buf).shape != state_dict[key].shape:
                    setattr(module, buf, torch.empty_like(state_dict[key], device=getattr(module, buf).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        has_tables = all(state_dict.get(f"{prefix}{n}._offset", torch.empty(0)).numel() for n in _TABLE_BUFFERS)
        self._coding = None
        self._tables_key = self._weights_key() if has_tables else None

    def _coding_state(self, device: torch.device):
        self.refresh_tables()
        if self._coding is None or self._coding[0] != self._tables_key or self._coding[1] != device:
            exact = {"mean": _ExactReluNet(self.h_s_mean).to(device), "scale": _ExactReluNet(self.h_s_scale).to(device),
                     "z_medians": to_grid(self.z_medians().cpu()).to(device)}
            self._coding = (self._tables_key, device, _CodingTables(self.entropy_bottleneck),
                            _CodingTables(self.gaussian_conditional), exact)
        return self._coding[2], self._coding[3], self._coding[4]

    # ------------------------------------------------------------------ coding
    def _indexes(self, scales_grid: torch.Tensor) -> torch.Tensor:
        """CDF index per element: the scale-table entries (but the last) below max(σ, bound) — σ on the exact grid."""
        gc = self.gaussian_conditional
        table = gc.scale_table.to(scales_grid.device)
        sigma = torch.clamp(from_grid(scales_grid), min=float(gc.lower_bound_scale.bound))
        return torch.bucketize(sigma, table[:-1]).int()

    @torch.no_grad()
    def compress(self, y: torch.Tensor) -> Tuple[bytes, torch.Tensor]:
        """Code one latent ``(1, M, h, w)`` → ``(string, y_hat)``; ``y_hat`` is exactly what :meth:`decompress` returns."""
        if y.dim() != 4 or y.shape[0] != 1:
            raise ValueError(f"compress codes one latent of shape (1, M, h, w), got {tuple(y.shape)}")
        eb_tab, gc_tab, exact = self._coding_state(y.device)
        z = self.h_a(y)
        check_encoder_latents(y=y, z=z)
        z_sym = check_symbols(torch.round(z.double() - exact["z_medians"] / ACT_SCALE).int())
        z_idx = torch.arange(z.shape[1], dtype=torch.int32).view(1, -1, 1, 1).expand(z_sym.shape)
        encoder = BufferedRansEncoder()
        encoder.encode_with_indexes(z_sym.reshape(-1).tolist(), z_idx.reshape(-1).tolist(),
                                    eb_tab.cdf, eb_tab.lengths, eb_tab.offsets)
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

    def symbol_count(self, y_hw: Tuple[int, int]) -> int:
        h, w = y_hw
        return self.M * h * w + self.hyper * (h // Z_STRIDE) * (w // Z_STRIDE)

    @torch.no_grad()
    def decompress(self, string: bytes, y_hw: Tuple[int, int], device: torch.device) -> torch.Tensor:
        """Inverse of :meth:`compress` for a ``y`` grid of ``y_hw`` (multiples of 4) → ``y_hat (1, M, h, w)``.

        Raises ``ValueError`` for a payload that cannot be one :meth:`compress` wrote: too short for its
        symbols (checked first), latents outside the exact coder's range, or bytes that are not exactly the
        coding of the decoded symbols.
        """
        eb_tab, gc_tab, exact = self._coding_state(device)
        h, w = y_hw
        hz, wz = h // Z_STRIDE, w // Z_STRIDE
        check_payload_size(string, [(self.hyper * hz * wz, eb_tab), (self.M * h * w, gc_tab)], f"a {h}x{w} latent")
        decoder = RansDecoder()
        # The C++ decoder reads words without bounds checks: zero padding bounded by the symbol count
        # keeps a crafted stream from reading past the buffer (as in the LFGCM's decoder).
        decoder.set_stream(bytes(string) + bytes(4 * self.symbol_count(y_hw) + 16 * len(string) + 64))
        z_idx = torch.arange(self.hyper, dtype=torch.int32).view(-1, 1, 1).expand(self.hyper, hz, wz)
        z_rows = z_idx.reshape(-1).tolist()
        z_values = decoder.decode_stream(z_rows, eb_tab.cdf, eb_tab.lengths, eb_tab.offsets)
        z_sym = torch.tensor(z_values, dtype=torch.int32, device=device).view(1, self.hyper, hz, wz)
        in_range("z", z_sym.double() * ACT_SCALE + exact["z_medians"])
        scales, means = self._params(exact, z_sym)
        y_rows = self._indexes(scales).reshape(-1).tolist()
        y_values = decoder.decode_stream(y_rows, gc_tab.cdf, gc_tab.lengths, gc_tab.offsets)
        y_sym = torch.tensor(y_values, dtype=torch.int32, device=device).view(1, self.M, h, w)
        in_range("y", y_sym.double() * ACT_SCALE + means)
        check_canonical(string, [(z_values, z_rows, eb_tab.cdf, eb_tab.lengths, eb_tab.offsets),
                                 (y_values, y_rows, gc_tab.cdf, gc_tab.lengths, gc_tab.offsets)])
        return self._y_hat(y_sym, means)


def _check_loaded_tables(module: MeanScaleHyperprior, incompatible_keys) -> None:
    # After the whole load (the tables and quantiles live in child modules): the C++ coder trusts the
    # tables blindly, and NaN quantiles would hang it, so neither is accepted from a file.
    check_quantiles(module.entropy_bottleneck.quantiles)
    if module.entropy_bottleneck._offset.numel() and module.gaussian_conditional._offset.numel():
        check_entropy_tables(module.entropy_bottleneck, module.gaussian_conditional)


__all__ = ["MeanScaleHyperprior", "hyper_analysis", "hyper_synthesis", "Z_STRIDE"]

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

import copy
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from .. import _compressai  # noqa: F401  (compressai's import warning filtered there)
from compressai.ans import BufferedRansEncoder, RansDecoder
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from torch import nn

from ..config import LFGCMConfig
from ..sizes import size_text
from .exact import ACT_CLIP, ACT_SCALE, LATENT_LIMIT, ExactEntropyPath, from_grid
from .layers import conv

#: The buffers the rANS coder reads, per entropy model: built by ``update``, saved with the weights,
#: resized and checked when loaded (:class:`CodingTables`), and part of the model fingerprint. The one
#: list of them, for every coder built on compressai's entropy models (this LFGCM, diffeic.hyperprior).
CODING_TABLES: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("entropy_bottleneck", ("_offset", "_quantized_cdf", "_cdf_length")),
    ("gaussian_conditional", ("_offset", "_quantized_cdf", "_cdf_length", "scale_table")),
)
#: Spatial stride of z relative to y (the hyper-analysis downsamples twice by 2).
Z_STRIDE = 4
CDF_PRECISION = 16                     # compressai's CDFs end at 2^16
#: A symbol costs at least log2(2^16 / largest frequency) bits, less what one rANS step can lose to
#: rounding: the state before a step is at least 2^15 x frequency, so x' / x > (2^16 / f)(1 - 2^-15).
_RANS_STEP_SLACK = math.log2(1 + 2.0 ** -15)


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


class _CodingTables:
    """Python-list copies of an entropy model's CDF tables, made once per ``update``.

    ``min_bits``: a lower bound on the bits any symbol coded with these tables adds to a stream.
    """

    def __init__(self, model) -> None:
        self.cdf = model._quantized_cdf.tolist()
        self.lengths = model._cdf_length.reshape(-1).int().tolist()
        self.offsets = model._offset.reshape(-1).int().tolist()
        f_max = max(max(row[j + 1] - row[j] for j in range(n - 1)) for row, n in zip(self.cdf, self.lengths))
        self.min_bits = max(0.0, CDF_PRECISION - math.log2(f_max) - _RANS_STEP_SLACK)

    def subset(self, indexes: torch.Tensor) -> Tuple[list, list, list, list]:
        """``(indexes, cdf, lengths, offsets)`` with only the rows ``indexes`` use, renumbered into them:
        handing the C++ coder the full table on every call dominated decoding time."""
        used, local = torch.unique(indexes, return_inverse=True)
        rows = used.tolist()
        return (local.tolist(), [self.cdf[r] for r in rows], [self.lengths[r] for r in rows],
                [self.offsets[r] for r in rows])


def check_cdf_table(name: str, cdf: torch.Tensor, lengths: torch.Tensor, offsets: torch.Tensor, rows: int) -> None:
    """Refuse a CDF table that compressai's C++ coder would trust blindly (it divides by frequencies and
    indexes rows without bounds checks): ``rows`` rows of ``lengths[i] >= 2`` entries rising strictly from
    0 to 2^16, offsets in ``[-(length-2), 0]``, all int32."""
    def bad(what: str, index: Optional[torch.Tensor] = None) -> ValueError:
        row = f" (row {int(index.nonzero()[0, 0])})" if index is not None else ""
        return ValueError(f"coding table {name} is corrupt: {what}{row}; rebuild it with lfgcm.update(force=True)")

    if any(t.dtype != torch.int32 for t in (cdf, lengths, offsets)):
        raise bad(f"dtypes {cdf.dtype}, {lengths.dtype}, {offsets.dtype} instead of int32")
    if cdf.dim() != 2 or cdf.shape[0] != rows or tuple(lengths.shape) != (rows,) or tuple(offsets.shape) != (rows,):
        raise bad(f"shapes {tuple(cdf.shape)}, {tuple(lengths.shape)}, {tuple(offsets.shape)} do not describe "
                  f"{rows} rows")
    cdf, n, off = cdf.long().cpu(), lengths.long().cpu(), offsets.long().cpu()
    if ((n < 2) | (n > cdf.shape[1])).any():
        raise bad(f"a CDF length outside 2..{cdf.shape[1]}", (n < 2) | (n > cdf.shape[1]))
    inside = torch.arange(cdf.shape[1] - 1)[None, :] < (n[:, None] - 1)
    if (cdf[:, 0] != 0).any():
        raise bad("a CDF that does not start at 0", cdf[:, 0] != 0)
    steps_bad = ((cdf[:, 1:] - cdf[:, :-1] <= 0) & inside).any(1)
    if steps_bad.any():
        raise bad("a CDF that does not rise strictly", steps_bad)
    end_bad = cdf.gather(1, (n - 1)[:, None])[:, 0] != (1 << CDF_PRECISION)
    if end_bad.any():
        raise bad(f"a CDF that does not end at 2^{CDF_PRECISION}", end_bad)
    off_bad = (off > 0) | (off < -(n - 2))
    if off_bad.any():
        raise bad("an offset outside [-(length-2), 0]", off_bad)


def check_quantiles(quantiles: torch.Tensor) -> None:
    """z's quantiles set its CDF tables' lengths and its symbols' offsets (the medians): they must be finite
    and inside the exact coder's range, or compressai would build garbage or gigantic tables."""
    q = quantiles.detach()
    if not torch.isfinite(q).all() or q.abs().max().item() > LATENT_LIMIT - 1:
        raise ValueError(f"entropy_bottleneck.quantiles must be finite and within ±{LATENT_LIMIT - 1:g}, got values "
                         f"up to {q.abs().max().item():.4g}: these weights cannot code")


def check_symbols(symbols: torch.Tensor) -> torch.Tensor:
    # The last guard before C++: an out-of-range int32 (INT_MIN from a NaN) loops forever in its escape coder.
    if symbols.numel() and symbols.abs().max().item() > 2 * ACT_CLIP:
        raise ValueError("symbols outside the coder's range: the model's weights are broken")
    return symbols


def in_range(name: str, grid: torch.Tensor) -> torch.Tensor:
    """Decoded latents (on the activation grid) must lie in the range any encoder can write (±2^10):
    a payload that decodes past it is refused here, before the next pass or any diffusion runs."""
    if grid.numel() and grid.abs().max().item() > ACT_CLIP:
        raise ValueError(f"the payload decodes to {name} values beyond the coder's range ±{LATENT_LIMIT:g}")
    return grid


# The checks below are shared by every latent coder built on compressai's EntropyBottleneck +
# GaussianConditional and the rANS coder (this LFGCM, diffeic.hyperprior): one rule for all families.

def check_entropy_tables(entropy_bottleneck: EntropyBottleneck, gaussian_conditional: GaussianConditional) -> None:
    """Raise ``ValueError`` naming the table unless every CDF table is safe for the C++ coder."""
    table = gaussian_conditional.scale_table
    if (table.dim() != 1 or table.numel() < 2 or not torch.isfinite(table).all() or (table <= 0).any()
            or (table[1:] <= table[:-1]).any()):
        raise ValueError("coding table gaussian_conditional.scale_table is corrupt: it must be a rising list of "
                         "at least 2 positive finite scales")
    for name, m, rows in (("entropy_bottleneck", entropy_bottleneck, entropy_bottleneck.channels),
                          ("gaussian_conditional", gaussian_conditional, table.numel())):
        check_cdf_table(name, m._quantized_cdf, m._cdf_length, m._offset, rows)


def check_encoder_latents(**latents: torch.Tensor) -> None:
    """Latents about to be coded must be finite and inside the exact coder's range.

    NaN becomes INT_MIN as a symbol, on which compressai's escape coding never ends; values past the exact
    path's range would decode inexactly. Neither reaches the coder.
    """
    for name, t in latents.items():
        if not torch.isfinite(t).all():
            raise ValueError(f"the encoder produced non-finite latents ({name}): its weights are broken")
        if t.numel() and t.abs().max().item() > LATENT_LIMIT - 1:
            raise ValueError(f"latent {name} reaches {t.abs().max().item():.4g}, beyond the coder's exact range "
                             f"±{LATENT_LIMIT - 1:g}: the weights are not those of a working model")


def check_payload_size(string: bytes, symbols: Sequence[Tuple[int, "_CodingTables"]], what: str) -> None:
    """Refuse a payload too short for the symbols it must hold, before anything is allocated.

    ``symbols``: ``(count, tables)`` per group of symbols.  A rANS payload is whole 32-bit words, at least the
    8-byte final state; and every symbol adds at least ``min_bits`` (from the tables) to a state that starts
    at 2^31 and is flushed below 2^63, so a payload of ``n`` bytes holds at most ``8n - 32`` bits of symbols
    (plus the rounding slack of one rANS step for each 32-bit word written).
    """
    if len(string) < 8 or len(string) % 4:
        raise ValueError(f"a payload of {len(string)} bytes is not a rANS stream (whole 32-bit words, at "
                         f"least 8 bytes)")
    need = sum(n * tab.min_bits for n, tab in symbols)
    room = 8 * len(string) - 32 + (len(string) // 4) * _RANS_STEP_SLACK
    if need > room + 1:                        # + 1: float rounding of the bound never refuses a real one
        raise ValueError(f"a payload of {len(string)} bytes cannot hold the {sum(n for n, _ in symbols)} symbols "
                         f"of {what} (these tables need at least {math.ceil((need + 32) / 8)} bytes)")


def check_canonical(string: bytes, parts: Sequence[Tuple[list, list, list, list, list]]) -> None:
    """A payload is valid only if it is exactly what coding its decoded symbols gives (the coder is
    deterministic): this refuses unused trailing bytes and any other encoding of the same symbols.

    ``parts``: ``(symbols, indexes, cdf, lengths, offsets)`` in coding order.
    """
    encoder = BufferedRansEncoder()
    for symbols, indexes, cdf, lengths, offsets in parts:
        encoder.encode_with_indexes(symbols, indexes, cdf, lengths, offsets)
    if encoder.flush() != bytes(string):
        raise ValueError("the payload is not the coding of the symbols it decodes to (unused, altered or "
                         "non-canonical bytes)")


class CodingTables:
    """Mixin: the coding tables of a latent coder made of an ``entropy_bottleneck`` (z) and a
    ``gaussian_conditional`` (y) that codes z then y into one rANS string — this LFGCM's entropy model and
    :class:`diffeic.hyperprior.MeanScaleHyperprior`.

    The tables (:data:`CODING_TABLES`) are built from the weights on the CPU, so every machine codes with the
    same ones; rebuilt whenever the weights change; resized, checked and taken as current when loaded (empty
    ones are rebuilt when first used).  Users call :meth:`_init_coding` where the two entropy models belong and provide
    ``_exact_nets(device)``, the exact integer twin of the networks that choose y's CDFs.
    """

    entropy_bottleneck: EntropyBottleneck
    gaussian_conditional: GaussianConditional

    def _init_coding(self, z_channels: int, scale_min: float, scale_max: float, scale_levels: int) -> None:
        self.entropy_bottleneck = EntropyBottleneck(z_channels)
        self.gaussian_conditional = GaussianConditional(None, scale_bound=scale_min)
        # Built with Python's math (not a vectorised kernel whose last bit may depend on the CPU), so
        # every machine selects CDFs against the same table.
        step = (math.log(scale_max) - math.log(scale_min)) / (scale_levels - 1)
        self._scale_table = torch.tensor([math.exp(math.log(scale_min) + i * step) for i in range(scale_levels)],
                                         dtype=torch.float32)
        self._coding: Optional[tuple] = None
        self._tables_key: Optional[tuple] = None
        self.register_load_state_dict_post_hook(_after_load)

    @staticmethod
    def coding_table_names() -> List[str]:
        """State-dict names of the coder's tables (derived from the weights by ``update``; resized on load)."""
        return [f"{module}.{buf}" for module, bufs in CODING_TABLES for buf in bufs]

    def update(self, scale_table: Optional[torch.Tensor] = None, force: bool = False,
               update_quantiles: bool = False) -> bool:
        """Rebuild the CDF tables (after training or loading weights).

        Tables are computed on the CPU and copied to the model's device, so every device codes with
        identical tables.  Quantiles are never re-estimated here: their medians are z's quantisation
        offsets and must stay those the model was trained with.
        """
        scale_table = self._scale_table if scale_table is None else scale_table
        check_quantiles(self.entropy_bottleneck.quantiles)
        updated = False
        for name, buffers in CODING_TABLES:
            module = getattr(self, name)
            device = module.likelihood_lower_bound.bound.device
            cpu = copy.deepcopy(module).cpu().float()     # tables never depend on device or dtype
            changed = (cpu.update(force=force) if name == "entropy_bottleneck"
                       else cpu.update_scale_table(scale_table.cpu(), force=force))
            if changed:
                for buf in buffers:
                    setattr(module, buf, getattr(cpu, buf).to(device))
            updated |= bool(changed)
        self._coding = None
        self._tables_key = self._weights_key()
        return updated

    def refresh_tables(self) -> None:
        """Rebuild the CDF tables if the weights changed since they were built or loaded."""
        if self._tables_key != self._weights_key():
            self.update(force=True)

    def check_coding_tables(self) -> None:
        """Raise ``ValueError`` naming the table unless every CDF table is safe for the C++ coder."""
        check_entropy_tables(self.entropy_bottleneck, self.gaussian_conditional)

    def aux_loss(self) -> torch.Tensor:
        return self.entropy_bottleneck.loss()

    @torch.no_grad()
    def estimate_bits(self, *inputs: torch.Tensor, **kwargs) -> List[float]:
        """The entropy model's estimate of the bits each batch item costs: ``-log2`` of the likelihoods of
        ``forward(*inputs, **kwargs)`` in eval mode (hard rounding, as coded)."""
        was_training = self.training
        self.eval()
        try:
            out = self(*inputs, **kwargs)
        finally:
            self.train(was_training)
        return [float(b) for b in sum(-torch.log2(lik).flatten(1).sum(1) for lik in out["likelihoods"].values())]

    def z_medians(self) -> torch.Tensor:
        return self.entropy_bottleneck.quantiles[:, 0, 1].detach().view(1, -1, 1, 1)

    def _weights_key(self) -> tuple:
        # Parameter objects survive .to() and load_state_dict (their data is swapped or copied in
        # place), so the list is gathered once; data_ptr and _version reveal any change.
        if getattr(self, "_param_list", None) is None:
            self._param_list = list(self.parameters())
        return tuple((p.data_ptr(), p._version) for p in self._param_list)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # CDF tables have data-dependent sizes: resize ours to the saved ones before the children copy them.
        for name in self.coding_table_names():
            module, buf = name.split(".")
            old, new = getattr(getattr(self, module), buf), state_dict.get(prefix + name)
            if new is not None and old.shape != new.shape:
                setattr(getattr(self, module), buf, torch.empty_like(new, device=old.device))
        self._loading_tables = all(state_dict.get(f"{prefix}{module}._offset", torch.empty(0)).numel()
                                   for module, _ in CODING_TABLES)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _coding_state(self, device: torch.device) -> tuple:
        """``(z tables, y tables, exact nets)``, rebuilt whenever the weights have changed."""
        self.refresh_tables()
        if self._coding is None or self._coding[0] != self._tables_key or self._coding[1] != device:
            self._coding = (self._tables_key, device, _CodingTables(self.entropy_bottleneck),
                            _CodingTables(self.gaussian_conditional), self._exact_nets(device))
        return self._coding[2:]

    def _indexes(self, scales_grid: torch.Tensor) -> torch.Tensor:
        """CDF index per σ (grid integers): the number of scale-table entries (but the last) below max(σ, bound).

        Same result as compressai's ``build_indexes``, in one ``bucketize`` instead of a loop over
        the table.  σ is an exact multiple of 2^-8, so the comparison is device independent.
        """
        gc = self.gaussian_conditional
        sigma = torch.clamp(from_grid(scales_grid), min=float(gc.lower_bound_scale.bound))
        return torch.bucketize(sigma, gc.scale_table.to(scales_grid.device)[:-1]).int()

    def symbol_count(self, y_hw: Tuple[int, int]) -> int:
        """Number of symbols a stream of this latent size carries (z and y)."""
        h, w = y_hw
        return self.M * h * w + self.entropy_bottleneck.channels * (h // Z_STRIDE) * (w // Z_STRIDE)

    @staticmethod
    def _z_rows(channels: int, hz: int, wz: int) -> list:
        """z's CDF rows (its channels) in coding order."""
        return torch.arange(channels, dtype=torch.int32).view(-1, 1, 1).expand(channels, hz, wz).reshape(-1).tolist()

    def _z_symbols(self, z: torch.Tensor, medians_grid: torch.Tensor) -> Tuple[torch.Tensor, list]:
        """z's symbols (checked) and their CDF rows, in coding order."""
        z_sym = check_symbols(torch.round(z.double() - medians_grid / ACT_SCALE).int())
        return z_sym, self._z_rows(*z.shape[1:])

    def _start_decoding(self, string: bytes, y_hw: Tuple[int, int], eb_tab: _CodingTables,
                        gc_tab: _CodingTables) -> Tuple[RansDecoder, list, list]:
        """Check that the payload can hold its symbols, open a decoder on it and decode z:
        ``(decoder, z symbols, z rows)``."""
        h, w = y_hw
        n_ch, hz, wz = self.entropy_bottleneck.channels, h // Z_STRIDE, w // Z_STRIDE
        check_payload_size(string, [(n_ch * hz * wz, eb_tab), (self.M * h * w, gc_tab)],
                           f"a latent of {size_text(h, w)}")
        decoder = RansDecoder()
        # The C++ decoder reads 32-bit words without bounds checks; zero padding bounded by the
        # symbol count (≤ one word per symbol, escapes bounded by the payload's own bits) keeps a
        # crafted stream from reading past the buffer.
        decoder.set_stream(bytes(string) + bytes(4 * self.symbol_count(y_hw) + 16 * len(string) + 64))
        z_rows = self._z_rows(n_ch, hz, wz)
        return decoder, decoder.decode_stream(z_rows, eb_tab.cdf, eb_tab.lengths, eb_tab.offsets), z_rows


def _after_load(module: CodingTables, incompatible_keys) -> None:
    # After the whole load (the tables and quantiles live in child modules): the C++ coder trusts the
    # tables blindly, and NaN quantiles would hang it, so neither is accepted from a file.  Loaded
    # tables are taken as current, so every machine codes with the tables that were saved.
    check_quantiles(module.entropy_bottleneck.quantiles)
    loaded = getattr(module, "_loading_tables", False)
    if loaded:
        module.check_coding_tables()
    module._coding = None
    module._tables_key = module._weights_key() if loaded else None


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


class SliceCheckerboardEntropyModel(CodingTables, nn.Module):
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

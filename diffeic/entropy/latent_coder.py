"""The hyperprior latent coder's common part: a factorised ``z`` (compressai's ``EntropyBottleneck``) and a
Gaussian ``y`` (``GaussianConditional``) coded z first into **one** rANS string, and the lifecycle of their
coding tables.  :class:`HyperpriorCoder` is the mixin of the LFGCM's slice/checkerboard entropy model
(:mod:`diffeic.lfgcm.entropy`) and of the mean-scale hyperprior (:mod:`diffeic.entropy.hyperprior`).
"""
from __future__ import annotations

import copy
import math
from typing import List, Optional, Tuple

import torch
from .. import _compressai  # noqa: F401  (compressai's import warning filtered there)
from compressai.ans import RansDecoder
from compressai.entropy_models import EntropyBottleneck, GaussianConditional

from ..sizes import size_text
from .exact import ACT_SCALE, from_grid
from .rans import CdfLists, check_entropy_tables, check_payload_size, check_quantiles, check_symbols

#: The state-dict buffers that hold the coding tables the rANS coder reads, per entropy model: built by
#: ``update``, saved with the weights, resized and checked when loaded (:class:`HyperpriorCoder`), and part of
#: the model fingerprint.  The one list of them, for every coder built on compressai's entropy models.
TABLE_BUFFERS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("entropy_bottleneck", ("_offset", "_quantized_cdf", "_cdf_length")),
    ("gaussian_conditional", ("_offset", "_quantized_cdf", "_cdf_length", "scale_table")),
)

#: Spatial stride of z relative to y (the hyper-analysis downsamples twice by 2).
Z_STRIDE = 4


class HyperpriorCoder:
    """Mixin of a latent coder made of an ``entropy_bottleneck`` (z) and a ``gaussian_conditional`` (y) that
    codes z then y into one rANS string (the LFGCM's entropy model and
    :class:`~diffeic.entropy.hyperprior.MeanScaleHyperprior`): their coding tables, z's symbols, decoding's start.

    The tables (:data:`TABLE_BUFFERS`) are built from the weights on the CPU, so every machine codes with the
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
        return [f"{module}.{buf}" for module, bufs in TABLE_BUFFERS for buf in bufs]

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
        for name, buffers in TABLE_BUFFERS:
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
                                   for module, _ in TABLE_BUFFERS)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _coding_state(self, device: torch.device) -> tuple:
        """``(z tables, y tables, exact nets)``, rebuilt whenever the weights have changed."""
        self.refresh_tables()
        if self._coding is None or self._coding[0] != self._tables_key or self._coding[1] != device:
            self._coding = (self._tables_key, device, CdfLists(self.entropy_bottleneck),
                            CdfLists(self.gaussian_conditional), self._exact_nets(device))
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

    def _start_decoding(self, string: bytes, y_hw: Tuple[int, int], eb_tab: CdfLists,
                        gc_tab: CdfLists) -> Tuple[RansDecoder, list, list]:
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


def _after_load(module: HyperpriorCoder, incompatible_keys) -> None:
    # After the whole load (the tables and quantiles live in child modules): the C++ coder trusts the
    # tables blindly, and NaN quantiles would hang it, so neither is accepted from a file.  Loaded
    # tables are taken as current, so every machine codes with the tables that were saved.
    check_quantiles(module.entropy_bottleneck.quantiles)
    loaded = getattr(module, "_loading_tables", False)
    if loaded:
        module.check_coding_tables()
    module._coding = None
    module._tables_key = module._weights_key() if loaded else None

"""compressai's rANS coder and its CDF tables, used safely: the one set of checks for every latent coder.

The C++ coder (``compressai.ans``) trusts its inputs blindly: it divides by CDF frequencies and indexes
table rows without bounds checks, loops forever on an ``INT_MIN`` symbol and reads past a short buffer.
So nothing reaches it unchecked: tables loaded from a file (:func:`check_entropy_tables`), z's quantiles
(:func:`check_quantiles`), latents about to be coded (:func:`check_encoder_latents`), symbols
(:func:`check_symbols`), and on decoding the payload's size (:func:`check_payload_size`), the decoded
latents' range (:func:`in_range`) and the payload's canonical form (:func:`check_canonical`).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from .. import _compressai  # noqa: F401  (compressai's import warning filtered there)
from compressai.ans import BufferedRansEncoder
from compressai.entropy_models import EntropyBottleneck, GaussianConditional

from .exact import ACT_CLIP, LATENT_LIMIT

CDF_PRECISION = 16                     # compressai's CDFs end at 2^16
#: A symbol costs at least log2(2^16 / largest frequency) bits, less what one rANS step can lose to
#: rounding: the state before a step is at least 2^15 x frequency, so x' / x > (2^16 / f)(1 - 2^-15).
RANS_STEP_SLACK = math.log2(1 + 2.0 ** -15)


class CdfLists:
    """Python-list copies of an entropy model's CDF tables, made once per ``update``.

    ``min_bits``: a lower bound on the bits any symbol coded with these tables adds to a stream.
    """

    def __init__(self, model) -> None:
        self.cdf = model._quantized_cdf.tolist()
        self.lengths = model._cdf_length.reshape(-1).int().tolist()
        self.offsets = model._offset.reshape(-1).int().tolist()
        f_max = max(max(row[j + 1] - row[j] for j in range(n - 1)) for row, n in zip(self.cdf, self.lengths))
        self.min_bits = max(0.0, CDF_PRECISION - math.log2(f_max) - RANS_STEP_SLACK)

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
        return ValueError(f"coding table {name} is corrupt: {what}{row}; rebuild it with update(force=True)")

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
# GaussianConditional and the rANS coder (the LFGCM, the mean-scale hyperprior): one rule for all families.

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


def check_payload_size(string: bytes, symbols: Sequence[Tuple[int, "CdfLists"]], what: str) -> None:
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
    room = 8 * len(string) - 32 + (len(string) // 4) * RANS_STEP_SLACK
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

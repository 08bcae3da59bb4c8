"""Compress to a size: the largest rate parameter q whose *real* stream fits a byte budget.

Bisection on q over the model's range, each probe a complete stream (container included), so the
result never exceeds the budget whatever the entropy model's estimate says.  The invariant is "the
lower end fits, the upper end does not"; the returned stream is the last probe that fitted, so it is
exactly what ``compress(x, rate=q)`` writes for the returned q.  A real coder's size is not strictly
monotone in q, so the result is the largest fitting q found, within ``tolerance`` of the boundary.
"""
from __future__ import annotations

from typing import Callable, Tuple

from .bitstream import float32


class TargetTooSmall(ValueError):
    """The byte budget is below what the model spends at its lowest rate."""


def fit_to_budget(encode: Callable[[float], bytes], q_min: float, q_max: float, max_bytes: int,
                  tolerance: float = 1 / 512) -> Tuple[float, bytes]:
    """``(q, stream)`` with ``len(stream) <= max_bytes`` and q as large as bisection finds.

    ``encode(q)`` returns the full stream at a float32 ``q``.  The search stops when the bracket is
    narrower than ``tolerance × (q_max − q_min)`` (10 probes for the default; on photos that is about
    1 % of the size) or a probe fills the budget exactly.  Raises :class:`TargetTooSmall` when even
    ``q_min`` does not fit.
    """
    top = encode(q_max)
    if len(top) <= max_bytes:
        return q_max, top
    lo, hi, best = q_min, q_max, None
    while hi - lo > tolerance * (q_max - q_min):
        mid = float32((lo + hi) / 2)
        if mid in (lo, hi):          # float32 resolution reached
            break
        bits = encode(mid)
        if len(bits) <= max_bytes:
            lo, best = mid, bits
            if len(bits) == max_bytes:
                break
        else:
            hi = mid
    if best is None:                 # nothing above q_min fitted: q_min itself is the last hope
        best = encode(q_min)
        if len(best) > max_bytes:
            raise TargetTooSmall(f"a target of {max_bytes} bytes is below this model's lowest rate: at q={q_min:g} "
                                 f"the stream takes {len(best)} bytes")
    return lo, best

"""Bjøntegaard delta rate and delta metric (VCEG-M33; PCHIP as in the JVET CTC sheets / CompressAI).

With r = ln(bpp), fit r(D) for anchor and test through points sorted by the
quality D, integrate both over the overlap of their D ranges, and BD-rate = exp(mean Δr) − 1.
Lower-is-better metrics (LPIPS, DISTS, FID, KID, NIQE) are negated first so D rises with rate.
BD-metric swaps the axes: D(r) integrated over the common log-rate interval, mean D difference.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator

from .metrics import LOWER_IS_BETTER


@dataclass
class BDResult:
    """A Bjøntegaard delta: ``value`` (percent for BD-rate, metric units for BD-metric) or ``None``.

    ``overlap`` is the common interval (quality for BD-rate, ln bpp for BD-metric) and
    ``overlap_fraction`` its share of the wider of the two ranges; ``reason`` says why ``value``
    is missing and ``warning`` flags an unreliable value (small overlap, non-monotone series).
    """

    value: Optional[float]
    overlap: Optional[tuple] = None
    overlap_fraction: Optional[float] = None
    reason: str = ""
    warning: str = ""

    def as_dict(self) -> Dict:
        return asdict(self)


def _fit_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: str) -> float:
    """∫_lo^hi f(t) dt for f interpolating y(x) (x strictly increasing)."""
    if method == "pchip":
        return float(PchipInterpolator(x, y).integrate(lo, hi))
    if method == "cubic":
        if len(x) < 4:
            raise ValueError("the cubic (VCEG-M33) fit needs at least 4 points per curve; use method='pchip'")
        poly = np.polyint(np.polyfit(x, y, 3))
        return float(np.polyval(poly, hi) - np.polyval(poly, lo))
    raise ValueError(f"unknown method {method!r}; choose 'pchip' or 'cubic'")


def _prepare(rate: Sequence[float], quality: Sequence[float], by: str):
    r = np.log(np.asarray(rate, dtype=np.float64))
    q = np.asarray(quality, dtype=np.float64)
    keep = np.isfinite(r) & np.isfinite(q)
    # Identical points (e.g. a baseline stuck at its lowest quality for two targets) count once.
    pts = np.unique(np.stack([r[keep], q[keep]], 1), axis=0)
    r, q = pts[:, 0], pts[:, 1]
    # A curve whose quality does not rise with rate makes the delta ill-posed: flag it.
    by_rate = np.argsort(r)
    monotone = bool(np.all(np.diff(q[by_rate]) > 0))
    key = q if by == "quality" else r
    order = np.argsort(key)
    return r[order], q[order], monotone


def _delta(anchor_x, anchor_y, test_x, test_y, method: str, pct: bool, monotone: bool) -> BDResult:
    for name, x in (("anchor", anchor_x), ("test", test_x)):
        if len(x) < 2:
            return BDResult(None, reason=f"{name} has fewer than 2 usable points")
        if np.any(np.diff(x) <= 0):
            return BDResult(None, reason=f"{name} has repeated values on the integration axis")
    lo, hi = max(anchor_x[0], test_x[0]), min(anchor_x[-1], test_x[-1])
    if not hi > lo:
        return BDResult(None, reason="no overlap between the curves' ranges")
    span = max(anchor_x[-1] - anchor_x[0], test_x[-1] - test_x[0])
    frac = float((hi - lo) / span)
    mean_diff = (_fit_integral(test_x, test_y, lo, hi, method)
                 - _fit_integral(anchor_x, anchor_y, lo, hi, method)) / (hi - lo)
    value = (math.exp(mean_diff) - 1.0) * 100.0 if pct else mean_diff
    warnings = []
    if frac < 0.75:
        warnings.append(f"small overlap ({frac:.0%} of the wider range)")
    if not monotone:
        warnings.append("a curve is not monotone in rate")
    return BDResult(float(value), (float(lo), float(hi)), frac, warning="; ".join(warnings))


def _orient(metric: Optional[str], quality: Sequence[float]) -> np.ndarray:
    q = np.asarray(quality, dtype=np.float64)
    return -q if metric in LOWER_IS_BETTER else q


def bd_rate(anchor_rate: Sequence[float], anchor_quality: Sequence[float],
            test_rate: Sequence[float], test_quality: Sequence[float],
            metric: Optional[str] = None, method: str = "pchip") -> BDResult:
    """BD-rate of test vs anchor in percent (negative = test needs fewer bits for the same quality).

    ``metric`` names the quality axis; a lower-is-better one (see :data:`LOWER_IS_BETTER`) is negated.
    """
    ar, aq, am = _prepare(anchor_rate, _orient(metric, anchor_quality), "quality")
    tr, tq, tm = _prepare(test_rate, _orient(metric, test_quality), "quality")
    return _delta(aq, ar, tq, tr, method, pct=True, monotone=am and tm)


def bd_metric(anchor_rate: Sequence[float], anchor_quality: Sequence[float],
              test_rate: Sequence[float], test_quality: Sequence[float],
              metric: Optional[str] = None, method: str = "pchip") -> BDResult:
    """BD-metric (e.g. BD-PSNR): mean quality difference test − anchor over the common log-rate range.

    Reported in the metric's own units and direction (for LPIPS a negative value means better).
    """
    ar, aq, am = _prepare(anchor_rate, _orient(metric, anchor_quality), "rate")
    tr, tq, tm = _prepare(test_rate, _orient(metric, test_quality), "rate")
    res = _delta(ar, aq, tr, tq, method, pct=False, monotone=am and tm)
    if res.value is not None and metric in LOWER_IS_BETTER:
        res.value = -res.value          # back to the metric's own direction
    return res

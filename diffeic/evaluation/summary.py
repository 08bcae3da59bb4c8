"""Aggregation of per-image rows: means per (codec, point), BD tables, and the printed summary."""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .bdrate import bd_metric, bd_rate
from .metrics import IMAGE_METRICS

MEAN_COLUMNS = ("bpp", "bpp_padded", "bpp_official", *IMAGE_METRICS, "enc_s", "dec_s")


def _mean(values: Iterable[Optional[float]]) -> Optional[float]:
    """Mean over measured values (None = skipped metric → None; NaN entries ignored, inf kept)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    finite_or_inf = [v for v in vals if not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(finite_or_inf)) if finite_or_inf else math.nan


def group_means(rows: Sequence[Mapping]) -> List[Dict]:
    """One dict per (codec, point) in first-seen order: n, means of :data:`MEAN_COLUMNS`, floor count."""
    groups: Dict[Tuple[str, str], List[Mapping]] = {}
    for r in rows:
        groups.setdefault((r["codec"], r["point"]), []).append(r)
    out = []
    for (codec, point), rs in groups.items():
        d: Dict = {"codec": codec, "point": point, "n": len(rs)}
        d.update({c: _mean(r[c] for r in rs) for c in MEAN_COLUMNS})
        d["n_floor"] = sum("floor" in str(r["setting"]) for r in rs)
        d["n_ms_ssim_nan"] = sum(1 for r in rs if isinstance(r["ms_ssim"], float) and math.isnan(r["ms_ssim"]))
        out.append(d)
    return out


def series_by_codec(means: Sequence[Mapping]) -> Dict[str, List[Mapping]]:
    """Group the per-point means into one rate–distortion series per codec."""
    out: Dict[str, List[Mapping]] = {}
    for m in means:
        out.setdefault(m["codec"], []).append(m)
    return out


def bd_table(series: Mapping[str, Sequence[Mapping]], anchor: str, metrics: Sequence[str],
             anchor_series: Optional[Sequence[Mapping]] = None) -> List[Dict]:
    """BD-rate (%) and BD-metric of every series against ``anchor`` on each metric (PCHIP)."""
    ref = anchor_series if anchor_series is not None else series.get(anchor)
    if ref is None:
        return [{"anchor": anchor, "error": f"anchor {anchor!r} is not among the series "
                                            f"({', '.join(series)})"}]
    out = []
    for name, pts in series.items():
        if name == anchor:
            continue
        for m in metrics:
            a = [(p["bpp"], p.get(m)) for p in ref if p.get(m) is not None and p.get("bpp")]
            t = [(p["bpp"], p.get(m)) for p in pts if p.get(m) is not None and p.get("bpp")]
            if not a or not t:
                continue
            args = ([x for x, _ in a], [y for _, y in a], [x for x, _ in t], [y for _, y in t])
            r, q = bd_rate(*args, metric=m), bd_metric(*args, metric=m)
            out.append({"anchor": anchor, "test": name, "metric": m, "bd_rate_pct": r.value,
                        "bd_metric": q.value, "overlap": r.overlap, "overlap_fraction": r.overlap_fraction,
                        "note": r.reason or r.warning})
    return out


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if math.isinf(v) or math.isnan(v):
            return str(v)
        return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def format_table(means: Sequence[Mapping], extra: Sequence[str] = ()) -> str:
    """A plain-text table of the per-(codec, point) means (columns of skipped metrics dropped).

    A baseline point ``<model>x0.5`` / ``x2`` is that baseline quality-searched to 0.5× / 2× our bpp on
    each image; ``floor`` counts images where the codec's lowest quality still overshot its target.
    Both are explained under the table.
    """
    cols = ["codec", "point", "n", "bpp", "bpp_padded"]
    cols += [c for c in ("bpp_official", *IMAGE_METRICS, *extra) if any(m.get(c) is not None for m in means)]
    cols += ["enc_s", "dec_s"]
    floors = any(m.get("n_floor") for m in means)
    if floors:
        cols.append("floor")

    def cell(m: Mapping, c: str) -> str:
        if c == "floor":
            return f"{m['n_floor']}/{m['n']} *" if m.get("n_floor") else ""
        return _fmt(m.get(c), 3 if c in ("enc_s", "dec_s", "psnr") else 4)

    rows = [[cell(m, c) for c in cols] for m in means]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    line = lambda cells: "  ".join(s.ljust(w) for s, w in zip(cells, widths)).rstrip()  # noqa: E731
    notes = []
    factors = sorted({p.rsplit("x", 1)[1] for p in (str(m.get("point", "")) for m in means)
                      if "x" in p and _is_number(p.rsplit("x", 1)[1])}, key=float)
    if factors:
        notes.append(f"points <model>x{'/x'.join(factors)}: the baseline quality-searched to {'× / '.join(factors)}× "
                     f"our bpp on each image (a short curve around each of our points); the others are at 1×")
    if floors:
        notes.append("floor k/n *: k of n images at the codec's lowest quality, which still overshoots the target "
                     "rate; the achieved bpp is reported")
    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(r) for r in rows), *notes])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def format_bd(results: Sequence[Mapping]) -> str:
    lines = []
    for r in results:
        if "error" in r:
            lines.append(f"BD: {r['error']}")
            continue
        val = "undefined" if r["bd_rate_pct"] is None else f"{r['bd_rate_pct']:+.2f} %"
        lines.append(f"BD-rate {r['test']} vs {r['anchor']} on {r['metric']}: {val}"
                     + (f"  ({r['note']})" if r["note"] else ""))
    return "\n".join(lines)

"""Aggregation of per-image rows: means per (codec, point), BD tables, and the printed summary."""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .bdrate import bd_metric, bd_rate
from .metrics import IMAGE_METRICS, LOWER_IS_BETTER

MEAN_COLUMNS = ("bpp", "bpp_padded", "bpp_official", *IMAGE_METRICS, "enc_s", "dec_s")


def _mean(values: Iterable[Optional[float]]) -> Optional[float]:
    """Mean over measured values (None = skipped metric → None; NaN entries ignored, inf kept)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    finite_or_inf = [v for v in vals if not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(finite_or_inf)) if finite_or_inf else math.nan


def group_means(rows: Sequence[Mapping]) -> List[Dict]:
    """One dict per (codec, point) in first-seen order: means of :data:`MEAN_COLUMNS` over every row.

    ``n``: images; ``n_seeds``: decode seeds per image (rows of one image differ only in ``seed``);
    ``n_floor`` / ``n_ceiling``: images where a baseline's lowest / highest quality missed its target;
    ``settings``: the codec's own settings used (e.g. ``["q=5", "q=7"]``); ``seed_spread``: with several
    seeds, per metric the standard deviation (ddof 1), minimum and maximum over seeds of the dataset mean
    (the mean over images decoded with the k-th seed of each image), see :func:`seed_spread`.
    """
    groups: Dict[Tuple[str, str], List[Mapping]] = {}
    for r in rows:
        groups.setdefault((r["codec"], r["point"]), []).append(r)
    out = []
    for (codec, point), rs in groups.items():
        images = list(dict.fromkeys(r["image"] for r in rs))
        d: Dict = {"codec": codec, "point": point, "n": len(images),
                   "n_seeds": max(sum(r["image"] == im for r in rs) for im in images)}
        d.update({c: _mean(r[c] for r in rs) for c in MEAN_COLUMNS})
        first = [next(r for r in rs if r["image"] == im) for im in images]      # one row per image
        d["n_floor"] = sum("floor" in str(r["setting"]) for r in first)
        d["n_ceiling"] = sum("ceiling" in str(r["setting"]) for r in first)
        d["settings"] = sorted({str(r["setting"]).split(" (")[0] for r in first}, key=_natural)
        d["n_ms_ssim_nan"] = sum(1 for r in rs if isinstance(r["ms_ssim"], float) and math.isnan(r["ms_ssim"]))
        if d["n_seeds"] > 1:
            d["seed_spread"] = seed_spread(rs)
        out.append(d)
    return out


SPREAD_DEFINITION = ("seed_spread: over the decode seeds k = 0..n_seeds-1, the dataset mean of each metric with every "
                     "image decoded with its k-th seed; std (ddof 1), min and max of those n_seeds means")


def seed_spread(rows: Sequence[Mapping]) -> Dict[str, Dict[str, float]]:
    """Per metric: std (ddof 1), min and max over seeds of the dataset mean (see :data:`SPREAD_DEFINITION`).

    The k-th seed of an image is its k-th smallest ``seed``; only seeds every image has are used.
    """
    by_image: Dict[str, List[Mapping]] = {}
    for r in rows:
        by_image.setdefault(r["image"], []).append(r)
    k_max = min(len(v) for v in by_image.values())
    ordered = [sorted(v, key=lambda r: r["seed"] if r["seed"] is not None else -1) for v in by_image.values()]
    out: Dict[str, Dict[str, float]] = {}
    for c in IMAGE_METRICS:
        per_seed = [_mean(rs[k][c] for rs in ordered) for k in range(k_max)]
        if any(v is None or math.isnan(v) for v in per_seed) or k_max < 2:
            continue
        out[c] = {"std": float(np.std(per_seed, ddof=1)), "min": float(min(per_seed)), "max": float(max(per_seed))}
    return out


def _natural(text: str):
    """Sort key putting ``q=5`` before ``q=12``."""
    head, _, tail = text.partition("=")
    try:
        return (head, float(tail), "")
    except ValueError:
        return (head, math.inf, tail)


def series_by_codec(means: Sequence[Mapping]) -> Dict[str, List[Mapping]]:
    """Group the per-point means into one rate–distortion series per codec."""
    out: Dict[str, List[Mapping]] = {}
    for m in means:
        out.setdefault(m["codec"], []).append(m)
    return out


def bd_table(series: Mapping[str, Sequence[Mapping]], anchor: str, metrics: Sequence[str],
             anchor_series: Optional[Sequence[Mapping]] = None) -> List[Dict]:
    """BD-rate (%) and BD-metric of every series against ``anchor`` on each metric (PCHIP).

    Each result gives the ``overlap`` of the two quality ranges the BD-rate integrates over (in the
    metric's own units, low to high) and, when the value is undefined, a ``note`` saying why.
    """
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
            overlap = None
            if r.overlap is not None:     # bd_rate negates lower-is-better metrics: back to the metric's units
                lo, hi = r.overlap
                overlap = (-hi, -lo) if m in LOWER_IS_BETTER else (lo, hi)
            note = r.reason or r.warning
            if r.value is None and "no overlap" in r.reason:
                note = (f"no common {m} range: {name} spans {_span([y for _, y in t], m)}, "
                        f"{anchor} {_span([y for _, y in a], m)}")
            out.append({"anchor": anchor, "test": name, "metric": m, "bd_rate_pct": r.value,
                        "bd_metric": q.value, "overlap": overlap, "overlap_fraction": r.overlap_fraction,
                        "note": note})
    return out


def _span(values: Sequence[float], metric: str) -> str:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return "no finite values"
    return f"{_quality(min(finite), metric)}–{_quality(max(finite), metric)}"


def _quality(v: float, metric: str) -> str:
    return f"{v:.2f} dB" if metric == "psnr" else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if math.isinf(v) or math.isnan(v):
            return str(v)
        return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _digits(column: str) -> int:
    return 2 if column == "psnr" else 3 if column in ("enc_s", "dec_s") else 4


def point_labels(means: Sequence[Mapping], ours: str = "diffeic") -> Dict[str, str]:
    """Short names of our rate points: ``tiny-trained,rate=2`` → ``q=2`` when every point is of one model."""
    points = [str(m["point"]) for m in means if m["codec"] == ours]
    models = {p.split(",", 1)[0] for p in points}
    out = {}
    for p in points:
        short = p.split(",", 1)[1] if len(models) == 1 and "," in p else p
        out[p] = short.replace("rate=", "q=")
    return out


def _matched(point: str, ours_points: Sequence[str]) -> Optional[Tuple[str, float]]:
    """``(our point, factor)`` a baseline point was quality-searched to (``<point>`` or ``<point>x<factor>``)."""
    for p in ours_points:
        if point == p:
            return p, 1.0
        if point.startswith(p + "x") and _is_number(point[len(p) + 1:]):
            return p, float(point[len(p) + 1:])
    return None


def format_table(means: Sequence[Mapping], extra: Sequence[str] = (), ours: str = "diffeic") -> str:
    """The console table: one row per codec and rate point, a person's read (everything is in results.csv).

    Our points come first within each group, each followed by the baselines quality-searched to its bpp
    (labelled by their own setting, e.g. ``jpeg q=5``) — only those that reach that rate on every image
    (the others are named in one line under the table).  Points at other rate factors (``x0.5``, ``x2``:
    the short curves behind the plots and BD-rates) are left to results.csv / summary.json when the
    matched (×1) points exist.  With several decode seeds a metric reads ``mean ±std`` over seeds.
    """
    labels = point_labels(means, ours)
    ours_points = list(labels)
    matched = {id(m): _matched(str(m["point"]), ours_points) for m in means if m["codec"] != ours}
    has_unit = any(v is not None and v[1] == 1.0 for v in matched.values())
    shown: List[Tuple[Mapping, str, str]] = []
    unreached: Dict[str, List[str]] = {}
    other_factors = set()
    for p in ours_points or [None]:
        for m in means:
            if m["codec"] == ours:
                if m["point"] == p:
                    shown.append((m, labels[p], ""))
                continue
            hit = matched[id(m)]
            if (hit[0] if hit else None) != p:
                continue
            where = labels.get(hit[0], str(m["point"])) if hit else ""
            if hit and hit[1] != 1.0:
                where += f" ×{hit[1]:g}"
                if has_unit:
                    other_factors.add(f"×{hit[1]:g}")
                    continue
            if hit and (m.get("n_floor") or m.get("n_ceiling")):
                unreached.setdefault(m["codec"], []).append(where)
                continue
            setting = " / ".join(m.get("settings") or []) or str(m["point"])
            if len(m.get("settings") or []) > 3:
                setting = f"{m['settings'][0]} … {m['settings'][-1]}"
            shown.append((m, setting, where))
    cols = ["codec", "setting", "matched to", "n", "bpp"]
    cols += [c for c in (*IMAGE_METRICS, *extra) if any(m.get(c) is not None for m in means)]
    cols += ["enc_s", "dec_s"]
    seeds = max((int(m.get("n_seeds") or 1) for m, _, _ in shown), default=1)

    def cell(m: Mapping, label: str, where: str, c: str) -> str:
        if c == "codec":
            return str(m["codec"])
        if c == "setting":
            return label
        if c == "matched to":
            return where
        text = _fmt(m.get(c), _digits(c))
        spread = (m.get("seed_spread") or {}).get(c)
        return f"{text} ±{spread['std']:.{_digits(c)}f}" if spread else text

    rows = [[cell(m, label, where, c) for c in cols] for m, label, where in shown]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    line = lambda cells: "  ".join(s.ljust(w) for s, w in zip(cells, widths)).rstrip()  # noqa: E731
    notes = []
    if seeds > 1:
        notes.append(f"±: standard deviation over {seeds} decode seeds of the dataset mean (min / max in "
                     f"summary.json); n: images")
    if unreached:
        notes.append("not shown, the baseline cannot reach that rate on every image (its lowest quality is larger, "
                     "or its highest smaller): " + "; ".join(f"{c} at {', '.join(w)}" for c, w in unreached.items()))
    if other_factors:
        notes.append(f"also quality-searched to {' / '.join(sorted(other_factors, key=lambda f: float(f[1:])))} our "
                     f"bpp (the curves of the plots and BD-rates): in results.csv and summary.json, as are "
                     f"bpp_padded and bpp_official")
    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(r) for r in rows), *notes])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def format_bd(results: Sequence[Mapping]) -> str:
    """One line per tested series: its BD-rate against the anchor on each metric, with the overlap used."""
    lines: List[str] = []
    by_test: Dict[str, List[Mapping]] = {}
    for r in results:
        if "error" in r:
            lines.append(f"BD: {r['error']}")
            continue
        by_test.setdefault(r["test"], []).append(r)
    if by_test:
        anchor = next(iter(by_test.values()))[0]["anchor"]
        lines.append(f"BD-rate against {anchor} (PCHIP on ln bpp over the quality range both reach; + = needs more "
                     f"bits than {anchor} for the same quality):")
    for test, rs in by_test.items():
        parts = []
        for r in rs:
            if r["bd_rate_pct"] is None:
                parts.append(f"{r['metric']} undefined ({r['note']})")
                continue
            lo, hi = r["overlap"]
            text = (f"{r['metric']} {r['bd_rate_pct']:+.1f} % over {_quality(lo, r['metric'])}–"
                    f"{_quality(hi, r['metric'])} ({r['overlap_fraction']:.0%} of the wider range)")
            if r["note"] and "small overlap" not in r["note"]:
                text += f" [{r['note']}]"
            parts.append(text)
        lines.append(f"  {test}: " + "; ".join(parts))
    return "\n".join(lines)

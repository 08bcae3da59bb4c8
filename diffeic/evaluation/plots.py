"""Rate–distortion plots: bpp against each available metric, ours + baselines + published points.

One PNG and one SVG per metric (matplotlib's Agg backend: no display needed).  Published points
come from a possibly different dataset (e.g. Kodak for ``samples``); their legend says which.
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .metrics import LOWER_IS_BETTER  # noqa: E402
from .published import PublishedSeries  # noqa: E402

LABELS = {"psnr": "PSNR (dB) ↑", "ms_ssim": "MS-SSIM (dB, RGB) ↑", "lpips": "LPIPS-Alex ↓", "dists": "DISTS ↓",
          "niqe": "NIQE ↓", "fid": "FID/256 ↓", "kid": "KID/256 ↓"}


@dataclass
class Curve:
    """A series to draw: ``values[metric]`` aligned with ``bpp`` (``None`` = not measured)."""

    label: str
    bpp: List[float]
    values: Dict[str, List[Optional[float]]] = field(default_factory=dict)
    ours: bool = False


def to_display(metric: str, value: Optional[float]) -> Optional[float]:
    """The plotted value: MS-SSIM as ``-10·log10(1 - MS-SSIM)`` dB (as compressai's plots), others as is."""
    if metric != "ms_ssim" or value is None or value != value:
        return value
    return -10.0 * math.log10(max(1.0 - value, 1e-10))


def _xy(bpp: Sequence[float], vals: Sequence[Optional[float]], metric: str = ""):
    pts = sorted((b, to_display(metric, v)) for b, v in zip(bpp, vals)
                 if v is not None and b is not None and v == v)
    return [p[0] for p in pts], [p[1] for p in pts]


def rd_plot(metric: str, curves: Sequence[Curve], published: Dict[str, PublishedSeries], title: str,
            out_stem: Path, published_label: str = "") -> List[Path]:
    """Draw one metric; returns the written ``.png`` and ``.svg`` paths ([] if nothing to draw)."""
    fig, ax = plt.subplots(figsize=(9.0, 4.8))
    drawn = 0
    pub_colours = plt.get_cmap("tab10").colors
    for k, (name, series) in enumerate(published.items()):
        xs, ys = series.values(metric)
        ys = [to_display(metric, y) for y in ys]
        colour = pub_colours[k % len(pub_colours)]
        if xs:
            ax.plot(xs, ys, "--", marker="s", ms=3, lw=0.9, alpha=0.5, color=colour,
                    label=f"{name} ({published_label})")
            drawn += 1
        for p in series.no_rate:     # e.g. the SD-VAE round trip: a fidelity bound without a rate
            if p.get(metric) is not None:
                ax.axhline(to_display(metric, p[metric]), ls=":", lw=1, color="grey",
                           label=f"{name} ({published_label}, no rate)")
    baseline_colours = iter(["#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"])
    for c in curves:
        xs, ys = _xy(c.bpp, c.values.get(metric, []), metric)
        if not xs:
            continue
        if c.ours:    # our points stand out: black stars on top of everything
            ax.plot(xs, ys, "-", marker="*", ms=13, lw=2.2, color="black", label=c.label, zorder=6)
        else:
            ax.plot(xs, ys, "-", marker="^", ms=5, lw=1.4, color=next(baseline_colours, None), label=c.label,
                    zorder=4)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return []
    ax.set_xlabel(XLABEL)
    ax.set_ylabel(LABELS.get(metric, metric) + (" (lower is better)" if metric in LOWER_IS_BETTER else ""))
    ax.set_title(_wrap(title, TITLE_CHARS), fontsize=9)
    ax.grid(True, alpha=0.3)
    _fit(fig, ax)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_stem.with_suffix(".png"), out_stem.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p, dpi=130)
    plt.close(fig)
    return paths


XLABEL = "bpp = 8 × file bytes / original pixels (ours, baselines)\npublished points: as each paper reports"
#: Characters per line of the wrapped title and legend entries (9 pt title, 7 pt legend on a 9-inch figure).
TITLE_CHARS, LEGEND_CHARS = 110, 70


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.fill(part, width) for part in text.split("\n"))


def _fit(fig, ax) -> None:
    """Legend in two columns below the axes (outside: no occlusion, and the axes keep the figure's width);
    the figure grows by the legend's height, and tight_layout keeps title and labels inside it."""
    handles, labels = ax.get_legend_handles_labels()
    legend = fig.legend(handles, [_wrap(t, LEGEND_CHARS) for t in labels], loc="lower center", ncol=2, fontsize=7,
                        frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.canvas.draw()
    legend_h = legend.get_window_extent().height / fig.dpi + 0.1            # inches
    w, h = fig.get_size_inches()
    fig.set_size_inches(w, h + legend_h)
    fig.tight_layout(rect=(0.0, (legend_h + 0.05) / (h + legend_h), 1.0, 1.0))

"""Published rate–distortion points (package data ``diffeic/data/published_rd.csv``).

Columns: ``dataset,method,point,bpp,psnr,ms_ssim,lpips,dists,fid,kid,niqe,ssim,source,note``;
an empty cell means "not reported".  Sources and caveats: the ``source`` and ``note``
columns (mainly huai-chang/DiffEIC ``indicators/results.xlsx`` @c689ca7).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from importlib import resources
from typing import Dict, List, Optional

NUMERIC = ("bpp", "psnr", "ms_ssim", "lpips", "dists", "fid", "kid", "niqe", "ssim")
#: Methods drawn by default (others are in the file but clutter the plots).
DEFAULT_METHODS = ("DiffEIC", "RDEIC-2", "RDEIC-5", "MS-ILLM", "HiFiC", "PerCo (SD)", "BPG", "VTM")
#: Datasets the reference file has rows for under the DiffEIC protocol.
PROTOCOL_DATASETS = ("kodak", "tecnick", "clic2020")


@dataclass
class PublishedSeries:
    """One method's points on one dataset, sorted by bpp (rows without a rate, e.g. SD-VAE, kept apart)."""

    dataset: str
    method: str
    points: List[Dict[str, Optional[float]]] = field(default_factory=list)
    no_rate: List[Dict[str, Optional[float]]] = field(default_factory=list)

    def values(self, metric: str):
        """(bpp list, metric list) over the points that report ``metric``."""
        pts = [p for p in self.points if p.get(metric) is not None]
        return [p["bpp"] for p in pts], [p[metric] for p in pts]


def load_published() -> List[Dict]:
    """All rows of the shipped CSV, numeric columns as floats (``None`` when empty)."""
    text = (resources.files("diffeic") / "data" / "published_rd.csv").read_text(encoding="utf-8")
    rows = []
    for r in csv.DictReader(text.splitlines()):
        rows.append({k: (float(v) if v != "" else None) if k in NUMERIC else v for k, v in r.items()})
    return rows


def published_series(dataset: str, methods=DEFAULT_METHODS) -> Dict[str, PublishedSeries]:
    """The series of ``dataset`` (e.g. ``"kodak"``), one per method, in ``methods`` order."""
    out: Dict[str, PublishedSeries] = {}
    for r in load_published():
        if r["dataset"] != dataset or (methods is not None and r["method"] not in methods):
            continue
        s = out.setdefault(r["method"], PublishedSeries(dataset, r["method"]))
        (s.points if r["bpp"] is not None else s.no_rate).append(r)
    for s in out.values():
        s.points.sort(key=lambda p: p["bpp"])
    order = list(methods) if methods is not None else sorted(out)
    return {m: out[m] for m in order if m in out}


def reference_dataset(dataset: str) -> Optional[str]:
    """Which published dataset to overlay for ``dataset``: itself if tabulated, else Kodak for orientation."""
    return dataset if dataset in PROTOCOL_DATASETS else "kodak"

"""Results in the JSON format of CompressAI's ``eval_model`` / ``bench``, one file per codec.

``{"name", "description", "results": {"psnr-rgb": [...], "ms-ssim-rgb": [...], "bpp": [...],
"encoding_time": [...], "decoding_time": [...]}}`` — lists aligned, one entry per rate point (dataset
means), sorted by rate — so ``python -m compressai.utils.plot -f <files>`` and other tools of the field
read them unchanged.  Learned metrics (``lpips``, ``dists``, ``niqe``, ``fid``, ``kid``) and the other
rates (``bpp_padded``, ``bpp_official``) are added when measured at every point; ``meta`` says which
dataset, protocol and model the numbers come from.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

#: Our summary columns → CompressAI's result keys, in the order written.
RESULT_KEYS = {"psnr": "psnr-rgb", "ms_ssim": "ms-ssim-rgb", "bpp": "bpp", "enc_s": "encoding_time",
               "dec_s": "decoding_time", "lpips": "lpips", "dists": "dists", "niqe": "niqe", "fid": "fid",
               "kid": "kid", "bpp_padded": "bpp_padded", "bpp_official": "bpp_official"}
#: Keys every file has (what ``eval_model`` always writes); the others only when measured everywhere.
REQUIRED_KEYS = ("psnr-rgb", "ms-ssim-rgb", "bpp", "encoding_time", "decoding_time")
FOLDER = "compressai"


def results_block(points: Sequence[Mapping[str, Any]]) -> Dict[str, List[Optional[float]]]:
    """The ``results`` lists of one codec from its per-point means (sorted by bpp: plots draw in order)."""
    pts = sorted(points, key=lambda p: p["bpp"])
    out: Dict[str, List[Optional[float]]] = {}
    for ours, key in RESULT_KEYS.items():
        values = [p.get(ours) for p in pts]
        if key in REQUIRED_KEYS or all(v is not None for v in values):
            out[key] = values
    return out


def codec_document(name: str, description: str, points: Sequence[Mapping[str, Any]],
                   meta: Mapping[str, Any]) -> Dict[str, Any]:
    """One codec's file: CompressAI's fields plus ``meta`` (with the point names, aligned with the lists)."""
    pts = sorted(points, key=lambda p: p["bpp"])
    meta = {**meta, "points": [p["point"] for p in pts], "n_images": [p["n"] for p in pts]}
    return {"name": name, "description": description, "results": results_block(pts), "meta": meta}


def write_documents(folder: Path, documents: Mapping[str, Mapping[str, Any]]) -> List[Path]:
    """Write ``{file stem: document}`` as ``folder/<stem>.json`` (atomically); returns the paths.

    The folder is this writer's: files of codecs that are not in ``documents`` (an earlier run's) are
    removed, so a plot over ``folder/*.json`` never mixes runs.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.json"):
        if old.stem not in documents:
            old.unlink()
    paths = []
    for stem, doc in documents.items():
        path = folder / f"{stem}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(doc, indent=2, default=_plain))
        os.replace(tmp, path)
        paths.append(path)
    return paths


def _plain(o):
    if hasattr(o, "item"):           # numpy scalars
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")

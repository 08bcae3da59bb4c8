"""The semantic family end to end on scikit-image's photos (none of which the semantic decoder trains on): bytes
per part, bpp, bandwidth saving, PSNR and MS-SSIM per configuration, beside JPEG/WebP/AVIF at the same bytes and
the demo DiffEIC model's nearest rate point.

    python benchmarks/semantic_family.py [--model semantic_tiny|FOLDER] [--images a,b,...] [--long-side 256]
                                         [--steps N] [--other tiny-trained] [--record]

Each photo is resized (Pillow, bicubic) so that its long side is ``--long-side`` pixels (a CPU decodes a
full-size photo in minutes), then compressed in four cumulative configurations of Rethinking Image Compression on
the Web with Generative AI: ``text`` (the hand-written prompt of ``benchmarks/semantic_parts.py``), ``+edges``
(Canny), ``+palette`` (32-cell grid), ``+region`` (the centre box of a quarter of the short side, kept as pixels),
through ``SemanticCodec.compress`` (container included; the never-larger rule on: ``fallback`` says when it stored
a WebP instead).  Decoded with the model's steps and seed 0.  Bandwidth saving = 1 − stream bytes / PNG bytes of the
evaluated photo (Pillow, ``optimize=True``).  Each classical codec is quality-searched to the stream's bpp
(``diffeic.evaluation.baselines.quality_search``); ``--other`` (default ``tiny-trained``, the shipped DiffEIC demo
model, which *was* trained on some of these photos: astronaut, rocket, motorcycle) is compressed at each of its
trained rate levels and its point nearest in bytes is decoded.  PSNR on 8-bit RGB, MS-SSIM 5-scale (NaN below
161 pixels a side).  The ``semantic_tiny`` preset has random decoder weights and no text encoder: numbers with it
check the pipeline, and the prompt never changes its reconstruction.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from diffeic import load_codec  # noqa: E402
from diffeic.evaluation.baselines import available_baselines, quality_search  # noqa: E402
from diffeic.evaluation.metrics import ms_ssim, psnr  # noqa: E402
from diffeic.samples import load_photo  # noqa: E402
from diffeic.semantic import FallbackUsed  # noqa: E402

try:                                   # as ``benchmarks.<name>`` (tests) or as a script
    from .common import cpu_section, format_table as markdown_table
    from .semantic_parts import PROMPTS
except ImportError:
    from common import cpu_section, format_table as markdown_table  # type: ignore[no-redef]
    from semantic_parts import PROMPTS  # type: ignore[no-redef]

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "retina")
CONFIGS = ("text", "+edges", "+palette", "+region")
PARTS = ("prompt", "edges", "palette", "regions", "framing", "container")


def resized(name: str, long_side: int) -> np.ndarray:
    from PIL import Image

    rgb = load_photo(name)
    h, w = rgb.shape[:2]
    scale = long_side / max(h, w)
    if scale >= 1:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC), dtype=np.uint8)


def png_bytes(rgb: np.ndarray) -> int:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG", optimize=True)
    return len(buf.getvalue())


def centre_box(h: int, w: int) -> tuple:
    side = max(8, min(h, w) // 4)
    y0, x0 = (h - side) // 2, (w - side) // 2
    return x0, y0, x0 + side, y0 + side


def config_kwargs(config: str, prompt: str, box: tuple) -> Dict[str, object]:
    return {"prompt": prompt, "edges": config != "text", "palette": 32 if config in ("+palette", "+region") else None,
            "keep": [box] if config == "+region" else []}


def run(model: str, names, long_side: int, steps, other: str, baselines: str) -> List[Dict[str, object]]:
    import torch

    from diffeic.codecs.semantic import from_rgb8, to_rgb8

    codec = load_codec(model)
    other_codec = load_codec(other) if other else None
    classical, skipped = available_baselines([b for b in baselines.split(",") if b])
    for name, why in skipped.items():
        print(f"skipped {name}: {why}", flush=True)
    rows: List[Dict[str, object]] = []
    for name in names:
        rgb = resized(name, long_side)
        h, w = rgb.shape[:2]
        x = from_rgb8(rgb)
        png = png_bytes(rgb)
        box = centre_box(h, w)
        others = {}
        if other_codec is not None:
            levels = other_codec.lfgcm.rate_gains.levels() if other_codec.rate_range is not None else [None]
            for q in levels:
                bits = other_codec.compress(x, **({} if q is None else {"rate": q}))
                others[q] = bits
        for config in CONFIGS:
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always", FallbackUsed)
                t0 = time.perf_counter()
                bits = codec.compress(x, seed=0, **config_kwargs(config, PROMPTS[name], box))
                enc_s = time.perf_counter() - t0
            info = codec.inspect(bits)
            t0 = time.perf_counter()
            rec = to_rgb8(codec.decompress(bits, steps=steps))
            dec_s = time.perf_counter() - t0
            bpp = 8 * len(bits) / (h * w)
            row = {"image": name, "size": f"{w}x{h}", "config": config, "codec": codec.config.name,
                   **{p: info["bytes"].get(p, 0) for p in PARTS}, "bytes": len(bits), "bpp": bpp,
                   "saving": 1 - len(bits) / png, "png": png, "psnr": psnr(rgb, rec), "ms_ssim": ms_ssim(rgb, rec),
                   "fallback": "yes" if info["fallback"] else ("warned" if said else "no"),
                   "enc_s": enc_s, "dec_s": dec_s}
            rows.append(row)
            print(row, flush=True)
            for b in classical:
                r = quality_search(b, rgb, bpp)
                brec = b.decode(r.data, (h, w))
                note = " (floor)" if r.floor else " (ceiling)" if r.ceiling else ""
                rows.append({"image": name, "config": config, "codec": f"{b.name} {b.setting(r.level)}{note}",
                             "bytes": len(r.data), "bpp": r.bpp, "saving": 1 - len(r.data) / png,
                             "psnr": psnr(rgb, brec), "ms_ssim": ms_ssim(rgb, brec)})
            if others:
                q, obits = min(others.items(), key=lambda kv: abs(len(kv[1]) - len(bits)))
                with torch.no_grad():
                    orec = to_rgb8(other_codec.decompress(obits))
                rows.append({"image": name, "config": config, "codec": f"{other} q={q:g}" if q is not None else other,
                             "bytes": len(obits), "bpp": 8 * len(obits) / (h * w), "saving": 1 - len(obits) / png,
                             "psnr": psnr(rgb, orec), "ms_ssim": ms_ssim(rgb, orec)})
    return rows


def mean_rows(rows: List[Dict[str, object]]) -> List[Dict[str, object]]:
    """Per configuration and codec family (ours, each classical codec, the other model): means over the photos."""
    def family(codec: str) -> str:
        return codec.split(" ")[0]

    out = []
    for config in CONFIGS:
        groups: Dict[str, List[Dict[str, object]]] = {}
        for r in rows:
            if r["config"] == config:
                groups.setdefault(family(str(r["codec"])), []).append(r)
        for fam, rs in groups.items():
            m = {"config": config, "codec": fam, "n": len(rs)}
            for k in (*PARTS, "bytes", "bpp", "saving", "psnr", "ms_ssim"):
                vals = [float(r[k]) for r in rs if k in r and not (isinstance(r[k], float) and np.isnan(r[k]))]
                if vals:
                    m[k] = statistics.mean(vals)
            out.append(m)
    return out


def table(rows: List[Dict[str, object]], columns) -> str:
    def cell(key: str, v: object) -> str:
        if isinstance(v, float):
            if key == "saving":
                return f"{100 * v:.2f} %"
            if key in ("bpp", "ms_ssim"):
                return f"{v:.4f}"
            return f"{v:.2f}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    return markdown_table(rows, columns, cell)


def main(argv=None) -> List[Dict[str, object]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="semantic_tiny", help="a semantic preset, shipped model or checkpoint folder")
    p.add_argument("--images", default=",".join(PHOTOS), help="comma-separated scikit-image photo names")
    p.add_argument("--long-side", type=int, default=256, help="photos resized to this long side (pixels)")
    p.add_argument("--steps", type=int, default=None, help="decoder steps (default: the model's)")
    p.add_argument("--other", default="tiny-trained", help="another family's model ('' for none)")
    p.add_argument("--baselines", default="jpeg,webp,avif")
    p.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    load0 = os.getloadavg()[0]
    started = time.perf_counter()
    rows = run(args.model, args.images.split(","), args.long_side, args.steps, args.other, args.baselines)
    per_image = ("image", "size", "config", "codec", *PARTS, "bytes", "bpp", "saving", "psnr", "ms_ssim", "fallback",
                 "dec_s")
    means = ("config", "codec", "n", *PARTS, "bytes", "bpp", "saving", "psnr", "ms_ssim")
    body = (f"Means over the photos per configuration (ours: bytes per part; classical codecs at our bpp; "
            f"{args.other or 'no other model'}: its nearest rate point in bytes):\n\n{table(mean_rows(rows), means)}\n\n"
            f"<details><summary>per photo</summary>\n\n{table(rows, per_image)}\n\n</details>")
    cpu_section(f"semantic family: {args.model} on {len(args.images.split(','))} photos (long side {args.long_side})",
                body, args.record, load_start=load0, elapsed=time.perf_counter() - started)
    return rows


if __name__ == "__main__":
    main()

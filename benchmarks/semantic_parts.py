"""Bytes per part of the semantic codec's parts layer (diffeic.semantic) on scikit-image's colour photos.

    python benchmarks/semantic_parts.py [--images astronaut,chelsea] [--repeats 3] [--record]

For each photo (full size, as scikit-image ships it), the parts of Rethinking Image Compression on the Web with
Generative AI, as ``diffeic.semantic.encode_parts`` codes them:

* ``prompt``: a hand-written description of about 60 characters (:data:`PROMPTS`; no captioning model involved);
* ``edges``: Canny edges at short side ``min(512, short side)`` (``diffeic.bilevel.canny_edges`` defaults), coded
  by ``diffeic.bilevel``;
* ``palette``: the 32-cell palette grid, WebP quality 75 or lossless, whichever is smaller;
* ``region``: one kept region, the 64×64 box at the image centre, WebP quality 90;
* ``framing``: the stream's own bytes (version, flags, size, lengths, box).

Columns ``text``, ``+edges``, ``+palette``, ``+region``: whole-stream bytes of the four cumulative configurations
(prompt; prompt + edges; + palette; + region), ``bpp`` of the last, and ``save_*`` the bandwidth saving
``1 - stream bytes / PNG bytes`` of each configuration, where PNG is the photo saved by Pillow
(``optimize=True``) at the same size; ``webp75``: a plain WebP (quality 75, method 6) of the photo, the file the
never-larger rule compares with (``fallback``: whether the rule replaced the full configuration by a WebP).
``enc_ms``/``dec_ms``: median wall time of ``encode_parts``/``decode_parts`` of the full configuration (encode
includes Canny and the never-larger check; decode includes the bi-level coder's re-encoding check), ``*_cpu_ms``
the process CPU time.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import warnings
from pathlib import Path
from typing import Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from diffeic.samples import load_photo as photo  # noqa: E402  (uint8 RGB, the stereo pair split)
from diffeic.semantic import FallbackUsed, decode_parts, encode_parts, inspect_parts  # noqa: E402

try:                                   # as ``benchmarks.<name>`` (tests) or as a script
    from .common import cpu_section, timed_cpu, format_table as markdown_table
except ImportError:
    from common import cpu_section, timed_cpu, format_table as markdown_table  # type: ignore[no-redef]

REGION = 64
PROMPTS = {   # hand-written, about 60 characters each
    "astronaut": "portrait of a smiling astronaut in a white suit, US flag behind",
    "chelsea": "a tabby cat with green eyes looking to the side, close-up photo",
    "coffee": "a cup of coffee with latte art on a saucer, red background",
    "rocket": "a space shuttle on the launch pad under a clear blue sky",
    "motorcycle_left": "a red motorcycle parked in a garage, tools and boxes behind it",
    "motorcycle_right": "a red motorcycle parked in a garage, tools and boxes behind it",
    "hubble_deep_field": "deep space telescope image, many small galaxies on black sky",
    "immunohistochemistry": "microscope slide of stained tissue, brown and blue cell nuclei",
    "retina": "fundus photograph of a human retina, orange with red blood vessels",
}
PHOTOS = tuple(PROMPTS)
COLUMNS = ("image", "size", "png", "webp75", "prompt", "edges", "palette", "region", "framing", "text", "+edges",
           "+palette", "+region", "bpp", "save_text", "save_+edges", "save_+palette", "save_+region", "fallback",
           "enc_ms", "dec_ms", "enc_cpu_ms", "dec_cpu_ms")


def file_bytes(rgb: np.ndarray, fmt: str, **options) -> int:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **options)
    return len(buf.getvalue())


def centre_box(h: int, w: int, side: int = REGION) -> tuple:
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return x0, y0, min(w, x0 + side), min(h, y0 + side)


def run(names=PHOTOS, repeats: int = 3) -> List[Dict[str, object]]:
    rows = []
    for name in names:
        rgb = photo(name)
        h, w = rgb.shape[:2]
        prompt = PROMPTS[name]
        box = centre_box(h, w)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FallbackUsed)
            configs = {
                "text": encode_parts(rgb, prompt, edges=False, palette=None, fallback=False),
                "+edges": encode_parts(rgb, prompt, edges=True, palette=None, fallback=False),
                "+palette": encode_parts(rgb, prompt, edges=True, palette=32, fallback=False),
            }
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always", FallbackUsed)
                data, enc_ms, enc_cpu = timed_cpu(lambda: encode_parts(rgb, prompt, keep=[box]), repeats)
        configs["+region"] = data
        parts, dec_ms, dec_cpu = timed_cpu(lambda: decode_parts(data), repeats)
        info = inspect_parts(data)
        if not info["fallback"] and parts.prompt != prompt:
            raise AssertionError(f"{name}: the prompt did not round-trip")
        png = file_bytes(rgb, "PNG", optimize=True)
        sizes = info["bytes"]
        row = {"image": name, "size": f"{w}x{h}", "png": png, "webp75": file_bytes(rgb, "WEBP", quality=75, method=6),
               "prompt": sizes.get("prompt", 0), "edges": sizes.get("edges", 0), "palette": sizes.get("palette", 0),
               "region": sizes.get("regions", 0), "framing": sizes["framing"],
               **{k: len(v) for k, v in configs.items()}, "bpp": 8 * len(data) / (h * w),
               **{f"save_{k}": 1 - len(v) / png for k, v in configs.items()},
               "fallback": "yes" if info["fallback"] else ("warned" if said else "no"),
               "enc_ms": enc_ms, "dec_ms": dec_ms, "enc_cpu_ms": enc_cpu, "dec_cpu_ms": dec_cpu}
        rows.append(row)
        print(row, flush=True)
    keys = ("png", "webp75", "prompt", "edges", "palette", "region", "framing", "text", "+edges", "+palette", "+region")
    total = {k: sum(r[k] for r in rows) for k in keys}
    configs = ("text", "+edges", "+palette", "+region")
    mean = {f"save_{k}": statistics.mean(r[f"save_{k}"] for r in rows) for k in configs}
    rows.append({"image": "**total** (saving: mean)", **total, **mean,
                 "bpp": statistics.mean(r["bpp"] for r in rows)})
    return rows


def format_table(rows: List[Dict[str, object]]) -> str:
    def cell(key: str, v: object) -> str:
        if isinstance(v, float):
            if key.startswith("save_"):
                return f"{100 * v:.2f} %"
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    return markdown_table(rows, COLUMNS, cell)


def main(argv=None) -> List[Dict[str, object]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", default=",".join(PHOTOS), help="comma-separated scikit-image photo names")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per photo (median reported)")
    p.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    load0 = os.getloadavg()[0]
    rows = run(args.images.split(","), args.repeats)
    cpu_section("semantic parts: bytes per part, bpp and bandwidth saving on scikit-image's photos",
                format_table(rows), args.record, load_start=load0)
    return rows


if __name__ == "__main__":
    main()

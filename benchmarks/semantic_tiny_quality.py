"""Quality of the ``semantic_tiny`` decoder on scikit-image's photos (none of which it was trained on).

    python benchmarks/semantic_tiny_quality.py [--export runs/semantic_tiny/export] [--photos a,b,...]
        [--seeds 0,1,2] [--steps 8] [--sheet docs/semantic_tiny_sheet.jpg] [--out benchmarks/out/semantic_tiny.csv]

Each photo is centre-cropped to at most 256×384 (H×W) and coded by :func:`diffeic.semantic.encode_parts`
(no prompt: the tiny decoder has no text encoder; ``fallback=False``, so the parts are measured even where the
never-larger rule would store a WebP) in four configurations: ``edges`` (Canny edges only), ``palette`` (the
32-cell palette only), ``edges+palette``, and ``+region`` (edges + palette + the 64×64 box at the centre kept as
WebP q90).  Each stream is decoded by

* ``trained``: the decoder of ``--export`` (``SemanticTinyModule`` export), at each seed of ``--seeds``;
* ``untrained``: the deterministic random decoder (the ``semantic_tiny`` preset's weights: zero convolutions at
  zero, so the frozen prior's own img2img from the palette), at the first seed;
* ``palette``: the upsampled palette alone (no diffusion; mid-grey without a palette);
* ``sketch``: palette + edges without diffusion: the upsampled palette with edge pixels darkened to 60 %;

(the kept region pasted into every output of ``+region``).  Printed: mean PSNR / MS-SSIM over the photos per
(configuration, decoder) at the first seed, and for ``trained`` the spread of that mean over the seeds.

``--noise-loss N``: instead, the training objective on held-out data: the mean ε-MSE of both decoders on N fixed
128×128 crops of the photos (the training augmentation without colour change, conditions made as in training,
t and ε from a fixed seed; the same batches for both decoders).
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from diffeic.evaluation.metrics import ms_ssim, psnr  # noqa: E402
from diffeic.samples import ALL_PHOTOS, TRAIN_PHOTOS, load_photo  # noqa: E402
from diffeic.semantic import FallbackUsed, decode_parts, encode_parts  # noqa: E402
from diffeic.semantic.palette import upsample_palette  # noqa: E402
from diffeic.semantic.regions import paste_regions  # noqa: E402
from diffeic.semantic.tiny_decoder import TinyDecoderSettings, TinySemanticDecoder  # noqa: E402
from diffeic.training.semantic import load_export, load_tiny_backbone  # noqa: E402

CONFIGS = {"edges": dict(edges=True, palette=None), "palette": dict(edges=False, palette=32),
           "edges+palette": dict(edges=True, palette=32), "+region": dict(edges=True, palette=32, region=True)}
MAX_H, MAX_W = 256, 384
REGION = 64


def centre_crop(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = min(h, MAX_H), min(w, MAX_W)
    top, left = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(img[top:top + ch, left:left + cw])


def to_u8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def baselines(parts) -> Dict[str, np.ndarray]:
    h, w = parts.height, parts.width
    pal = upsample_palette(parts.palette, h, w) if parts.palette is not None else np.full((h, w, 3), 128, np.uint8)
    sketch = pal.copy()
    if parts.edges is not None:
        e = np.asarray(parts.edges)
        if e.shape != (h, w):
            e = np.asarray(torch.nn.functional.interpolate(torch.from_numpy(e.astype(np.float32))[None, None],
                                                           size=(h, w), mode="nearest")[0, 0]) > 0.5
        sketch[e] = (sketch[e] * 0.6).astype(np.uint8)
    return {"palette": paste_regions(pal, parts.regions), "sketch": paste_regions(sketch, parts.regions)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--export", default="runs/semantic_tiny/export")
    p.add_argument("--photos", default=",".join(ALL_PHOTOS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--start", type=int, default=600)
    p.add_argument("--sheet", default="docs/semantic_tiny_sheet.jpg")
    p.add_argument("--out", default="benchmarks/out/semantic_tiny.csv")
    p.add_argument("--noise-loss", type=int, default=0, metavar="N")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.noise_loss:
        return heldout_noise_loss(args.export, args.photos.split(","), args.noise_loss)
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = TinyDecoderSettings(steps=args.steps, start=args.start)
    backbone = load_tiny_backbone()
    decoders = {"trained": load_export(args.export, backbone),
                "untrained": TinySemanticDecoder(backbone, TinySemanticDecoder.default_arch())}
    rows: List[dict] = []
    sheet_rows = []
    t0 = time.time()
    for name in args.photos.split(","):
        img = centre_crop(load_photo(name))
        h, w = img.shape[:2]
        for config, kw in CONFIGS.items():
            keep = []
            if kw.get("region"):
                y0, x0 = (h - REGION) // 2, (w - REGION) // 2
                keep = [(x0, y0, x0 + REGION, y0 + REGION)]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FallbackUsed)
                data = encode_parts(img, None, edges=kw["edges"], palette=kw["palette"], keep=keep, fallback=False)
            parts = decode_parts(data)
            outs = {(k, seeds[0]): v for k, v in baselines(parts).items()}
            for dname, dec in decoders.items():
                for seed in (seeds if dname == "trained" else seeds[:1]):
                    outs[(dname, seed)] = to_u8(dec.decode(parts, settings, seed))
            for (dname, seed), rec in outs.items():
                rows.append({"photo": name, "seen_by_backbone": name in TRAIN_PHOTOS, "config": config,
                             "decoder": dname, "seed": seed, "bytes": len(data), "bpp": 8 * len(data) / (h * w),
                             "psnr": psnr(img, rec), "ms_ssim": ms_ssim(img, rec)})
            if config == "edges+palette":
                sheet_rows.append((name, img, outs[("palette", seeds[0])], outs[("untrained", seeds[0])],
                                   outs[("trained", seeds[0])], parts.edges))
        print(f"{name}: done ({time.time() - t0:.0f} s)", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summarise(rows, seeds)
    if args.sheet:
        write_sheet(sheet_rows, Path(args.sheet))


def heldout_noise_loss(export: str, photos: List[str], count: int) -> None:
    import random

    from PIL import Image

    from diffeic.training.data import CropSpec, paper_crop
    from diffeic.training.semantic import crop_condition

    backbone = load_tiny_backbone()
    decoders = {"untrained": TinySemanticDecoder(backbone, TinySemanticDecoder.default_arch()),
                "trained": load_export(export, backbone)}
    spec = CropSpec(128, 128, 384)
    rng = random.Random("heldout-noise-loss")
    crops = torch.stack([paper_crop(Image.fromarray(load_photo(photos[i % len(photos)])), spec, rng)
                         for i in range(count)])
    cond = torch.stack([crop_condition(x, rng) for x in crops])
    gen = torch.Generator().manual_seed(0)
    t = torch.randint(0, 1000, (count,), generator=gen)
    noise = torch.randn(count, 4, 16, 16, generator=gen)
    for name, dec in decoders.items():
        with torch.no_grad():
            losses = [float(dec.noise_loss(crops[i:i + 8], cond[i:i + 8], t[i:i + 8], noise[i:i + 8]))
                      for i in range(0, count, 8)]
        print(f"{name}: held-out noise loss {statistics.mean(losses):.4f} on {count} crops of {', '.join(photos)}")


def summarise(rows: List[dict], seeds: List[int]) -> None:
    photos = sorted({r["photo"] for r in rows})
    print(f"\n{len(photos)} photos ({', '.join(photos)}); mean over photos at seed {seeds[0]}; "
          f"trained: [min, max] of that mean over seeds {seeds}")
    print("| parts | mean bpp | decoder | PSNR dB | MS-SSIM |")
    print("|---|---|---|---|---|")
    for config in CONFIGS:
        sel = [r for r in rows if r["config"] == config]
        bpp = statistics.mean(r["bpp"] for r in sel if r["decoder"] == "palette")
        for dname in ("palette", "sketch", "untrained", "trained"):
            def mean(metric, seed):
                vals = [r[metric] for r in sel if r["decoder"] == dname and r["seed"] == seed]
                return statistics.mean(vals)
            cells = []
            for metric, fmt in (("psnr", "{:.2f}"), ("ms_ssim", "{:.4f}")):
                text = fmt.format(mean(metric, seeds[0]))
                if dname == "trained" and len(seeds) > 1:
                    per_seed = [mean(metric, s) for s in seeds]
                    text += f" [{fmt.format(min(per_seed))}, {fmt.format(max(per_seed))}]"
                cells.append(text)
            print(f"| {config} | {bpp:.4f} | {dname} | {cells[0]} | {cells[1]} |")


def write_sheet(sheet_rows, path: Path) -> None:
    """Rows: original | palette | untrained decode | trained decode | edges (edges+palette, first seed)."""
    from PIL import Image, ImageDraw

    titles = ["original", "palette (32 cells)", "untrained decoder", "trained decoder", "Canny edges"]
    tile_h = 160
    tiles = []
    for name, *imgs in sheet_rows:
        edges = imgs[-1]
        imgs = imgs[:-1] + [np.where(np.asarray(edges)[..., None], 0, 255).astype(np.uint8).repeat(3, axis=2)]
        scaled = []
        for a in imgs:
            im = Image.fromarray(a)
            scaled.append(im.resize((round(im.width * tile_h / im.height), tile_h), Image.Resampling.LANCZOS))
        tiles.append((name, scaled))
    width = max(sum(t.width for t in s) + 8 * (len(s) + 1) for _, s in tiles)
    head = 22
    sheet = Image.new("RGB", (width, head + len(tiles) * (tile_h + 22) + 8), "white")
    draw = ImageDraw.Draw(sheet)
    x = 8
    for i, title in enumerate(titles):
        draw.text((x, 4), title, fill="black")
        x += tiles[0][1][i].width + 8
    y = head
    for name, scaled in tiles:
        draw.text((8, y + 2), name, fill="black")
        x = 8
        for im in scaled:
            sheet.paste(im, (x, y + 18))
            x += im.width + 8
        y += tile_h + 22
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)      # the format follows the suffix
    sheet.save(tmp, optimize=True, quality=92)                  # (quality: JPEG's; PNG ignores it)
    tmp.replace(path)
    print(f"sheet: {path}")


if __name__ == "__main__":
    main()

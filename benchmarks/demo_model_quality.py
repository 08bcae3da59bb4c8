"""Where a model's quality goes, stage by stage, on scikit-image's colour photos.

    python benchmarks/demo_model_quality.py [--model tiny-trained] [--rate Q] [--seeds 3] [--out DIR]

For every scikit-image colour photo, cropped to a multiple of 64 (a source the next demo model, configs/demo2_*.yaml,
never trains on; the shipped tiny-trained trained on seven of them, so only chelsea and coffee are held out for it):

* ``VAE ceiling``   the frozen VAE alone: ``decode(encode(x))``, the best any z_c can give;
* ``VAE(z_c)``      the decoded content variables without diffusion, at rate ``--rate`` (default: the top);
* each sampler at the model's default steps and at the paper's 50 steps, over ``--seeds`` decode seeds
  (mean; the spread is the standard deviation over seeds of the photo-mean).

Metrics: PSNR (dB, RGB), MS-SSIM (pytorch-msssim) and the mean CIEDE2000 colour difference between the
8×-downsampled (box) original and reconstruction.  Writes ``quality.json`` and a side-by-side sheet
(original | VAE ceiling | VAE(z_c) | default decode) of every photo under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_msssim import ms_ssim
from skimage.color import deltaE_ciede2000, rgb2lab

from diffeic import load_codec
from diffeic.samples import ALL_PHOTOS, centre_crop


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    return -10 * math.log10(max(float(F.mse_loss(x, y)), 1e-12))


def msssim(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(ms_ssim(x[None], y[None], data_range=1.0))


def delta_e(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean CIEDE2000 between the 8×-box-downsampled images (colour, not detail)."""
    small = [F.avg_pool2d(v[None], 8)[0].permute(1, 2, 0).double().numpy() for v in (x, y)]
    return float(deltaE_ciede2000(rgb2lab(small[0]), rgb2lab(small[1])).mean())


def metrics(x: torch.Tensor, y: torch.Tensor) -> Dict[str, float]:
    return {"psnr": psnr(x, y), "ms_ssim": msssim(x, y), "delta_e": delta_e(x, y)}


def mean_of(rows: List[Dict[str, float]]) -> Dict[str, float]:
    return {k: statistics.fmean(r[k] for r in rows) for k in rows[0]}


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-trained", help="a DiffEIC model: shipped name, preset or folder")
    parser.add_argument("--rate", type=float, default=None, help="rate parameter q (default: the model's top)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--photos", default=",".join(ALL_PHOTOS))
    parser.add_argument("--limit", type=int, default=384, help="largest side of the centre crop (pixels)")
    parser.add_argument("--samplers", default="ddpm,fewstep", help="samplers to measure (default steps and 50)")
    parser.add_argument("--colour-fix", choices=("model", "on", "off"), default="model",
                        help="the decoder's colour fix toward z_c (diffusion/colour.py): the model's setting, or forced")
    parser.add_argument("--fewstep-start", type=int, default=None,
                        help="the few-step sampler's start timestep (default: the model's sampler.fewstep_start)")
    parser.add_argument("--out", default="benchmarks/out/demo_quality")
    args = parser.parse_args(argv)
    if args.limit < 192:    # crops are multiples of 64, and MS-SSIM's five scales need more than 160 pixels a side
        parser.error(f"--limit {args.limit}: must be at least 192")
    torch.manual_seed(0)
    codec = load_codec(args.model)            # a shipped name, a preset, a folder or a hub id
    if args.colour_fix != "model":
        codec.config.sampler.colour_fix = args.colour_fix == "on"
    if args.fewstep_start is not None:
        codec.config.sampler.fewstep_start = args.fewstep_start
    rate = args.rate if args.rate is not None or codec.rate_range is None else codec.rate_range[1]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    default = codec.config.sampler
    settings = [(default.name, default.steps)]
    for s in args.samplers.split(","):
        for n in ((4, 50) if s != default.name else (50,)):
            if (s, n) not in settings:
                settings.append((s, n))
    rows: Dict[str, List[Dict[str, float]]] = {}
    per_seed: Dict[str, List[List[Dict[str, float]]]] = {}
    bpp = []
    t0 = time.time()
    for name in args.photos.split(","):
        x = centre_crop(name, args.limit)
        kwargs = {} if codec.rate_range is None else {"rate": rate}
        bits = codec.compress(x, **kwargs)
        bpp.append(8 * len(bits) / (x.shape[1] * x.shape[2]))
        with torch.no_grad():
            ceiling = codec.backbone.decode(codec.backbone.encode(x[None]))[0]
            z_c = codec.decompress_latents(bits)["z_c"]
            plain = codec.backbone.decode(z_c)[0, :, :x.shape[1], :x.shape[2]]
        rows.setdefault("VAE ceiling", []).append(metrics(x, ceiling))
        rows.setdefault("VAE(z_c)", []).append(metrics(x, plain))
        tiles = [x, ceiling, plain]
        for sampler, steps in settings:
            key = f"{sampler} {steps}"
            seeds = []
            for seed in range(args.seeds):
                y = codec.decompress(bits, sampler=sampler, steps=steps, seed=seed)
                seeds.append(metrics(x, y))
                if (sampler, steps) == settings[0] and seed == 0:
                    tiles.append(y)
            rows.setdefault(key, []).append(mean_of(seeds))
            per_seed.setdefault(key, []).append(seeds)
        sheet = torch.cat(tiles, dim=2).clamp(0, 1).permute(1, 2, 0).numpy()
        Image.fromarray((sheet * 255 + 0.5).astype(np.uint8)).save(out / f"{name}.png")
        print(f"{name}: {bpp[-1]:.4f} bpp, " + ", ".join(f"{k} {rows[k][-1]['psnr']:.2f} dB" for k in rows),
              flush=True)
    table = {}
    for key, values in rows.items():
        entry = mean_of(values)
        if key in per_seed:       # spread over seeds of the photo-mean
            by_seed = [mean_of([p[s] for p in per_seed[key]]) for s in range(args.seeds)]
            entry.update({f"{k}_std": statistics.pstdev(r[k] for r in by_seed) for k in ("psnr", "ms_ssim", "delta_e")})
        table[key] = entry
    result = {"model": args.model, "rate": rate, "colour_fix": codec.config.sampler.colour_fix,
              "fewstep_start": codec.config.sampler.fewstep_start, "photos": args.photos.split(","), "crop_limit": args.limit,
              "seeds": args.seeds, "bpp_mean": statistics.fmean(bpp), "table": table,
              "wall_s": round(time.time() - t0, 1)}
    (out / "quality.json").write_text(json.dumps(result, indent=2))
    print(f"\nmean over {len(bpp)} photos at q = {rate}, {statistics.fmean(bpp):.4f} bpp "
          f"(seeds: {args.seeds}; ± = std over seeds)")
    print(f"{'stage':16s} {'PSNR dB':>14s} {'MS-SSIM':>16s} {'ΔE2000 (1/8)':>16s}")
    for key, e in table.items():
        spread = lambda k, f: f" ±{e[k + '_std']:{f}}" if k + "_std" in e else ""   # noqa: E731
        print(f"{key:16s} {e['psnr']:8.2f}{spread('psnr', '.2f'):>6s} {e['ms_ssim']:8.4f}{spread('ms_ssim', '.4f'):>8s} "
              f"{e['delta_e']:8.2f}{spread('delta_e', '.2f'):>6s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

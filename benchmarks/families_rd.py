"""RD points of the HiFiC / refinement codec families on held-out bundled photos, beside JPEG/WebP/AVIF.

    python benchmarks/families_rd.py --model checkpoints/hific_tiny --model hific_tiny \\
        --model checkpoints/refine_tiny --model refine_tiny [--images chelsea,coffee] [--steps 4]

For each model (a checkpoint folder = trained, a preset name = untrained random init) and image:
real stream bytes → bpp over the original pixels, PSNR on 8-bit RGB, MS-SSIM; a refine model is also
measured with ``steps=0`` (its MSE reconstruction: same stream, same rate).  Each classical codec is
quality-searched to the bpp of each of our points.  Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from diffeic import load_codec  # noqa: E402
from diffeic.evaluation.baselines import available_baselines, quality_search  # noqa: E402
from diffeic.evaluation.metrics import ms_ssim, psnr  # noqa: E402
from diffeic.io import to_uint8  # noqa: E402


def photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    return np.ascontiguousarray(np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--images", default="chelsea,coffee")
    p.add_argument("--steps", type=int, default=None, help="refiner steps (default: the model's)")
    p.add_argument("--baselines", default="jpeg,webp,avif")
    args = p.parse_args(argv)
    import torch

    baselines, skipped = available_baselines([b for b in args.baselines.split(",") if b])
    rows = []
    for spec in args.model:
        codec = load_codec(spec)
        label = f"{codec.config.name} ({'trained' if Path(spec).is_dir() else 'untrained'})"
        for name in args.images.split(","):
            img = photo(name)
            x = torch.from_numpy(img).permute(2, 0, 1).float() / 255.0
            t0 = time.perf_counter()
            bits = codec.compress(x)
            variants = [("", {})]
            if codec.family == "refine":
                variants = [(" MSE", {"steps": 0}), (" refined", {"steps": args.steps})]
            bpp = 8 * len(bits) / (img.shape[0] * img.shape[1])
            for suffix, kw in variants:
                rec = to_uint8(codec.decompress(bits, **kw))
                rows.append((label + suffix, name, bpp, psnr(img, rec), ms_ssim(img, rec), time.perf_counter() - t0))
            for b in baselines:
                r = quality_search(b, img, bpp)
                rec = b.decode(r.data, img.shape[:2])
                rows.append((f"{b.name} @ {label}", name, r.bpp, psnr(img, rec), ms_ssim(img, rec), r.enc_s))
    print("| codec | image | bpp | PSNR dB | MS-SSIM |")
    print("|---|---|---|---|---|")
    for label, name, bpp, ps, ms, _ in rows:
        print(f"| {label} | {name} | {bpp:.4f} | {ps:.2f} | {ms:.4f} |")
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

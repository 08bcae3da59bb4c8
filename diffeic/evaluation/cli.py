"""Command line of ``eval.py`` (argument parsing only; the work is in :mod:`.runner`)."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ..pretrained import DEMO_POINTS, pretrained_models
from ..samples import HELDOUT_PHOTOS as SAMPLE_PHOTOS
from .datasets import DatasetUnavailable

#: The main job: every rate point of the demo model shipped in the package, or the untrained preset while
#: no trained demo model is installed (scripts/train_tiny.sh makes one).
DEFAULT_MODELS = ",".join(DEMO_POINTS) if set(DEMO_POINTS) <= set(pretrained_models()) else "tiny"

EPILOG = f"""\
examples:
  python eval.py                                   # {len(SAMPLE_PHOTOS)} held-out photos, demo model (else tiny), offline
  python eval.py --dataset kodak --model checkpoints/diffeic_l2 --device cuda
  python eval.py --dataset kodak --model checkpoints/l1,checkpoints/l2,checkpoints/l4 --anchor bpg
  python eval.py --dataset folder:~/photos --limit 10 --baselines jpeg,avif --save-recon
  python eval.py --dataset tecnick --data-dir /data/eval --steps 20 --sampler ddim --seed 231

datasets:
  kodak      24 PNGs, native 768x512 / 512x768 (downloaded from r0k.us)
  tecnick    140 images -> 768x768 (manual download: the authors' Drive copy)
  clic2020   428 test images -> 768x768 (downloaded from data.vision.ee.ethz.ch)
  samples    scikit-image photos no demo model trained on ({', '.join(SAMPLE_PHOTOS)}), offline
  folder:P   every image under folder P (recursive, sorted), native size
  Downloads are cached under --data-dir, $DIFFEIC_DATA or ~/.cache/diffeic/data, file counts
  checked and sha256 recorded in SHA256SUMS.

outputs (in --out, default eval_out/<dataset>_<model>):
  results.csv           one row per image x codec x rate point: dataset,image,codec,point,setting,H,W,
                        bytes,bpp,bpp_padded,target_bpp,psnr,ms_ssim,lpips,dists,niqe,enc_s,dec_s
                        (empty cell = metric skipped). A rerun skips rows already there (resume).
  summary.json          means per codec/point, FID/KID, BD-rates, metrics skipped and why, model,
                        untrained flag, versions, device, seed
  bitstreams/           our .deic files (bpp = 8 * file size / original pixels) and baseline files
  plots/rd_<metric>.png|.svg  bpp vs each metric: ours, baselines, published points
  recon/                reconstructions as PNG (with --save-recon)
  features/             cached Inception features of FID/256 patches (when the weights exist)

Learned metrics need pretrained backbones (AlexNet for LPIPS, VGG16 for DISTS, Inception for FID/KID)
in torch hub's cache (~/.cache/torch/hub/checkpoints); offline without them the column is skipped
with one line saying which file to put there. Set DIFFEIC_NO_DOWNLOAD=1 to never try the network.
"""


def _floats(text: str) -> List[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eval.py", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Evaluate DiffEIC (and classical baselines) on an image set: real bitstreams, "
                    "bpp from file sizes, PSNR / MS-SSIM / LPIPS / DISTS / NIQE / FID / KID, RD plots, BD-rate.")
    p.add_argument("--dataset", default="samples", help="kodak | tecnick | clic2020 | samples | folder:PATH "
                                                        "(default: samples)")
    p.add_argument("--model", default=DEFAULT_MODELS,
                   help="a shipped model (tiny-trained, tiny-trained-l4, ...: see diffeic.pretrained_models()), a "
                        "preset name (tiny, sd21: random init = untrained) or a checkpoint folder; comma-separate "
                        "several for several rate points (default: the shipped demo model's rate points, %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="diffusion steps (default: the stream's/model's)")
    p.add_argument("--sampler", default=None, help="ddpm | ddim | dpmpp | fewstep (default: the model's)")
    p.add_argument("--seed", type=int, default=None, help="decoding seed (default: the model's)")
    p.add_argument("--baselines", default="jpeg,webp,avif,bpg,vtm",
                   help="comma list from jpeg, webp, avif, bpg, vtm, compressai:<zoo model> ('' for none); "
                        "unavailable ones are skipped with a line (default: %(default)s)")
    p.add_argument("--rate-factors", type=_floats, default=[0.5, 1.0, 2.0],
                   help="baselines are quality-searched to factor x our bpp on each image, for each factor "
                        "(default: 0.5,1,2 - a short curve around each of our points)")
    p.add_argument("--anchor", default=None, help="series for BD-rate: diffeic or a baseline name "
                                                  "(default: the first available baseline)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--save-recon", action="store_true", help="write reconstructions as PNG under recon/")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.add_argument("--data-dir", default=None, help="dataset cache (default: $DIFFEIC_DATA or "
                                                    "~/.cache/diffeic/data)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's); 1 is "
                                                             "often faster on a busy machine")
    p.add_argument("--no-download", action="store_true", help="never download datasets")
    p.add_argument("--no-fid", action="store_true", help="skip FID/KID (saves the Inception passes)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", default=None, help="output folder (default: eval_out/<dataset>_<model>)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from .runner import EvalConfig, run_evaluation   # heavy imports only after --help

    if args.threads:
        import torch

        torch.set_num_threads(max(1, args.threads))

    cfg = EvalConfig(dataset=args.dataset, models=[m for m in args.model.split(",") if m.strip()], out=args.out,
                     data_dir=args.data_dir, steps=args.steps, sampler=args.sampler, seed=args.seed,
                     baselines=[b for b in args.baselines.split(",") if b.strip()], rate_factors=args.rate_factors,
                     anchor=args.anchor, limit=args.limit, save_recon=args.save_recon, device=args.device,
                     fid=not args.no_fid, download=not args.no_download, progress=not args.no_progress)
    try:
        run_evaluation(cfg)
    except DatasetUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0

"""Command line of ``eval.py`` / ``diffeic eval`` / ``python -m diffeic.evaluation.cli``.

Argument parsing and error reporting only; the work is in :mod:`.runner`.  Exit codes as the
``diffeic`` command: 0 success · 1 a problem with data, model or files (one line ``eval.py: error: ...``,
``--debug`` for the traceback) · 2 bad usage, including unknown dataset/model/baseline names (the
message lists the valid ones) · 130 interrupted.  A run that fails leaves no empty output folder.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import List, Optional

from ..bitstream import MAX_STEPS, SAMPLER_IDS
from ..codecs.registry import DEMO_MODEL, model_kind, pretrained_models
from ..samples import HELDOUT_PHOTOS as SAMPLE_PHOTOS
from .baselines import BASELINE_NAMES
from .datasets import SPECS, DatasetUnavailable

PROG = "eval.py"

#: The main job: the demo model shipped in the package (at each of its trained rate levels), or the untrained
#: preset while no trained demo model is installed (scripts/train_tiny.sh makes one), and the semantic family's
#: shipped decoder when it is installed.
SEMANTIC_DEMO = "semantic-tiny-trained"
DEFAULT_MODELS = ",".join([DEMO_MODEL if DEMO_MODEL in pretrained_models() else "tiny"]
                          + [SEMANTIC_DEMO] * (SEMANTIC_DEMO in pretrained_models()))

EPILOG = f"""\
examples:
  python eval.py                                   # {len(SAMPLE_PHOTOS)} held-out photos, the demo models (else tiny), offline
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

outputs (in --out, default eval_out/<dataset>_<model>-<model fingerprint>):
  results.csv           one row per image x codec x rate point: dataset,image,codec,point,setting,H,W,
                        bytes,bpp,bpp_padded,bpp_official,target_bpp,psnr,ms_ssim,lpips,dists,niqe,
                        enc_s,dec_s,seed,tiling (empty cell = metric skipped). A rerun skips rows already
                        there (resume) - only in a folder made by the same model and settings (run.json);
                        a folder made by another model is refused, never mixed.
  summary.json          means per codec/point (with the spread over decode seeds), FID/KID, BD-rates,
                        metrics skipped and why, model and fingerprint, untrained flag,
                        sampler/steps/seed/precision/tiling, versions, device, time per codec
  sheets/<image>.png    per photo (the first --sheets): original, ours at each rate point, and the
                        JPEG / WebP / AVIF file closest in bytes to our highest point, captioned with
                        bytes, bpp, PSNR, MS-SSIM (LPIPS when measured)
  compressai/<codec>.json  the same means in CompressAI's format (python -m compressai.utils.plot -f ...)
  bitstreams/           our .deic files (bpp = 8 * file size / original pixels; each stores the decode
                        seed of its first row, so `diffeic decompress` gives that row's picture) and
                        baseline files
  plots/rd_<metric>.png|.svg  bpp vs each metric: ours, baselines, published points
  recon/                reconstructions as PNG (with --save-recon)
  features/             cached Inception features of FID/256 patches (when the weights exist)

Learned metrics need pretrained backbones (AlexNet for LPIPS, VGG16 for DISTS, Inception for FID/KID)
in torch hub's cache (~/.cache/torch/hub/checkpoints); offline without them the column is skipped
with one line saying which file to put there. Set DIFFEIC_NO_DOWNLOAD=1 to never try the network.
"""


def _floats(text: str) -> List[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive factors, got {text!r}")
    return values


def _int_in(lo: int, hi: Optional[int] = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            allowed = f">= {lo}" if hi is None else f"between {lo} and {hi}"
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
        return value
    return parse


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Evaluate DiffEIC (and classical baselines) on an image set: real bitstreams, "
                    "bpp from file sizes, PSNR / MS-SSIM / LPIPS / DISTS / NIQE / FID / KID, RD plots, BD-rate.")
    p.add_argument("--dataset", default="samples", help="kodak | tecnick | clic2020 | samples | folder:PATH "
                                                        "(default: samples)")
    p.add_argument("--model", default=DEFAULT_MODELS,
                   help="a shipped model (demo-trained: see diffeic.pretrained_models()), a preset name (tiny, sd21: "
                        "random init = untrained) or a checkpoint folder; comma-separate several for several rate "
                        "points (default: %(default)s)")
    p.add_argument("--steps", type=_int_in(1, MAX_STEPS), default=None,
                   help="diffusion steps (default: the stream's/model's)")
    p.add_argument("--sampler", default=None, choices=list(SAMPLER_IDS), metavar="NAME",
                   help=f"{' | '.join(SAMPLER_IDS)} (default: the model's)")
    p.add_argument("--seed", type=_int_in(0, 2 ** 64 - 1), default=None,
                   help="decoding seed of the first image; image i uses seed + i, stored in its stream "
                        "(default: the model's)")
    p.add_argument("--seeds", type=_int_in(1), default=None,
                   help="decode seeds per image for codecs that sample (diffeic, refine): the k-th adds k x 1000000; "
                        "means over all, spread over seeds in summary.json and the table (default: 3 on samples, "
                        "1 on the paper's datasets)")
    p.add_argument("--baselines", default=",".join(BASELINE_NAMES),
                   help="comma list from jpeg, webp, avif, hevc, jxl, jpeg2000 (the last three: pip install -e "
                        "'.[baselines]'), bpg, vtm, compressai:<zoo model> ('' for none); unavailable ones are "
                        "skipped with a line (default: %(default)s)")
    p.add_argument("--rate-factors", type=_floats, default=[0.5, 1.0, 2.0],
                   help="baselines are quality-searched to factor x our bpp on each image, for each factor "
                        "(default: 0.5,1,2 - a short curve around each of our points)")
    p.add_argument("--rates", type=_floats, default=None,
                   help="variable-rate models: evaluate at each of these rate parameters q, e.g. 0,2,4 "
                        "(default: the model's trained levels, the q of its gain vectors: 0,1.5,3,4.5,6 for the shipped "
                        "demo-trained, 0,2,4,6,8 for tiny-trained, 0,1,2,3,4 for the tiny_vr / sd21_vr presets)")
    p.add_argument("--anchor", default=None, help="series the BD-rates are against: diffeic or a baseline name "
                                                  "(default: diffeic)")
    p.add_argument("--limit", type=_int_in(1), default=None, help="only the first N images")
    p.add_argument("--save-recon", action="store_true", help="write reconstructions as PNG under recon/")
    p.add_argument("--sheets", type=_int_in(0), default=24,
                   help="side-by-side sheets of the first N images under sheets/ (default: %(default)s; 0: none)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.add_argument("--data-dir", default=None, help="dataset cache (default: $DIFFEIC_DATA or "
                                                    "~/.cache/diffeic/data)")
    p.add_argument("--threads", type=_int_in(1), default=None, help="CPU threads for torch (default: torch's); 1 is "
                                                             "often faster on a busy machine")
    p.add_argument("--no-download", action="store_true", help="never download datasets")
    p.add_argument("--no-fid", action="store_true", help="skip FID/KID (saves the Inception passes)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (on a terminal) or progress lines "
                                                               "(otherwise)")
    p.add_argument("--out", default=None, help="output folder (default: eval_out/<dataset>_<model>-<fingerprint>)")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return p


def _check_names(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Unknown dataset, model or baseline names are usage errors that list the valid ones."""
    datasets = [*SPECS, "samples", "folder:PATH"]
    if args.dataset.startswith("folder:"):
        if not Path(os.path.expanduser(args.dataset[len("folder:"):])).is_dir():
            parser.error(f"--dataset {args.dataset}: no such folder")
    elif args.dataset not in (*SPECS, "samples"):
        parser.error(f"--dataset {args.dataset!r}: unknown; choose one of {', '.join(datasets)}")
    for model in _split(args.model):
        try:
            model_kind(model)
        except ValueError as err:
            parser.error(f"--model {err}")
    if not _split(args.model):
        parser.error("--model: no model given")
    baselines = [b.lower() for b in _split(args.baselines)]
    for name in baselines:
        if name not in BASELINE_NAMES and not (name.startswith("compressai:") and len(name) > len("compressai:")):
            parser.error(f"--baselines: unknown baseline {name!r}; choose from {', '.join(BASELINE_NAMES)} or "
                         f"compressai:<zoo model>")
    if args.anchor is not None and args.anchor.lower() not in ("diffeic", *baselines):
        parser.error(f"--anchor {args.anchor!r}: not one of the series of this run "
                     f"({', '.join(['diffeic', *baselines])})")


def _split(text: str) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _remove_if_empty(folder: Path) -> None:
    """Remove a folder this run created when the run failed before writing any file into it."""
    if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: Optional[List[str]] = None, prog: str = PROG) -> int:
    """Run an evaluation from command-line arguments; returns the exit status."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
        _check_names(args, parser)
    except SystemExit as exit_:                 # --help, usage errors
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
    from .runner import EvalConfig, run_evaluation   # heavy imports only after the arguments are checked

    if args.threads:
        import torch

        torch.set_num_threads(max(1, args.threads))

    cfg = EvalConfig(dataset=args.dataset, models=_split(args.model), out=args.out,
                     data_dir=args.data_dir, steps=args.steps, sampler=args.sampler, seed=args.seed,
                     baselines=_split(args.baselines), rate_factors=args.rate_factors,
                     anchor=args.anchor, limit=args.limit, save_recon=args.save_recon, device=args.device,
                     fid=not args.no_fid, download=not args.no_download, progress=not args.no_progress,
                     rates=args.rates, seeds=args.seeds, sheets=args.sheets)
    out = Path(cfg.out) if cfg.out else None      # the default folder is named once the model is loaded
    created = out is not None and not out.exists()
    try:
        run_evaluation(cfg)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if created:
            _remove_if_empty(out)
        if args.debug:
            raise
        known = isinstance(err, (DatasetUnavailable, ValueError, TypeError, OSError, RuntimeError))
        text = "; ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
        print(f"{prog}: error: {text if known else f'unexpected {type(err).__name__}: {text}'}"
              + ("" if known else " (rerun with --debug for the traceback)"), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

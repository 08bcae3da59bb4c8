"""One variable-rate model against separately trained fixed-λ models (issue 18), on the tiny preset.

Same data, same steps, same optimiser for every model: the bundled training photos
(``diffeic.samples.TRAIN_PHOTOS``; chelsea and coffee are held out for evaluation), 64×64 crops (cheap, as
``configs/tiny.yaml`` used before it moved to 256×256, whose z is 4×4).  The variable-rate model
(``tiny_vr``) draws q per batch; the fixed models are trained at λ = 16, 4, 1 (q = 0, 2, 4).

Reports, per model and rate: bpp of the real files, PSNR and MS-SSIM of the decoded images, and the
latent MSE between z_c and the VAE latent (the LFGCM's own distortion, which is informative even when
the frozen backbone is random); the BD-rate of variable vs fixed on each metric; extra parameters and
training time per step; and the target-size search (``compress(x, target_bytes=...)``) over
``--targets`` budgets spread between each image's lowest- and highest-rate sizes: achieved/target,
probes and time per search.

    nice -n 19 python benchmarks/compare_variable_rate.py --steps 150 [--init-from CKPT] [--record]
    python benchmarks/compare_variable_rate.py --from-runs runs [--record]

``--from-runs`` trains nothing: it evaluates the demo recipe's models (``scripts/train_tiny.sh`` and
``scripts/train_tiny.sh fixed``: the shipped variable-rate stage 2 and the three fixed-λ stage 2 runs, all
from the same stage 1 on the trained tiny prior, the fixed ones with a third of the variable one's steps
each), with their wall times from ``runs/train_tiny_times.tsv``.

``--init-from`` starts every model from a fixed-rate export (stage 2 from stage 1, e.g. a tiny
model trained on a trained tiny backbone); without it every model starts from the random tiny preset.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

try:
    from . import common
except ImportError:          # run as a script
    import common  # type: ignore[no-redef]

from diffeic import DiffEICCodec
from diffeic.config import get_config
from diffeic.evaluation.bdrate import bd_rate
from diffeic.evaluation.metrics import ms_ssim, psnr
from diffeic.samples import HELDOUT_PHOTOS, TRAIN_PHOTOS, load_photo

VR_RATES = (0.0, 1.0, 2.0, 3.0, 4.0)
FIXED = {16.0: 0.0, 4.0: 2.0, 1.0: 4.0}          # λ → the q that stands for it (q = log2(16/λ))
#: The demo recipe's fixed-λ stage-2 runs (``scripts/train_tiny.sh fixed``), against its variable-rate λ ∈ [1, 256].
RECIPE_FIXED = (1.0, 16.0, 256.0)
METRICS = ("psnr", "ms_ssim", "latent_psnr")


def _image(name: str) -> torch.Tensor:
    return torch.from_numpy(load_photo(name)).permute(2, 0, 1).float() / 255.0


def train(preset: str, lmbda: float, args: argparse.Namespace) -> Dict[str, object]:
    """Train one model with the project's trainer → ``{codec, wall_s, cpu_s, steps}``."""
    from lightning.pytorch import Trainer

    from diffeic.training import DiffEICDataModule, DiffEICModule

    module = DiffEICModule(preset, init_from=args.init_from, lmbda=lmbda, lr=args.lr, seed=0)
    data = DiffEICDataModule(root="samples", val_root=None, crop_size=64, short_side=(64, 80),
                             batch_size=2, num_workers=0, seed=0)
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=args.steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.fit(module, datamodule=data)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    codec = module.codec.eval()
    codec.lfgcm.update(force=True)
    return {"codec": codec, "wall_s": wall, "cpu_s": cpu, "steps": args.steps}


def from_runs(runs: Path) -> Dict[str, Dict[str, object]]:
    """The recipe's exports → the same records as :func:`train` (times: the recipe's wall clock)."""
    times = dict(line.split("\t") for line in (runs / "train_tiny_times.tsv").read_text().splitlines())
    jobs = {"vr": "tiny_trained_stage2_vr",
            **{f"fixed_l{l:g}": f"tiny_trained_stage2_lambda{l:g}" for l in RECIPE_FIXED}}
    out = {}
    for key, job in jobs.items():
        export = runs / job / "export"
        if not (export / "config.yaml").is_file():
            raise SystemExit(f"{export}: missing; run scripts/train_tiny.sh (and scripts/train_tiny.sh fixed) first")
        import yaml

        steps = int(yaml.safe_load((export / "config.yaml").read_text()).get("step", 0))
        wall = float(times.get(job, "nan"))
        out[key] = {"codec": DiffEICCodec.from_pretrained(export).eval(), "wall_s": wall, "cpu_s": float("nan"),
                    "steps": steps, "wall_s_per_step": wall / max(steps, 1)}
    return out


@torch.no_grad()
def evaluate(codec: DiffEICCodec, images: Dict[str, torch.Tensor], rate: Optional[float]) -> Dict[str, float]:
    """Mean bpp / PSNR / MS-SSIM / latent PSNR over the held-out images at one rate."""
    rows = []
    for x in images.values():
        bits = codec.compress(x, rate=rate)
        lat = codec.decompress_latents(bits)
        z_g = codec.backbone.encode(codec.pad(x[None]))
        x_hat = codec.decompress(bits)
        ref, rec = (np.asarray((t.clamp(0, 1) * 255).round().byte().permute(1, 2, 0)) for t in (x, x_hat))
        mse_lat = float(torch.mean((lat["z_c"] - z_g) ** 2))
        rows.append({"bpp": 8 * len(bits) / (x.shape[1] * x.shape[2]), "psnr": psnr(ref, rec),
                     "ms_ssim": ms_ssim(ref, rec), "latent_psnr": -10 * math.log10(mse_lat)})
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def target_search(codec: DiffEICCodec, images: Dict[str, torch.Tensor], n_targets: int) -> Dict[str, object]:
    """``n_targets`` budgets (split over the images), log-spaced inside each image's reachable range."""
    ratios, times, probes = [], [], []
    per_image = -(-n_targets // len(images))
    encode_latents = codec.lfgcm.encode_latents
    calls = [0]

    def counting(*a, **kw):                    # one call per probe of the search
        calls[0] += 1
        return encode_latents(*a, **kw)

    for x in images.values():
        lo = len(codec.compress(x, rate=codec.rate_range[0]))
        hi = len(codec.compress(x, rate=codec.rate_range[1]))
        for t in np.exp(np.linspace(math.log(lo * 1.05), math.log(hi * 0.95), per_image)):
            target, calls[0] = int(t), 0
            codec.lfgcm.encode_latents = counting
            try:
                start = time.process_time()
                bits = codec.compress(x, target_bytes=target)
                times.append(time.process_time() - start)
            finally:
                del codec.lfgcm.encode_latents
            ratios.append(len(bits) / target)
            probes.append(calls[0])
    ratios = ratios[:n_targets]
    return {"n": len(ratios), "ratio_min": min(ratios), "ratio_mean": float(np.mean(ratios)),
            "ratio_max": max(ratios), "over_target": sum(r > 1 for r in ratios),
            "within_5pct": sum(r >= 0.95 for r in ratios), "probes_mean": float(np.mean(probes)),
            "cpu_s_per_search": float(np.mean(times)), "ratios": [round(r, 4) for r in ratios]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=150, help="training steps of every model (default: %(default)s)")
    p.add_argument("--lr", type=float, default=5e-4, help="learning rate of every model (default: %(default)s)")
    p.add_argument("--init-from", default=None, help="fixed-rate export to start every model from (stage 2)")
    p.add_argument("--from-runs", type=Path, default=None,
                   help="evaluate the demo recipe's trained models in this runs/ folder instead of training")
    p.add_argument("--targets", type=int, default=20, help="target sizes for the search test")
    p.add_argument("--out", default="benchmarks/vr_out", help="folder for results.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    images = {name: _image(name) for name in HELDOUT_PHOTOS}
    cpu0 = time.process_time()

    if args.from_runs is not None:
        runs = from_runs(args.from_runs)
    else:
        runs = {"vr": train("tiny_vr", 1.0, args)}
        for lmbda in FIXED:
            runs[f"fixed_l{lmbda:g}"] = train("tiny", lmbda, args)

    points: List[Dict[str, object]] = []
    vr_rate = runs["vr"]["codec"].config.lfgcm.rate
    # From the recipe: every integer q, the trained levels and the interpolated rates between them.
    vr_rates = [float(q) for q in range(int(runs["vr"]["codec"].rate_range[1]) + 1)] if args.from_runs else VR_RATES
    fixed = ({lmbda: math.log2(vr_rate.lmbda_max / lmbda) for lmbda in RECIPE_FIXED} if args.from_runs else FIXED)
    for q in vr_rates:
        points.append({"model": "variable", "q": q, "lmbda": vr_rate.lmbda_max / 2 ** q,
                       **evaluate(runs["vr"]["codec"], images, q)})
    for lmbda, q in fixed.items():
        points.append({"model": "fixed", "q": q, "lmbda": lmbda,
                       **evaluate(runs[f"fixed_l{lmbda:g}"]["codec"], images, None)})

    var = [pt for pt in points if pt["model"] == "variable"]
    fix = [pt for pt in points if pt["model"] == "fixed"]
    bd = {}
    for m in METRICS:
        res = bd_rate([pt["bpp"] for pt in fix], [pt[m] for pt in fix], [pt["bpp"] for pt in var],
                      [pt[m] for pt in var], metric=m)
        bd[m] = {"bd_rate_pct": res.value, "reason": res.reason, "warning": res.warning}
    search = target_search(runs["vr"]["codec"], images, args.targets)
    vr_codec = runs["vr"]["codec"]
    extra = sum(p.numel() for p in vr_codec.lfgcm.rate_gains.parameters())
    sd21 = get_config("sd21_vr").lfgcm
    summary = {
        "backbone": ("the demo recipe's models in " + str(args.from_runs) if args.from_runs else
                     "from --init-from " + args.init_from if args.init_from else "random tiny preset (untrained)"),
        "steps": {k: v["steps"] for k, v in runs.items()}, "lr": None if args.from_runs else args.lr, "train_images": list(TRAIN_PHOTOS),
        "eval_images": list(HELDOUT_PHOTOS), "points": points, "bd_rate_variable_vs_fixed": bd,
        "extra_params": {"tiny": extra, "lfgcm_tiny": sum(p.numel() for p in vr_codec.lfgcm.parameters()),
                         "sd21": 2 * sd21.rate.levels * sd21.M},
        "training": {k: {"wall_s": v["wall_s"], "cpu_s": v["cpu_s"], "cpu_s_per_step": v["cpu_s"] / v["steps"],
                         "wall_s_per_step": v["wall_s"] / v["steps"]} for k, v in runs.items()},
        "target_search": search, "total_cpu_s": time.process_time() - cpu0,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2))

    device = torch.device("cpu")
    recipe = ("configs/tiny_trained_stage2_{vr,lambda*}.yaml, batch 4 of 256² crops" if args.from_runs else
              f"lr {args.lr}, batch 2 of 64² crops")
    notes = (f"{summary['backbone']}; steps {summary['steps']}, {recipe} from "
             f"{len(TRAIN_PHOTOS)} photos; eval on {', '.join(HELDOUT_PHOTOS)} (full size); "
             f"total CPU {summary['total_cpu_s']:.0f} s")
    common.report("variable-rate vs fixed-λ (tiny, cpu): RD points", points,
                  ["model", "q", "lmbda", "bpp", "psnr", "ms_ssim", "latent_psnr"], device, args.record, notes)
    bd_rows = [{"metric": m, **v} for m, v in bd.items()]
    common.report("variable-rate vs fixed-λ (tiny, cpu): BD-rate of variable, anchor fixed", bd_rows,
                  ["metric", "bd_rate_pct", "reason", "warning"], device, args.record, notes)
    train_rows = [{"model": k, **v} for k, v in summary["training"].items()]
    common.report("variable-rate vs fixed-λ (tiny, cpu): training cost", train_rows,
                  ["model", "cpu_s_per_step", "cpu_s", "wall_s_per_step", "wall_s"], device, args.record,
                  f"extra parameters: {extra} (tiny, LFGCM {summary['extra_params']['lfgcm_tiny']}), "
                  f"{summary['extra_params']['sd21']} (sd21); CPU time of this process (the machine is shared)")
    common.report("variable-rate (tiny, cpu): compress to a target size", [search],
                  ["n", "ratio_min", "ratio_mean", "ratio_max", "over_target", "within_5pct", "probes_mean",
                   "cpu_s_per_search"], device, args.record, "achieved bytes / target bytes; CPU time per search")


if __name__ == "__main__":
    main()

"""One-step decoding vs the 50-step ddpm sampler vs ``fewstep`` at 4 steps, on the same streams (issue #19).

    nice -n 19 python benchmarks/compare_onestep.py --model checkpoints/tiny --train-cpu-s 600 --out runs/onestep_cmp

1. Trains the one-step stage (:class:`diffeic.training.onestep.OneStepModule`) from ``--model`` for a CPU-time
   budget (``--train-cpu-s``, or ``--train-steps``) on paper crops of the bundled training photos;
   ``--model`` may also be a folder that already holds trained one-step weights (``--train-steps 0``).
2. Compresses the held-out photos (scikit-image ``chelsea`` and ``coffee``) once, and decodes every stream with
   each decoder in the same run: PSNR and MS-SSIM (8-bit RGB, :mod:`diffeic.evaluation.metrics`) and decode time
   (entropy decoding + network + VAE, median of ``--repeats``), with time ratios against the 50-step decode.

Prints a Markdown table; ``--out`` also writes ``results.json`` and the one-step checkpoint folder.  An untrained
model (``--model tiny``) measures only the plumbing, and the output says so.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from diffeic.samples import HELDOUT_PHOTOS as HELD_OUT, load_photo  # noqa: E402  (chelsea, coffee)

#: (label, sampler, steps) decoded for every stream.
DECODERS = (("ddpm-50", "ddpm", 50), ("fewstep-4", "fewstep", 4), ("onestep", "onestep", 1))


def held_out_photo(name: str) -> torch.Tensor:
    return torch.from_numpy(load_photo(name)).permute(2, 0, 1).float() / 255.0


def train_one_step(model: str, cpu_seconds: float, max_steps: int, crop: int, batch: int, lr: float,
                   perceptual: str, seed: int = 0, log=print):
    """Train the one-step stage on the bundled training photos (never :data:`HELD_OUT`).

    Returns ``(module, steps, cpu_seconds, losses)``.
    """
    from diffeic.training.data import SAMPLES, CropSpec, RandomCropDataset, find_images
    from diffeic.training.module import seeded
    from diffeic.training.onestep import OneStepModule

    module = OneStepModule(model, lr=lr, perceptual=perceptual, seed=seed, vae_checkpointing=False,
                           perceptual_weight=0.2)
    data = RandomCropDataset(find_images(SAMPLES),
                             CropSpec(crop, crop, crop + crop // 4), seed=seed)
    opt = module.configure_optimizers()
    module.train()
    start, step, losses = time.process_time(), 0, []
    while step < max_steps and time.process_time() - start < cpu_seconds:
        x = torch.stack([data[step * batch + i] for i in range(batch)])
        with seeded(seed * 1_000_003 + step):
            out = module.compute_losses(x)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        loss = out["loss"].detach()
        if torch.isfinite(loss):
            opt.step()
        losses.append(float(loss))
        step += 1
        if step % 10 == 0:
            log(f"  step {step}: loss {statistics.mean(losses[-10:]):.4f} "
                f"({time.process_time() - start:.0f} CPU s)")
    module.eval()
    return module, step, time.process_time() - start, losses


def measure(codec, streams: Dict[str, bytes], originals: Dict[str, torch.Tensor], repeats: int,
            seed: int = 0) -> List[Dict[str, object]]:
    """Decode every stream with every decoder of :data:`DECODERS` in this one run."""
    from diffeic.evaluation.metrics import ms_ssim, psnr

    def u8(x: torch.Tensor) -> np.ndarray:
        return (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()

    rows = []
    for label, sampler, steps in DECODERS:
        for name, bits in streams.items():
            times = []
            for _ in range(max(1, repeats)):
                t0 = time.perf_counter()
                x_hat = codec.decompress(bits, sampler=sampler, steps=steps, seed=seed)
                times.append(time.perf_counter() - t0)
            ref = u8(originals[name])
            rows.append({"decoder": label, "image": name, "bpp": 8 * len(bits) / (ref.shape[0] * ref.shape[1]),
                         "psnr": psnr(ref, u8(x_hat)), "ms_ssim": ms_ssim(ref, u8(x_hat)),
                         "decode_s": statistics.median(times)})
    return rows


def summarise(rows: List[Dict[str, object]]) -> List[Dict[str, object]]:
    """Per decoder: mean PSNR / MS-SSIM / decode time, and the time ratio against ``ddpm-50``."""
    out = []
    for label, _, _ in DECODERS:
        mine = [r for r in rows if r["decoder"] == label]
        out.append({"decoder": label, **{k: statistics.mean(float(r[k]) for r in mine)
                                         for k in ("bpp", "psnr", "ms_ssim", "decode_s")}})
    base = out[0]["decode_s"]
    for r in out:
        r["time_vs_ddpm50"] = r["decode_s"] / base
    return out


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny",
                   help="trained DiffEIC checkpoint folder or shipped name (e.g. tiny-trained); 'tiny': untrained")
    p.add_argument("--train-cpu-s", type=float, default=600.0, help="CPU-second budget of the one-step training")
    p.add_argument("--train-steps", type=int, default=10_000, help="at most this many steps (0: no training)")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--perceptual", default="auto")
    p.add_argument("--repeats", type=int, default=1, help="timed decodes per stream and decoder (median)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="folder for results.json and the one-step checkpoint")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)

    from diffeic.training.onestep import load_base

    base = load_base(args.model)
    trained_base = base.is_trained
    steps, cpu_s, losses = 0, 0.0, []
    if args.train_steps > 0:
        print(f"training the one-step stage from {args.model} "
              f"(≤ {args.train_cpu_s:.0f} CPU s, ≤ {args.train_steps} steps)")
        module, steps, cpu_s, losses = train_one_step(args.model, args.train_cpu_s, args.train_steps, args.crop,
                                                      args.batch, args.lr, args.perceptual)
        codec = module.codec            # is_trained is False while training: the one-step weights are in use
        perceptual = module.perceptual_name
        if args.out:
            module.export(Path(args.out) / "onestep_checkpoint")
    else:
        codec, perceptual = base, None
    codec.eval()
    originals = {n: held_out_photo(n) for n in HELD_OUT}
    streams = {n: codec.compress(x) for n, x in originals.items()}      # one stream per photo, decoded three ways
    rows = measure(codec, streams, originals, args.repeats)
    summary = summarise(rows)
    note = "" if trained_base else " — UNTRAINED base model: plumbing check only, the numbers say nothing about quality"
    print(f"\none-step vs multi-step on {', '.join(HELD_OUT)} (model {args.model}{note}); one-step trained "
          f"{steps} steps / {cpu_s:.0f} CPU s, perceptual loss {perceptual}")
    print("| decoder | bpp | PSNR dB | MS-SSIM | decode s | time vs ddpm-50 |")
    print("|---|---|---|---|---|---|")
    for r in summary:
        print(f"| {r['decoder']} | {r['bpp']:.4f} | {r['psnr']:.2f} | {r['ms_ssim']:.4f} | {r['decode_s']:.3f} | "
              f"{r['time_vs_ddpm50']:.3f} |")
    result = {"model": args.model, "trained_base": trained_base, "train_steps": steps, "train_cpu_s": cpu_s,
              "train_loss_first10": statistics.mean(losses[:10]) if losses else None,
              "train_loss_last10": statistics.mean(losses[-10:]) if losses else None, "perceptual": perceptual,
              "torch_threads": torch.get_num_threads(), "rows": rows, "summary": summary}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "results.json.tmp"
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(out / "results.json")
    return result


if __name__ == "__main__":
    main()

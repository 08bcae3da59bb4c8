"""Training-step benchmark (self-contained; independent of ``diffeic.training``).

    python benchmarks/bench_train.py --preset sd21 --device cuda --size 512x512 --batch 16 --repeats 10

One step = forward + backward + AdamW update of
``loss = MSE(eps_θ(z_t, t, c, z_c), ε) + λ·bpp + 2·MSE(z_c, z_0)`` (spec §7, stage 1 weights) through
``codec.lfgcm`` (trainable), ``codec.backbone`` (frozen; ``encode(sample=True)``) and
``codec.control`` (trainable).  The optimised path runs the control module + frozen UNet under
bf16 autocast with channels_last; the LFGCM (rate terms) stays float32.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

try:
    from . import common
except ImportError:                      # run as a script
    import common  # type: ignore[no-redef]

COLUMNS = ["preset", "device", "size", "batch", "path", "step_s", "img_per_s", "loss", "peak_mb", "ratio_vs_plain"]


def make_train_step(codec, batch: int, size, lam: float = 2.0, dtype: Optional[torch.dtype] = None,
                    seed: int = 0) -> Callable[[], float]:
    """A closure running one optimisation step on a fixed random batch; returns the loss value."""
    from diffeic.diffusion.fast import autocast
    from diffeic.diffusion.sampling import add_noise, sample_timesteps, training_scheduler

    dev = codec.device
    h, w = size
    gen = torch.Generator().manual_seed(seed)
    x = torch.stack([common.smooth_image(h, w, seed=seed + i) for i in range(batch)]).to(dev)
    params = [p for p in list(codec.lfgcm.parameters()) + list(codec.control.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6)
    scheduler = training_scheduler(codec.config.schedule)
    context = codec.backbone.text_embedding.to(dev).expand(batch, -1, -1)
    codec.lfgcm.train()
    codec.control.train()

    def step() -> float:
        z0 = codec.backbone.encode(x, sample=True, generator=gen)          # frozen, no grad
        out = codec.lfgcm(x, z0)
        z_c = out["z_c"]
        bpp = sum(-torch.log2(lik).sum() for lik in out["likelihoods"].values()) / (batch * h * w)
        t = sample_timesteps(batch, codec.config.schedule, gen, dev)
        noise = torch.randn(z0.shape, generator=gen).to(dev)
        z_t = add_noise(z0, noise, t, scheduler)
        with autocast(dev, dtype):                  # UNet + control only; rates stay float32
            eps = codec.control(codec.backbone.unet, z_t, t, context, z_c)
        loss = F.mse_loss(eps.float(), noise) + lam * bpp + 2 * F.mse_loss(z_c, z0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def run(preset: str = "tiny", device: str = "cpu", size=(512, 512), batch: int = 2, repeats: int = 3,
        fast: bool = True, dtype: Optional[str] = None, record: bool = False, codec=None) -> List[Dict[str, object]]:
    """Benchmark training steps; one row per path (plain, then optimised when ``fast``)."""
    from diffeic.diffusion.fast import FastDecoder, FastOptions

    dev = torch.device(device)
    codec = codec if codec is not None else common.build_codec(preset, dev)
    h, w = size
    base = {"preset": preset, "device": dev.type, "size": f"{w}x{h}", "batch": batch}
    paths = [("plain fp32", FastOptions())]
    if fast:
        opts = FastOptions(dtype=dtype or ("bf16" if dev.type == "cuda" else None), channels_last=dev.type == "cuda")
        paths.append((f"dtype={opts.dtype}, channels_last={opts.channels_last}", opts))
    rows = []
    try:
        for label, opts in paths:
            FastDecoder(codec.backbone, codec.control, opts).configure()
            step = make_train_step(codec, batch, size, dtype=opts.torch_dtype)
            t, loss = common.timed(step, dev, repeats)
            with common.peak_memory(dev) as mem:
                step()
            rows.append({**base, "path": label, "step_s": t, "img_per_s": batch / t, "loss": loss,
                         "peak_mb": mem["peak_mb"]})
    finally:
        FastDecoder(codec.backbone, codec.control).configure()
        codec.eval()
    for r in rows:
        r["ratio_vs_plain"] = r["step_s"] / rows[0]["step_s"]
    if record:
        common.report(f"train step ({preset}, {dev.type})", rows, COLUMNS, dev, record=True)
    return rows


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, object]]:
    p = common.base_parser(__doc__.splitlines()[0], steps=None)
    p.set_defaults(size=(512, 512))
    p.add_argument("--batch", type=int, default=2)
    args = p.parse_args(argv)
    dev = common.setup(args)
    rows = run(args.preset, dev.type, args.size, args.batch, args.repeats, args.fast, args.dtype)
    common.report(f"train step ({args.preset}, {dev.type})", rows, COLUMNS, dev, record=args.record,
                  notes="weights are random (from_config); the trainer in diffeic/training may differ in details")
    return rows


if __name__ == "__main__":
    main()

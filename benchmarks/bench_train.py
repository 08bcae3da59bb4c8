"""Training-step benchmark: the trainer's objective on random weights, plain vs optimised, in one run.

    python benchmarks/bench_train.py --preset sd21 --device cuda --size 512x512 --batch 16 --repeats 10

One step = forward + backward + AdamW update of the trainer's own loss,
:func:`diffeic.training.training_losses` (``MSE(eps_θ(z_t, t, c, z_c), ε) + λ·bpp + 2·MSE(z_c, z_0)``
plus the auxiliary loss; [Li2024] Eq. (13)) through ``codec.lfgcm`` and ``codec.control`` (trainable) and the frozen
``codec.backbone``.  The optimised path runs the whole loss under bf16 autocast, as ``train.py``'s
``bf16-mixed`` precision does, with channels_last.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

try:
    from . import common
except ImportError:                      # run as a script
    import common  # type: ignore[no-redef]

COLUMNS = ["preset", "device", "size", "batch", "path", "step_s", "img_per_s", "loss", "peak_mb", "ratio_vs_plain"]


def make_train_step(codec, batch: int, size, lam: float = 2.0, dtype: Optional[torch.dtype] = None,
                    seed: int = 0) -> Callable[[], float]:
    """A closure running one optimisation step on a fixed random batch; returns the loss value."""
    from diffeic.diffusion.fast import autocast
    from diffeic.diffusion.sampling import training_scheduler
    from diffeic.training import training_losses

    dev = codec.device
    h, w = size
    torch.manual_seed(seed)                         # the loss draws t, noise and the VAE sample globally
    x = torch.stack([common.smooth_image(h, w, seed=seed + i) for i in range(batch)]).to(dev)
    params = [p for p in list(codec.lfgcm.parameters()) + list(codec.control.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6)
    scheduler = training_scheduler(codec.config.schedule)
    codec.lfgcm.train()
    codec.control.train()

    def step() -> float:
        with autocast(dev, dtype):
            losses = training_losses(codec, scheduler, x, lam)
        opt.zero_grad(set_to_none=True)
        (losses["loss"] + losses["aux"]).backward()
        opt.step()
        return float(losses["loss"].detach())

    return step


def measure(codec, preset: str, label: str, options, size, batch: int, repeats: int,
            device: torch.device) -> Dict[str, object]:
    """Time one path (``options``: dtype and memory format) of the training step; the modules are left plain."""
    from diffeic import Decoder

    try:
        Decoder(codec.backbone, codec.control, options).configure()
        step = make_train_step(codec, batch, size, dtype=options.torch_dtype)
        t, loss = common.timed(step, device, repeats)
        with common.peak_memory(device) as mem:
            step()
    finally:
        Decoder(codec.backbone, codec.control).configure()
        codec.eval()
    h, w = size
    return {"preset": preset, "device": device.type, "size": f"{w}x{h}", "batch": batch, "path": label, "step_s": t,
            "img_per_s": batch / t, "loss": loss, "peak_mb": mem["peak_mb"],
            "peak_above_start_mb": mem["peak_above_start_mb"]}


def paths(device: torch.device, fast: bool = True, dtype: Optional[str] = None) -> List[Tuple[str, object]]:
    """The benchmarked paths: plain float32, then (``fast``) reduced precision + channels_last on CUDA."""
    from diffeic import DecodeOptions

    out: List[Tuple[str, object]] = [("plain fp32", DecodeOptions())]
    if fast:
        opts = DecodeOptions(dtype=dtype or ("bf16" if device.type == "cuda" else None),
                             channels_last=device.type == "cuda")
        out.append((f"dtype={opts.dtype}, channels_last={opts.channels_last}", opts))
    return out


def run(preset: str = "tiny", device: str = "cpu", size=(512, 512), batch: int = 2, repeats: int = 3,
        fast: bool = True, dtype: Optional[str] = None, codec=None) -> List[Dict[str, object]]:
    """Benchmark training steps; one row per path (plain, then optimised when ``fast``)."""
    dev = torch.device(device)
    codec = codec if codec is not None else common.build_codec(preset, dev)
    rows = [measure(codec, preset, label, opts, size, batch, repeats, dev) for label, opts in paths(dev, fast, dtype)]
    return common.add_ratios(rows, "step_s")


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, object]]:
    p = common.base_parser(__doc__.splitlines()[0], steps=None)
    p.set_defaults(size=(512, 512))
    p.add_argument("--batch", type=int, default=2)
    args = p.parse_args(argv)
    dev = common.setup(args)
    rows = run(args.preset, dev.type, args.size, args.batch, args.repeats, args.fast, args.dtype)
    common.report(f"train step ({args.preset}, {dev.type})", rows, COLUMNS, dev, record=args.record,
                  notes="weights are random (from_config); one AdamW group instead of the trainer's two")
    return rows


if __name__ == "__main__":
    main()

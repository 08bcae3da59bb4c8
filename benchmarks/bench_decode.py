"""Decode benchmark: stream → image, plain eager float32 vs the optimised path, in one run.

    python benchmarks/bench_decode.py --preset sd21 --device cuda --size 768x512 --steps 50 --repeats 10
    python benchmarks/bench_decode.py --preset sd21 --device cuda --sampler fewstep --steps 4
    python benchmarks/bench_decode.py --preset sd21 --device cuda --sampler onestep     # one UNet call (issue #19)

Reports per image: entropy decoding, denoising (and per step), VAE decoding, total; network
evaluations (fused control+UNet calls, counted); peak memory; and total-time ratio optimised/plain.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

try:
    from . import common
except ImportError:                      # run as a script
    import common  # type: ignore[no-redef]

COLUMNS = ["preset", "device", "size", "sampler", "steps", "batch", "path", "entropy_s", "denoise_s", "per_step_ms",
           "vae_s", "total_s", "unet_evals", "peak_mb", "ratio_vs_plain"]


def fast_options(device: torch.device, dtype: Optional[str] = None, **overrides):
    """The optimised settings benchmarked: :meth:`DecodeOptions.for_device`, with an optional dtype override."""
    from diffeic import DecodeOptions

    if dtype is not None:
        overrides["dtype"] = dtype
    return DecodeOptions.for_device(device, **overrides)


def measure(codec, bits: Sequence[bytes], options, sampler: str, steps: int, repeats: int,
            device: torch.device, label: str) -> Dict[str, object]:
    """Time the three decoding phases of a batch of streams under ``options`` (median of ``repeats``).

    ``options=None`` keeps the codec's current decoder (and what it has compiled or captured)."""
    if options is not None:
        codec.optimize(options)
    one_step = sampler == "onestep"
    decoder = codec.one_step_fast_decoder() if one_step else codec.fast_decoder()
    seeds = list(range(len(bits)))

    def entropy():
        return torch.cat([codec.decompress_latents(b)["z_c"] for b in bits])

    t_entropy, z_c = common.timed(entropy, device, repeats)
    tiles = decoder.tiles_for(z_c)

    def denoise():
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        if one_step:
            with torch.no_grad():
                return codec.one_step_decoder().predict(decoder.eps_fn(z_c, tiles), z_c, gens)
        return decoder.denoise(z_c, sampler, steps, gens,
                               codec.config.schedule, codec.config.sampler.fewstep_start)

    evals_before = decoder.evaluations
    t_denoise, z0 = common.timed(denoise, device, repeats)
    evals = (decoder.evaluations - evals_before) // (max(1, repeats) + 1)     # per decode (warm-up included)
    t_vae, _ = common.timed(lambda: decoder.vae_decode(z0, tiled=tiles is not None), device, repeats)

    with common.peak_memory(device) as mem:          # one full decode, for the memory peak
        codec.decompress_batch(list(bits), steps=steps, sampler=sampler) if len(bits) > 1 else \
            codec.decompress(bits[0], steps=steps, sampler=sampler)
    n = len(bits)
    return {"path": label, "entropy_s": t_entropy / n, "denoise_s": t_denoise / n,
            "per_step_ms": 1000 * t_denoise / steps, "vae_s": t_vae / n,
            "total_s": (t_entropy + t_denoise + t_vae) / n, "unet_evals": evals, "peak_mb": mem["peak_mb"],
            "peak_above_start_mb": mem["peak_above_start_mb"]}


def run(preset: str = "tiny", device: str = "cpu", size=(512, 768), steps: int = 50, repeats: int = 3,
        fast: bool = True, sampler: str = "ddpm", batch: int = 1, dtype: Optional[str] = None,
        codec=None) -> List[Dict[str, object]]:
    """Benchmark decoding; returns one row per path (plain, then optimised when ``fast``)."""
    dev = torch.device(device)
    codec = codec if codec is not None else common.build_codec(preset, dev)
    steps = 1 if sampler == "onestep" else steps     # one network evaluation by construction
    h, w = size
    bits = [codec.compress(common.smooth_image(h, w, seed=i).to(dev)) for i in range(batch)]
    base = {"preset": preset, "device": dev.type, "size": f"{w}x{h}", "sampler": sampler, "steps": steps,
            "batch": batch}
    from diffeic import DecodeOptions

    rows = [{**base, **measure(codec, bits, DecodeOptions(), sampler, steps, repeats, dev, "plain fp32")}]
    if fast:
        opts = fast_options(dev, dtype)
        label = ", ".join(f"{k}={v}" for k, v in opts.__dict__.items()
                          if k in ("dtype", "channels_last", "cuda_graphs", "compile") and v) or "fast (=plain on CPU)"
        rows.append({**base, **measure(codec, bits, opts, sampler, steps, repeats, dev, label)})
    codec.optimize()                                  # leave the codec on the plain path
    return common.add_ratios(rows, "total_s")


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, object]]:
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--sampler", default="ddpm", choices=["ddpm", "ddim", "dpmpp", "fewstep", "onestep"])
    p.add_argument("--batch", type=int, default=1, help="streams decoded together (same size, own seeds)")
    args = p.parse_args(argv)
    dev = common.setup(args)
    rows = run(args.preset, dev.type, args.size, args.steps, args.repeats, args.fast, args.sampler, args.batch,
               args.dtype)
    common.report(f"decode ({args.preset}, {dev.type})", rows, COLUMNS, dev, record=args.record)
    return rows


if __name__ == "__main__":
    main()

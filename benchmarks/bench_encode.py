"""Encode benchmark: image → stream (VAE encode + LFGCM analysis + exact entropy coding).

    python benchmarks/bench_encode.py --preset sd21 --device cuda --size 768x512 --repeats 10

The optimised path applies the module-level options (SDPA, channels_last) to the VAE encoder;
the LFGCM and its integer entropy path never run in reduced precision, so both paths must give
the same bytes — the benchmark checks it.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

try:
    from . import common
except ImportError:                      # run as a script
    import common  # type: ignore[no-redef]

COLUMNS = ["preset", "device", "size", "path", "vae_s", "total_s", "bytes", "same_bytes", "peak_mb",
           "ratio_vs_plain"]


def measure(codec, x: torch.Tensor, options, repeats: int, device: torch.device, label: str) -> Dict[str, object]:
    codec.optimize(options)
    t_total, bits = common.timed(lambda: codec.compress(x), device, repeats)
    t_vae, _ = common.timed(lambda: codec.backbone.encode(x[None]), device, repeats)
    with common.peak_memory(device) as mem:
        codec.compress(x)
    return {"path": label, "vae_s": t_vae, "total_s": t_total, "bytes": len(bits), "peak_mb": mem["peak_mb"],
            "peak_above_start_mb": mem["peak_above_start_mb"], "_bits": bits}


def run(preset: str = "tiny", device: str = "cpu", size=(512, 768), repeats: int = 3, fast: bool = True,
        codec=None) -> List[Dict[str, object]]:
    """Benchmark encoding; one row per path (plain, then optimised when ``fast``)."""
    from diffeic import DecodeOptions

    dev = torch.device(device)
    codec = codec if codec is not None else common.build_codec(preset, dev)
    h, w = size
    x = common.smooth_image(h, w).to(dev)
    base = {"preset": preset, "device": dev.type, "size": f"{w}x{h}"}
    rows = [{**base, **measure(codec, x, DecodeOptions(), repeats, dev, "plain fp32")}]
    if fast:
        opts = DecodeOptions(channels_last=dev.type == "cuda")
        rows.append({**base, **measure(codec, x, opts, repeats, dev, f"channels_last={opts.channels_last}")})
    codec.optimize()
    plain_bits = rows[0]["_bits"]
    for r in rows:
        r["same_bytes"] = r.pop("_bits") == plain_bits     # reported, not asserted: conv algorithms may differ
    return common.add_ratios(rows, "total_s")


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, object]]:
    p = common.base_parser(__doc__.splitlines()[0], steps=None)
    args = p.parse_args(argv)
    dev = common.setup(args)
    rows = run(args.preset, dev.type, args.size, args.repeats, args.fast)
    common.report(f"encode ({args.preset}, {dev.type})", rows, COLUMNS, dev, record=args.record)
    return rows


if __name__ == "__main__":
    main()

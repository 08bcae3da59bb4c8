"""Run every benchmark (encode, decode at --steps, few-step and one-step decode, training step) and append to RESULTS.md.

    python benchmarks/run_all.py --preset tiny --device cpu --size 256x256 --steps 4 --repeats 1
    python benchmarks/run_all.py --preset sd21 --device cuda --size 768x512 --steps 50 --repeats 10
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

try:
    from . import bench_decode, bench_encode, bench_train, common
except ImportError:                      # run as a script
    import bench_decode  # type: ignore[no-redef]
    import bench_encode  # type: ignore[no-redef]
    import bench_train  # type: ignore[no-redef]
    import common  # type: ignore[no-redef]


def run(preset: str = "tiny", device: str = "cpu", size=(512, 768), steps: int = 50, fewsteps: int = 4,
        repeats: int = 3, fast: bool = True, train_size=(512, 512), train_batch: int = 2,
        dtype: Optional[str] = None, record: bool = False, quiet: bool = False,
        codec=None) -> Dict[str, List[Dict[str, object]]]:
    """All benchmarks on one codec (training runs last: it updates the weights)."""
    import torch

    dev = torch.device(device)
    codec = codec if codec is not None else common.build_codec(preset, dev)
    results = {
        "encode": bench_encode.run(preset, device, size, repeats, fast, codec=codec),
        "decode": bench_decode.run(preset, device, size, steps, repeats, fast, "ddpm", dtype=dtype, codec=codec),
        "decode_fewstep": bench_decode.run(preset, device, size, fewsteps, repeats, fast, "fewstep", dtype=dtype,
                                           codec=codec),
        "decode_onestep": bench_decode.run(preset, device, size, 1, repeats, fast, "onestep", dtype=dtype,
                                           codec=codec),
        "train": bench_train.run(preset, device, train_size, train_batch, repeats, fast, dtype, codec=codec),
    }
    columns = {"encode": bench_encode.COLUMNS, "decode": bench_decode.COLUMNS,
               "decode_fewstep": bench_decode.COLUMNS, "decode_onestep": bench_decode.COLUMNS, "train": bench_train.COLUMNS}
    for name, rows in results.items():
        common.report(f"{name} ({preset}, {dev.type})", rows, columns[name], dev, record=record, quiet=quiet)
    return results


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, List[Dict[str, object]]]:
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--fewsteps", type=int, default=4, help="steps of the few-step (fewstep sampler) decode")
    p.add_argument("--train-size", type=common.parse_size, default=(512, 512))
    p.add_argument("--train-batch", type=int, default=2)
    args = p.parse_args(argv)
    dev = common.setup(args)
    return run(args.preset, dev.type, args.size, args.steps, args.fewsteps, args.repeats, args.fast,
               args.train_size, args.train_batch, args.dtype, record=args.record)


if __name__ == "__main__":
    main()

"""CPU seconds a new user pays: import, model load, one compress and one decompress (README "Presets").

    python benchmarks/roundtrip_cpu.py                       # the shipped tiny-trained model, 256x256 (W x H)
    python benchmarks/roundtrip_cpu.py --model tiny --size 768x512

Reports this process's CPU time (``time.process_time``, all threads) beside wall time: on a shared machine
the CPU time is the figure that carries over.  Run it in a fresh process: the import is part of what it times.
The image is an exact crop of scikit-image's ``chelsea``; decompress uses the model's default sampler and steps.
"""
import time

_CPU0, _WALL0 = time.process_time(), time.perf_counter()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))    # this checkout's diffeic, not an installed one
import diffeic  # noqa: E402

diffeic.DiffEICCodec, diffeic.load_codec      # the lazy imports: torch, diffusers, compressai, the codec
_IMPORT = (time.process_time() - _CPU0, time.perf_counter() - _WALL0)


def _timed(fn):
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-trained", help="preset, shipped name or checkpoint folder")
    p.add_argument("--size", default="256x256", help="W x H of the crop (at most 451x300: chelsea's size)")
    p.add_argument("--repeats", type=int, default=3, help="compress/decompress calls; the first and the least")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's); on a loaded machine 1 keeps idle-spinning threads "
                        "out of the CPU time")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    import skimage.data

    x = torch.from_numpy(np.ascontiguousarray(skimage.data.chelsea()[:h, :w])).permute(2, 0, 1).float() / 255
    codec, load_cpu, load_wall = _timed(lambda: diffeic.load_codec(args.model))
    rows = [("import diffeic + its codecs", *_IMPORT), (f"load {args.model}", load_cpu, load_wall)]
    streams = []
    for name, fn in (("compress", lambda: codec.compress(x)), ("decompress", lambda: codec.decompress(streams[0]))):
        timed = [_timed(fn) for _ in range(args.repeats)]
        streams = streams or [out for out, _, _ in timed]
        runs = [t[1:] for t in timed]
        rows.append((f"{name} (first call)", *runs[0]))
        if len(runs) > 1:
            rows.append((f"{name} (least of the next {len(runs) - 1})", min(r[0] for r in runs[1:]),
                         min(r[1] for r in runs[1:])))
    print(f"{args.model}, {w}x{h} (width x height), {len(streams[0])} bytes, torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'':<40} {'CPU s':>7} {'wall s':>7}")
    for label, cpu, wall in rows:
        print(f"{label:<40} {cpu:7.2f} {wall:7.2f}")


if __name__ == "__main__":
    main()

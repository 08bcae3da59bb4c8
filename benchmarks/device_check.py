"""The stages of the one-command GPU check (``benchmarks/device_check.sh``), and the merge of their results.

    python benchmarks/device_check.py STAGE --parts DIR [--dry-run]
    python benchmarks/device_check.py collect --parts DIR --out DIR [--results benchmarks/RESULTS.md] [--dry-run]

Each benchmark stage runs in its own process under its own time limit (the shell script's ``timeout``) and
writes its rows to ``DIR/STAGE.json`` after every row, so a stage stopped at its limit keeps what it measured;
a row that fails (out of memory, say) is recorded with its error and the stage goes on.  ``collect`` merges
the parts into ``device_check.json`` and ``device_check_results.md`` under ``--out``, compares them with the
design targets (H100, 768×512, batch 1), and appends the Markdown to ``--results`` when given.

The GPU settings use the ``sd21`` preset with random weights (``from_config``: SD2.1's weights are not on the
machine; sizes, not values, decide time and memory).  ``--dry-run`` runs every stage's code on the CPU at the
``tiny`` preset, toy sizes, one step, one repeat and the decode paths that switch each lever on once; there
``torch.compile`` is replaced by the identity (the plumbing is checked, not torch's compiler, which takes minutes
on a CPU) and CUDA graphs fall back to eager.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

try:
    from . import bench_decode, bench_encode, bench_train, common
except ImportError:                      # run as a script
    import bench_decode  # type: ignore[no-redef]
    import bench_encode  # type: ignore[no-redef]
    import bench_train  # type: ignore[no-redef]
    import common  # type: ignore[no-redef]

Row = Dict[str, Any]


@dataclass(frozen=True)
class Settings:
    """Sizes are (height, width)."""

    preset: str
    device: str
    size: Tuple[int, int]
    steps: int                      # the full DDPM decode
    fewsteps: int                   # the ``fewstep`` sampler
    repeats: int
    tiled_size: Tuple[int, int]     # the "4K" decode
    tile: Optional[int]             # forced latent tile side (None: automatic above DecodeOptions.auto_tile_pixels)
    train_size: Tuple[int, int]
    train_batch: int                # the paper's batch per GPU (configs/sd21_stage1.yaml)
    families: Tuple[str, ...] = ("hific_tiny", "refine_tiny")     # the only HiFiC / refine presets there are
    every_decode_path: bool = True  # False: the paths that together switch on every lever once (dry run)


GPU = Settings("sd21", "cuda", (512, 768), 50, 4, 3, (2160, 3840), None, (512, 512), 4)
DRY = Settings("tiny", "cpu", (64, 64), 1, 1, 1, (192, 320), 16, (64, 64), 2, every_decode_path=False)

STAGES = ("env", "encode", "decode", "fewstep", "tiled", "train", "families", "compile")

# (name, stage filter, value key, best-of, comparison, target, unit scale, unit) — design.md's targets.
TARGETS: Sequence[Tuple[str, Callable[[Row], bool], str, Callable, str, float, float, str]] = (
    ("decode, 50 DDPM steps", lambda r: r["stage"] in ("decode", "compile") and r.get("sampler") == "ddpm",
     "total_s", min, "<=", 0.30, 1.0, "s"),
    ("decode, few-step / one-step", lambda r: r["stage"] in ("fewstep", "compile")
     and r.get("sampler") in ("fewstep", "onestep"), "total_s", min, "<=", 0.05, 1.0, "s"),
    ("encode", lambda r: r["stage"] == "encode", "total_s", min, "<=", 0.04, 1.0, "s"),
    ("peak decode memory (50 steps)", lambda r: r["stage"] == "decode", "peak_mb", min, "<=", 4.0, 1 / 1024, "GiB"),
    ("4K decode by tiling, peak memory", lambda r: r["stage"] == "tiled" and r.get("sampler") is not None,
     "peak_mb", min, "<=", 12.0, 1 / 1024, "GiB"),
    ("training at 512², the paper's batch", lambda r: r["stage"] == "train", "img_per_s", max, ">=", 80.0, 1.0,
     "img/s"),
)


# --------------------------------------------------------------------------- plumbing

def _write_json(path: Path, data: Any) -> None:
    """Atomic write (a stage killed at its time limit never leaves half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


class Stage:
    """Collects a stage's rows; each row is measured under :meth:`row`, which records an error instead of
    raising, and the part file is rewritten after every row."""

    def __init__(self, name: str, parts: Path) -> None:
        self.name, self.path, self.rows, self.failed = name, parts / f"{name}.json", [], 0

    def row(self, label: str, fn: Callable[[], Row], **context: Any) -> Optional[Row]:
        print(f"[{self.name}] {label} ...", flush=True)
        try:
            row = {"stage": self.name, **context, **fn(), "path": label}
        except Exception as err:                            # recorded, reported, and the stage goes on
            traceback.print_exc()
            self.failed += 1
            row = {"stage": self.name, **context, "path": label, "error": f"{type(err).__name__}: {err}"[:400]}
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self.rows.append(row)
        _write_json(self.path, self.rows)
        print(f"[{self.name}] {label}: " + ", ".join(f"{k}={_cell(v)}" for k, v in row.items()
                                                     if k not in ("stage", "path")), flush=True)
        return row if "error" not in row else None


def _cell(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _device(s: Settings) -> torch.device:
    dev = torch.device(s.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run on a machine without one")
    return dev


def _codec(s: Settings, dev: torch.device):
    """The preset with random weights on ``dev``; on a GPU initialised there (sd21: ~1 G parameters, about 15 s
    of one CPU core each stage otherwise), falling back to the CPU build if that fails."""
    if dev.type == "cuda":
        from diffeic import DiffEICCodec

        try:
            with torch.device(dev):
                return DiffEICCodec.from_config(s.preset).to(dev).eval()
        except Exception as err:                            # e.g. a CPU generator drawing on the GPU
            print(f"building on the GPU failed ({type(err).__name__}: {err}); building on the CPU", flush=True)
    return common.build_codec(s.preset, dev).eval()


def _wh(size: Tuple[int, int]) -> str:
    return f"{size[1]}x{size[0]}"


def decode_paths(every: bool = True) -> List[Tuple[str, Any]]:
    """Eager float32, then each lever alone and together (compile has its own stage: it is slow to build);
    ``every=False`` keeps eager, sdpa=False and bf16 + channels_last + CUDA graphs (each lever once)."""
    from diffeic import DecodeOptions as D

    paths = [("fp32 eager (SDPA)", D()), ("fp32 sdpa=False", D(sdpa=False)),
             ("fp32 channels_last", D(channels_last=True)), ("bf16", D(dtype="bf16")),
             ("bf16 channels_last", D(dtype="bf16", channels_last=True)),
             ("bf16 channels_last cuda_graphs", D(dtype="bf16", channels_last=True, cuda_graphs=True))]
    return paths if every else [paths[0], paths[1], paths[-1]]


def _decode_rows(stage: Stage, codec, s: Settings, dev: torch.device, sampler: str, steps: int,
                 size: Tuple[int, int], paths: Sequence[Tuple[str, Any]]) -> None:
    x = common.smooth_image(*size).to(dev)
    bits = [codec.compress(x)]
    context = {"preset": s.preset, "size": _wh(size), "sampler": sampler, "steps": steps, "batch": 1}
    for label, opts in paths:
        stage.row(label, lambda: bench_decode.measure(codec, bits, opts, sampler, steps, s.repeats, dev, label),
                  **context)
    codec.optimize()


# --------------------------------------------------------------------------- stages

def stage_env(stage: Stage, s: Settings) -> None:
    def info() -> Row:
        import compressai
        import diffusers
        import numpy

        out: Row = {"python": platform.python_version(), "torch": torch.__version__,
                    "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                    "numpy": numpy.__version__, "diffusers": diffusers.__version__,
                    "compressai": compressai.__version__, "cpu_count": os.cpu_count(),
                    "cuda_available": torch.cuda.is_available()}
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            out.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gib=p.total_memory / 2 ** 30,
                       multiprocessors=p.multi_processor_count)
            try:
                out["driver"] = subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True, text=True, timeout=30).stdout.strip()
            except (OSError, subprocess.SubprocessError) as err:
                out["driver"] = f"nvidia-smi failed: {err}"
        else:
            out["gpu"] = "none (dry run on CPU)" if s.device == "cpu" else "none"
        return out

    stage.row("environment", info)


def stage_encode(stage: Stage, s: Settings) -> None:
    from diffeic import DecodeOptions as D

    dev = _device(s)
    codec = _codec(s, dev)
    x = common.smooth_image(*s.size).to(dev)
    context = {"preset": s.preset, "size": _wh(s.size)}
    plain: List[bytes] = []
    # The LFGCM and its entropy coder never run in reduced precision (exact integer path): no bf16 row.
    for label, opts in [("fp32 eager (SDPA)", D()), ("fp32 sdpa=False", D(sdpa=False)),
                        ("fp32 channels_last", D(channels_last=True))]:
        def one() -> Row:
            r = bench_encode.measure(codec, x, opts, s.repeats, dev, label)
            bits = r.pop("_bits")
            if not plain:
                plain.append(bits)
            return {**r, "same_bytes": bits == plain[0]}

        stage.row(label, one, **context)
    codec.optimize()


def stage_decode(stage: Stage, s: Settings) -> None:
    dev = _device(s)
    _decode_rows(stage, _codec(s, dev), s, dev, "ddpm", s.steps, s.size, decode_paths(s.every_decode_path))


def stage_fewstep(stage: Stage, s: Settings) -> None:
    dev = _device(s)
    codec = _codec(s, dev)
    _decode_rows(stage, codec, s, dev, "fewstep", s.fewsteps, s.size, decode_paths(s.every_decode_path))
    _decode_rows(stage, codec, s, dev, "onestep", 1, s.size, decode_paths(s.every_decode_path))


def stage_tiled(stage: Stage, s: Settings) -> None:
    """A 3840×2160 stream decoded in latent tiles (automatic above the threshold) with the few-step sampler:
    the peak does not depend on the number of steps, which run one after another."""
    from diffeic import DecodeOptions as D
    from diffeic.diffusion.tiling import TileOptions

    dev = _device(s)
    codec = _codec(s, dev)
    x = common.smooth_image(*s.tiled_size).to(dev)
    context = {"preset": s.preset, "size": _wh(s.tiled_size)}
    bits: List[bytes] = []

    def encode() -> Row:
        with common.peak_memory(dev) as mem:
            bits.append(codec.compress(x))
        return {"bytes": len(bits[0]), "peak_mb": mem["peak_mb"], "peak_above_start_mb": mem["peak_above_start_mb"]}

    stage.row("encode (the stream of the tiled decodes)", encode, **context)
    if not bits:
        return
    extra: Dict[str, Any] = {}
    if s.tile is not None:           # toy sizes are below the automatic threshold: force the same code path
        extra = {"tiles": TileOptions(size=s.tile, overlap=s.tile // 2), "vae_tile_pixels": 64}
    paths = [("bf16 channels_last cuda_graphs tiled", D(dtype="bf16", channels_last=True, cuda_graphs=True, **extra)),
             ("fp32 eager tiled", D(**extra))]
    context.update(sampler="fewstep", steps=s.fewsteps, batch=1)
    for label, opts in paths:
        def one() -> Row:
            r = bench_decode.measure(codec, bits, opts, "fewstep", s.fewsteps, 1, dev, label)
            tiles = codec.fast_decoder().tiles_for(codec.decompress_latents(bits[0])["z_c"])
            if tiles is None:
                raise RuntimeError("the decode was not tiled")
            return {**r, "tile": f"{tiles.size}/{tiles.overlap}"}

        stage.row(label, one, **context)
    codec.optimize()


def stage_train(stage: Stage, s: Settings) -> None:
    dev = _device(s)
    codec = _codec(s, dev)
    for label, opts in bench_train.paths(dev, fast=True, dtype="bf16"):
        stage.row(label, lambda: bench_train.measure(codec, s.preset, label, opts, s.train_size, s.train_batch,
                                                     s.repeats, dev))


def stage_families(stage: Stage, s: Settings) -> None:
    from diffeic import load_codec

    dev = _device(s)
    x = common.smooth_image(*s.size).to(dev)
    for name in s.families:
        def one() -> Row:
            codec = load_codec(name, device=dev)
            t_enc, bits = common.timed(lambda: codec.compress(x), dev, s.repeats)
            t_dec, y = common.timed(lambda: codec.decompress(bits), dev, s.repeats)
            with common.peak_memory(dev) as mem:
                codec.decompress(bits)
            if tuple(y.shape) != (3, *s.size):
                raise RuntimeError(f"decoded shape {tuple(y.shape)} != {(3, *s.size)}")
            return {"encode_s": t_enc, "total_s": t_dec, "bytes": len(bits), "peak_mb": mem["peak_mb"]}

        stage.row(f"{name} fp32", one, preset=name, size=_wh(s.size))


def stage_compile(stage: Stage, s: Settings) -> None:
    """``torch.compile`` of the fused control+UNet step (bf16, channels_last): compiled once in the first
    (warm-up) decode, then the 50-step and few-step decodes reuse it (same shapes)."""
    from diffeic import DecodeOptions as D

    dev = _device(s)
    codec = _codec(s, dev)
    compiled: List[Any] = []
    if dev.type == "cpu":            # dry run: the plumbing is checked, not torch's compiler (minutes on a CPU)
        def compile_stub(fn: Callable, **kwargs: Any) -> Callable:
            compiled.append(kwargs)
            return fn

        torch.compile = compile_stub
    codec.optimize(D(dtype="bf16", channels_last=True, compile=True))
    if dev.type == "cpu" and len(compiled) != 1:
        raise RuntimeError(f"the compile option built {len(compiled)} compiled steps, expected 1")
    x = common.smooth_image(*s.size).to(dev)
    bits = [codec.compress(x)]
    for sampler, steps in (("ddpm", s.steps), ("fewstep", s.fewsteps)):
        label = "bf16 channels_last compile"
        stage.row(label, lambda: bench_decode.measure(codec, bits, None, sampler, steps, s.repeats, dev, label),
                  preset=s.preset, size=_wh(s.size), sampler=sampler, steps=steps, batch=1)
    codec.optimize()


# --------------------------------------------------------------------------- collect

def _targets(rows: List[Row]) -> List[Row]:
    out = []
    for name, keep, key, best, cmp, target, scale, unit in TARGETS:
        found = [r for r in rows if keep(r) and "error" not in r and key in r]
        entry: Row = {"target": f"{name} {cmp} {target:g} {unit}", "measured": "not measured", "row": "", "met": ""}
        if found:
            r = best(found, key=lambda r: r[key])
            value = r[key] * scale
            entry.update(measured=f"{value:.4g} {unit}", value=value, met="yes" if (
                value <= target if cmp == "<=" else value >= target) else "no",
                row=f"{r['stage']}: {r.get('sampler', '')} {r['path']} ({r.get('size', '')})".replace("  ", " "))
        out.append(entry)
    return out


def _stage_log(parts: Path) -> List[Row]:
    f = parts / "stages.tsv"
    if not f.exists():
        return []
    out = []
    for line in f.read_text().splitlines():
        name, status, seconds, cpu = (line.split("\t") + ["", "", ""])[:4]
        out.append({"stage": name, "status": status, "seconds": seconds, "cpu_s": cpu})
    return out


def collect(parts: Path, out: Path, results: Optional[Path], dry: bool, settings: Settings) -> Dict[str, Any]:
    """Merge the stage parts; write JSON and Markdown under ``out``; append the Markdown to ``results``."""
    rows: List[Row] = []
    for name in STAGES:
        f = parts / f"{name}.json"
        if f.exists():
            rows += json.loads(f.read_text())
    env = next((r for r in rows if r["stage"] == "env"), {})
    bench = [r for r in rows if r["stage"] != "env"]
    targets = _targets(bench)
    stages = _stage_log(parts)
    date = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    device = env.get("gpu", "unknown") if not dry else f"CPU ({platform.processor() or 'x86-64'}), dry run"
    mode = ("dry run: tiny preset, toy sizes, one repeat, CPU — checks the code paths; NOT measurements of "
            "the targets") if dry else "sd21 preset, random weights"
    md = [f"### GPU check (benchmarks/device_check.sh{' --dry-run' if dry else ''})", "",
          f"- date: {date}", f"- device: {device}; driver {env.get('driver', 'n/a')}",
          f"- torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), numpy {env.get('numpy')}, "
          f"diffusers {env.get('diffusers')}, compressai {env.get('compressai')}, python {env.get('python')}",
          f"- settings: {mode}; {_wh(settings.size)} batch 1, {settings.steps} DDPM / {settings.fewsteps} few-step "
          f"steps, {settings.repeats} timed repeats (median) after one warm-up; peak_mb = "
          f"{'torch.cuda.max_memory_allocated (weights included)' if not dry else 'process RSS'}", ""]
    if stages:
        md += [common.format_table(stages, ["stage", "status", "seconds", "cpu_s"]), ""]
    for name in STAGES[1:]:
        group = [r for r in bench if r["stage"] == name]
        if not group:
            continue
        keys = [k for k in ("preset", "size", "sampler", "steps", "batch", "path", "entropy_s", "denoise_s",
                            "per_step_ms", "vae_s", "encode_s", "total_s", "bytes", "same_bytes", "tile",
                            "step_s", "img_per_s", "peak_mb", "peak_above_start_mb", "error")
                if any(k in r for r in group)]
        md += [f"{name}:", "", common.format_table(group, keys), ""]
    if dry:                          # a toy CPU figure is no measurement of an H100 target
        targets = [{**t, "dry_run_value": t.pop("measured"), "met": "n/a (dry run)" if t["met"] else ""}
                   for t in targets]
    md += [f"Targets (H100, 768x512, batch 1){': dry run, figures NOT comparable' if dry else ''}:", "",
           common.format_table(targets, ["target", "dry_run_value" if dry else "measured", "met", "row"]), ""]
    text = "\n".join(md) + "\n"
    summary = {"date": date, "dry_run": dry, "settings": settings.__dict__, "env": env, "stages": stages,
               "rows": bench, "targets": targets}
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "device_check.json", summary)
    tmp = out / "device_check_results.md.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / "device_check_results.md")
    if results is not None:
        with results.open("a") as f:
            f.write("\n" + text)
    print(text)
    return summary


# --------------------------------------------------------------------------- CLI

def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=STAGES + ("collect",))
    p.add_argument("--parts", type=Path, required=True, help="folder of the stages' JSON parts")
    p.add_argument("--out", type=Path, help="collect: where device_check.json / device_check_results.md go")
    p.add_argument("--results", type=Path, help="collect: append the Markdown to this file (RESULTS.md)")
    p.add_argument("--dry-run", action="store_true", help="tiny preset, toy sizes, one repeat, on the CPU")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = DRY if args.dry_run else GPU
    args.parts.mkdir(parents=True, exist_ok=True)
    if args.stage == "collect":
        if args.out is None:
            p.error("collect needs --out")
        if args.dry_run and args.results is not None:
            p.error("a dry run never appends to a results file")
        collect(args.parts, args.out, args.results, args.dry_run, settings)
        return 0
    stage = Stage(args.stage, args.parts)
    globals()[f"stage_{args.stage}"](stage, settings)
    if stage.failed:
        print(f"[{args.stage}] {stage.failed} of {len(stage.rows)} rows failed", flush=True)
    return 1 if stage.failed else 0


if __name__ == "__main__":
    sys.exit(main())

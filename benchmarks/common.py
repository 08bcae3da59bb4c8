"""Shared helpers of the benchmarks: CLI flags, codec construction, timing, peak memory, RESULTS.md.

Memory is measured as
* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors only; the
  caching allocator's reserve and the CUDA context are not included);
* CPU: peak resident set size *above the RSS at the start of the measured call*, sampled every
  2 ms by a background thread (psutil; ``/proc/self/statm`` without it).  ``tracemalloc`` cannot see
  torch's allocations, and ``ru_maxrss`` is a process-lifetime peak that a second measurement in
  the same process could not see.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:          # run as `python benchmarks/bench_x.py` from a checkout
    sys.path.insert(0, str(ROOT))

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


# --------------------------------------------------------------------------- CLI

def parse_size(text: str) -> Tuple[int, int]:
    """``"768x512"`` → ``(height=512, width=768)`` (W×H, as image sizes are usually written)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 768x512 (WxH), got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def base_parser(description: str, steps: Optional[int] = 50) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--preset", default="tiny", choices=["tiny", "sd21"],
                   help="architecture (random weights, built offline; speed does not depend on the values)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--size", type=parse_size, default=(512, 768), help="image WxH (default 768x512)")
    if steps is not None:
        p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up (median reported)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--fast", dest="fast", action="store_true", default=True,
                      help="time the optimised path and the plain float32 path in the same run (default)")
    mode.add_argument("--plain", dest="fast", action="store_false", help="time the plain path only")
    p.add_argument("--dtype", default=None, choices=["bf16", "fp16"],
                   help="half precision of the optimised path (default: bf16 on CUDA, float32 on CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-record", dest="record", action="store_false", help="do not append to RESULTS.md")
    return p


def setup(args: argparse.Namespace) -> torch.device:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    return device


def build_codec(preset: str, device: torch.device):
    """A codec of the preset's architecture with random weights (``from_config``: no download)."""
    from diffeic import DiffEICCodec

    return DiffEICCodec.from_config(preset).to(device)


def smooth_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A deterministic smooth test image (3,H,W) in [0,1] (cheap to entropy-code, like a photo)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(1, h // 32), max(1, w // 32), generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (x + 0.02 * torch.rand(1, 3, h, w, generator=g)).clamp(0, 1)[0]


# --------------------------------------------------------------------------- measurement

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:                                  # Linux fallback
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(device: torch.device) -> Iterator[Dict[str, float]]:
    """Yields a dict whose ``"peak_mb"`` is filled on exit (see the module docstring for the method)."""
    out: Dict[str, float] = {}
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield out
        sync(device)
        out["peak_mb"] = (torch.cuda.max_memory_allocated(device)) / 2 ** 20
        out["peak_above_start_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
        out["method"] = "cuda.max_memory_allocated"
        return
    base = _rss()
    peak = [base]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            done.wait(0.002)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        done.set()
        thread.join()
        peak[0] = max(peak[0], _rss())
        out["peak_mb"] = peak[0] / 2 ** 20
        out["peak_above_start_mb"] = (peak[0] - base) / 2 ** 20
        out["method"] = "RSS peak above start (2 ms polling)"


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> Tuple[float, object]:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs; returns (seconds, last result)."""
    result = None
    for _ in range(warmup):
        result = fn()
    sync(device)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def timed_cpu(fn: Callable[[], object], repeats: int) -> Tuple[object, float, float]:
    """``(last result, median wall ms, median CPU ms)`` of ``fn`` over ``repeats`` runs: on a shared machine the CPU
    time (``time.process_time``) is the figure to read."""
    wall, cpu = [], []
    out = None
    for _ in range(max(1, repeats)):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return out, 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


# --------------------------------------------------------------------------- reporting

def add_ratios(rows: List[Dict[str, object]], time_key: str) -> List[Dict[str, object]]:
    """``ratio_vs_plain`` of every row: its ``time_key`` over the first (plain) row's, measured in the same run."""
    for r in rows:
        r["ratio_vs_plain"] = r[time_key] / rows[0][time_key]
    return rows


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"CUDA {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f} at the end (shared machine: times are noisy)"
    return f"CPU {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads{load}"


def _cell(key: str, v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def format_table(rows: Sequence[Dict[str, object]], columns: Sequence[str],
                 cell: Callable[[str, object], str] = _cell) -> str:
    """A Markdown table of ``rows`` over ``columns``; ``cell(column, value)`` writes each value (floats: 4 digits)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def cpu_section(title: str, body: str, record: bool, load_start: Optional[float] = None,
                elapsed: Optional[float] = None) -> str:
    """Print a CPU-only benchmark's ``body`` under ``title`` with its context (date, wall time, load, versions,
    command), and append it to RESULTS.md when ``record``.  The load average is given at the start (when known) and
    at the end: this project's machines are shared, so the times are noisy."""
    import numpy as np

    date = _dt.datetime.now().isoformat(timespec="seconds") + ("" if elapsed is None else f"; {elapsed:.0f} s")
    load = ("" if load_start is None else f"{load_start:.1f} at the start, ") + f"{os.getloadavg()[0]:.1f} at the end"
    text = (f"### {title}\n\n- date: {date}\n"
            f"- device: CPU, {os.cpu_count()} cores, shared; load average {load} (times are noisy)\n"
            f"- python {platform.python_version()}, numpy {np.__version__}\n"
            f"- command: `{' '.join(['python'] + sys.argv)}`\n\n{body}\n")
    print(text)
    if record:
        with RESULTS.open("a") as f:
            f.write(text + "\n")
    return text


def report(title: str, rows: List[Dict[str, object]], columns: Sequence[str], device: torch.device,
           record: bool, notes: str = "", quiet: bool = False) -> str:
    """Print the table, and append it with its context (device, date, versions, command) to RESULTS.md."""
    import diffusers

    table = format_table(rows, columns)
    header = (f"### {title}\n\n- date: {_dt.datetime.now().isoformat(timespec='seconds')}\n"
              f"- device: {device_description(device)}\n"
              f"- torch {torch.__version__}, diffusers {diffusers.__version__}, python {platform.python_version()}\n"
              f"- command: `{' '.join(['python'] + sys.argv)}`\n")
    if notes:
        header += f"- notes: {notes}\n"
    text = f"{header}\n{table}\n"
    if not quiet:
        print(text)
    if record:
        if not RESULTS.exists():
            RESULTS.write_text("# Benchmark results\n\nAppended by `benchmarks/*.py` (see the Performance "
                               "section of the README). CPU rows use the tiny preset and say so; they are "
                               "smoke figures, not targets.\n\n")
        with RESULTS.open("a") as f:
            f.write(text + "\n")
    return text

"""Issue #7 item 5: a 4000×3000 image through the tiny preset stays within a memory budget.

Budget: peak resident memory of compress + decompress ≤ 6 GiB above the process's RSS before the
call (measured by polling RSS; see ``benchmarks/common.py``).  Decoding tiles automatically above
``DecodeOptions.auto_tile_pixels`` (1024×1024 padded pixels): 96×96-latent tiles with 16 latent pixels
of blended overlap, and diffusers' VAE tiling with 512-pixel tiles.
Measured on 2 CPU cores: peak 2.1 GB above start (3.25 GB whole process; the untiled VAE encoder at full
resolution dominates), 35 tile evaluations for one step, 99 s (up to 20 min on a loaded machine): marked slow.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import peak_memory, smooth_image  # noqa: E402
from diffeic import DiffEICCodec  # noqa: E402
from diffeic.diffusion.tiling import tile_layout  # noqa: E402

BUDGET_MB = 6 * 1024


@pytest.mark.slow
def test_4000x3000_roundtrip_within_memory_budget():
    codec = DiffEICCodec.from_config("tiny")
    x = smooth_image(3000, 4000)
    start = time.perf_counter()
    with peak_memory(torch.device("cpu")) as mem:
        bits = codec.compress(x)
        decoder = codec.fast_decoder()
        before = decoder.evaluations
        y = codec.decompress(bits, sampler="fewstep", steps=1)
    elapsed = time.perf_counter() - start
    print(f"4000x3000 tiny: {elapsed:.0f} s, peak {mem['peak_above_start_mb']:.0f} MB above start, "
          f"{len(bits)} bytes")
    assert y.shape == (3, 3000, 4000) and torch.isfinite(y).all()
    z_hw = (3008 // 8, 4032 // 8)
    assert decoder.tiles_for(torch.empty(1, 4, *z_hw)) is not None               # tiled automatically
    assert decoder.evaluations - before == len(tile_layout(*z_hw, decoder.tiles_for(torch.empty(1, 4, *z_hw))))
    assert mem["peak_above_start_mb"] <= BUDGET_MB

"""Smoke test: every benchmark function runs once on CPU with the tiny preset at toy sizes."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import common, run_all  # noqa: E402


@pytest.fixture(scope="module")
def codec():
    # Shared: the training benchmark updates its weights, which no later benchmark depends on.
    from diffeic import DiffEICCodec

    return DiffEICCodec.from_config("tiny")


def test_run_all_cli_and_results_file(tmp_path, monkeypatch, capsys, codec):
    """One run of every benchmark, each with its plain and its optimised path (one call instead of one per
    benchmark plus a plain run of them all: issue 32 item 8)."""
    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    monkeypatch.setattr(common, "build_codec", lambda preset, device: codec)
    out = run_all.main(["--preset", "tiny", "--device", "cpu", "--size", "64x64", "--steps", "1",
                        "--fewsteps", "2", "--repeats", "1", "--train-size", "64x64", "--train-batch", "1"])
    assert set(out) == {"encode", "decode", "decode_fewstep", "decode_onestep", "train"}
    # decode: both paths, the plain one first and the ratio's base; the network evaluations are counted.
    rows = out["decode_fewstep"]
    assert [r["path"] for r in rows][0] == "plain fp32" and len(rows) == 2
    assert rows[0]["ratio_vs_plain"] == 1.0 and rows[1]["ratio_vs_plain"] > 0
    assert all(r["unet_evals"] == 2 and r["peak_mb"] > 0 and r["total_s"] > 0 for r in rows)
    assert out["decode_onestep"][0]["unet_evals"] == 1 and out["decode_onestep"][0]["steps"] == 1
    # encode: both paths write bytes, and on CPU the "fast" encode is the plain one, byte for byte.
    assert len(out["encode"]) == 2 and all(r["bytes"] > 0 for r in out["encode"])
    assert out["encode"][1]["same_bytes"] is True
    # train: a positive speed and a finite loss on each path.
    assert out["train"] and all(r["img_per_s"] > 0 and math.isfinite(r["loss"]) for r in out["train"])
    text = (tmp_path / "RESULTS.md").read_text()
    assert "torch" in text and "diffusers" in text and "| preset |" in text and "command:" in text
    assert "ratio_vs_plain" in capsys.readouterr().out


def test_size_flag_is_width_by_height():
    assert common.parse_size("768x512") == (512, 768)


def test_families_rd_marks_baselines_that_cannot_reach_our_rate(monkeypatch, capsys):
    import numpy as np

    from benchmarks import families_rd

    # 64×64: the refine_tiny stream is a few hundred bits (≈0.1 bpp) while JPEG's headers alone are ≈0.6 bpp,
    # so the quality search stops at its lowest quality — a row that must not read as a same-rate point.
    rng = np.random.default_rng(0)
    monkeypatch.setattr(families_rd, "photo", lambda name: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert families_rd.main(["--model", "refine_tiny", "--images", "chelsea", "--baselines", "jpeg"]) == 0
    rows = {line.split(" | ")[0].lstrip("| "): line for line in capsys.readouterr().out.splitlines()}
    assert set(rows) >= {"refine_tiny (untrained) MSE", "refine_tiny (untrained) refined",
                         "jpeg @ refine_tiny (untrained) (lowest quality, above our bpp)"}
    ours = float(rows["refine_tiny (untrained) MSE"].split(" | ")[2])
    jpeg = float(rows["jpeg @ refine_tiny (untrained) (lowest quality, above our bpp)"].split(" | ")[2])
    assert jpeg > 2 * ours

"""Smoke test: every benchmark function runs once on CPU with the tiny preset at toy sizes."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_decode, bench_encode, bench_train, common, run_all  # noqa: E402


@pytest.fixture(scope="module")
def codec():
    # Shared: the training benchmarks update its weights, which no later benchmark depends on.
    from diffeic import DiffEICCodec

    return DiffEICCodec.from_config("tiny")


def test_decode_benchmark_reports_both_paths_and_counts_evaluations(codec):
    rows = bench_decode.run("tiny", "cpu", (64, 64), steps=2, repeats=1, sampler="fewstep", codec=codec)
    assert [r["path"] for r in rows][0] == "plain fp32" and len(rows) == 2
    assert rows[0]["ratio_vs_plain"] == 1.0 and rows[1]["ratio_vs_plain"] > 0
    assert all(r["unet_evals"] == 2 and r["peak_mb"] > 0 and r["total_s"] > 0 for r in rows)


def test_encode_benchmark(codec):
    rows = bench_encode.run("tiny", "cpu", (64, 64), repeats=1, codec=codec)
    assert len(rows) == 2 and all(r["bytes"] > 0 for r in rows)
    assert rows[1]["same_bytes"] is True                   # CPU "fast" encode = plain settings


def test_train_benchmark(codec):
    rows = bench_train.run("tiny", "cpu", (64, 64), batch=1, repeats=1, fast=False, codec=codec)
    assert len(rows) == 1 and rows[0]["img_per_s"] > 0 and rows[0]["loss"] == rows[0]["loss"]  # finite


def test_run_all_cli_and_results_file(tmp_path, monkeypatch, capsys, codec):
    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    monkeypatch.setattr(common, "build_codec", lambda preset, device: codec)
    out = run_all.main(["--preset", "tiny", "--device", "cpu", "--size", "64x64", "--steps", "1",
                        "--fewsteps", "1", "--repeats", "1", "--plain", "--train-size", "64x64",
                        "--train-batch", "1"])
    assert set(out) == {"encode", "decode", "decode_fewstep", "decode_onestep", "train"}
    assert out["decode_onestep"][0]["unet_evals"] == 1 and out["decode_onestep"][0]["steps"] == 1
    text = (tmp_path / "RESULTS.md").read_text()
    assert "torch" in text and "diffusers" in text and "| preset |" in text and "command:" in text
    assert "ratio_vs_plain" in capsys.readouterr().out


def test_size_flag_is_width_by_height():
    assert common.parse_size("768x512") == (512, 768)

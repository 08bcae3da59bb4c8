"""The one-command GPU check (benchmarks/device_check.sh): its dry run on the CPU, so it cannot rot between leases."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import device_check  # noqa: E402

# Rows each stage writes in the dry run: 3 decode paths (x2 samplers for fewstep/onestep), 3 encode paths,
# 2 training paths, encode + 2 tiled decodes, 2 families, compile at 2 samplers.
ROWS = {"decode": 3, "fewstep": 6, "encode": 3, "train": 2, "tiled": 3, "families": 2, "compile": 2}


def _row(stage, **kw):
    return {"stage": stage, "path": "p", "size": "768x512", **kw}


def test_targets_pick_the_best_row_and_say_not_measured():
    rows = [_row("decode", sampler="ddpm", total_s=0.5, peak_mb=5000.0),
            _row("compile", sampler="ddpm", total_s=0.25),
            _row("decode", sampler="ddpm", error="OutOfMemoryError: ..."),
            _row("train", img_per_s=70.0), _row("train", img_per_s=90.0)]
    t = {e["target"].split(" <=")[0].split(" >=")[0]: e for e in device_check._targets(rows)}
    assert t["decode, 50 DDPM steps"]["measured"] == "0.25 s" and t["decode, 50 DDPM steps"]["met"] == "yes"
    assert t["decode, 50 DDPM steps"]["row"].startswith("compile: ddpm")
    assert t["peak decode memory (50 steps)"]["measured"] == "4.883 GiB"
    assert t["peak decode memory (50 steps)"]["met"] == "no"
    assert t["training at 512², the paper's batch"]["measured"] == "90 img/s"
    assert t["training at 512², the paper's batch"]["met"] == "yes"
    for name in ("encode", "decode, few-step / one-step", "4K decode by tiling, peak memory"):
        assert t[name]["measured"] == "not measured" and t[name]["met"] == ""


@pytest.mark.timeout(1800)          # a few minutes on an idle 2-core machine; much longer on a loaded one
def test_dry_run_runs_every_stage_and_reports_a_failed_one(tmp_path):
    """The whole dry run (every stage's code at the tiny preset on the CPU), with the families stage made to fail
    after it ran: the failure is reported, the later stages still run, and RESULTS.md is left alone."""
    results = ROOT / "benchmarks" / "RESULTS.md"
    before = hashlib.sha256(results.read_bytes()).hexdigest()
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"; rc=$?\n'
                       '[ "$2" = families ] && exit 3\nexit $rc\n')
    wrapper.chmod(0o755)
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": str(wrapper), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(["bash", "benchmarks/device_check.sh", "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=3000)
    log = proc.stdout
    assert proc.returncode == 1, log[-3000:]
    assert "=== install: skipped (dry run" in log
    assert sorted(p.name for p in out.iterdir()) == ["device_check.json", "device_check.log",
                                                     "device_check_results.md"]
    assert (out / "device_check.log").read_text() == log
    summary = json.loads((out / "device_check.json").read_text())
    status = {s["stage"]: s["status"] for s in summary["stages"]}
    assert status.pop("install") == "skipped (dry run)"
    assert status.pop("families") == "failed (exit 3)"
    assert set(status.values()) == {"ok"}, status
    assert list(status) == ["env", "cuda_tests", "decode", "fewstep", "encode", "train", "tiled", "compile"]
    assert summary["dry_run"] and summary["env"]["torch"]
    for stage, n in ROWS.items():
        rows = [r for r in summary["rows"] if r["stage"] == stage]
        assert len(rows) == n and not [r for r in rows if "error" in r], (stage, rows)
    assert all(r["same_bytes"] for r in summary["rows"] if r["stage"] == "encode")
    assert all(r["tile"] == "16/8" for r in summary["rows"] if r["stage"] == "tiled" and "sampler" in r)
    assert all(t["dry_run_value"] != "not measured" and t["met"] == "n/a (dry run)" for t in summary["targets"])
    md = (out / "device_check_results.md").read_text()
    assert "dry run" in md and "| target | dry_run_value | met | row |" in md
    assert hashlib.sha256(results.read_bytes()).hexdigest() == before


@pytest.mark.parametrize("argv", [["collect", "--parts", "x"],
                                  ["collect", "--parts", "x", "--out", "y", "--results", "r.md", "--dry-run"]])
def test_collect_refuses_bad_arguments(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        device_check.main(argv)

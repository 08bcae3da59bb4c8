"""Two-process DDP on CPU (gloo) with the tiny preset: runs, ranks draw different crops, export loads.

About 40 s on two shared CPU cores.
"""
import os
import subprocess
import sys
from pathlib import Path

import torch

from diffeic import DiffEICCodec

REPO = Path(__file__).resolve().parents[1]


def test_two_process_ddp_cpu(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs/tiny.yaml"),
           "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.max_steps", "3",
           "--trainer.val_check_interval", "3", "--data.val_limit", "2", "--trainer.enable_progress_bar", "false"]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    (last,) = tmp_path.glob("runs/tiny/lightning_logs/version_0/checkpoints/last.ckpt")
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["global_step"] == 3 and ckpt["DiffEICDataModule"]["batches_done"] == 3
    codec = DiffEICCodec.from_pretrained(tmp_path / "runs/tiny/export")
    assert codec.is_trained


def test_ranks_get_disjoint_samples():
    from diffeic.training.data import ResumableDistributedSampler
    ds = list(range(8))
    keys = [set(ResumableDistributedSampler(ds, 2, rank, seed=231)) for rank in (0, 1)]
    assert not keys[0] & keys[1] and len(keys[0] | keys[1]) == 8

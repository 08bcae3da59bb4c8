"""Training runs on the tiny preset (CPU): CLI + export, exact resume, divergence guard ([Li2024] Sec. IV-A)."""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from diffeic import DiffEICCodec
from diffeic.training import DiffEICDataModule, DiffEICModule, TrainingDiverged

from conftest import photo

REPO = Path(__file__).resolve().parents[1]


def _trainable(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()
            if k.startswith(("codec.lfgcm.", "codec.control.")) and not module._excluded(k)}


def _fit(tmp_path, max_steps, ckpt_every=None, ckpt_path=None, module_kw=None, **trainer_kw):
    module = DiffEICModule("tiny", seed=0, **(module_kw or {}))
    data = DiffEICDataModule(root="samples", val_root=None, crop_size=64, short_side=(64, 80), batch_size=2,
                             num_workers=0, seed=0)
    callbacks = [ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=ckpt_every, save_top_k=-1)] \
        if ckpt_every else []
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, callbacks=callbacks,
                      enable_checkpointing=bool(ckpt_every), enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0, default_root_dir=tmp_path, **trainer_kw)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return module, trainer


def test_cli_run_writes_a_loadable_export(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    from PIL import Image
    for name in ("coffee", "chelsea", "rocket"):
        x = (photo(name) * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(x).save(photos / f"{name}.png")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs/tiny.yaml"),
           "--data.root", str(photos), "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
           "--data.val_limit", "1", "--trainer.enable_progress_bar", "false"]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    export = tmp_path / "runs" / "tiny" / "export"          # under --trainer.default_root_dir (runs/tiny)
    codec = DiffEICCodec.from_pretrained(export)
    assert codec.is_trained
    x = photo("astronaut", (70, 90))
    bits = codec.compress(x)
    assert codec.decompress(bits, steps=2).shape == x.shape
    # The export holds the trained weights, not the initial ones; the Lightning checkpoint holds no SD weights.
    assert codec.fingerprint() != DiffEICCodec.from_config("tiny").fingerprint()
    log_dir = tmp_path / "runs/tiny/lightning_logs/version_0"
    ckpt = torch.load(log_dir / "checkpoints/last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2 and not any("backbone" in k for k in ckpt["state_dict"])
    metrics = (log_dir / "metrics.csv").read_text()
    for name in ("train/l_ne", "train/bpp", "train/l_sa", "train/aux", "train/img_s", "val/bpp", "val/psnr"):
        assert name in metrics


def test_resume_matches_uninterrupted_run(tmp_path):
    k = 2                      # 7 photos / batch 2 = 3 batches per epoch: the resume is mid-epoch
    straight, _ = _fit(tmp_path / "a", 2 * k)
    _fit(tmp_path / "b", k, ckpt_every=k)
    ckpt = next((tmp_path / "b" / "ckpt").glob("*.ckpt"))
    resumed, trainer = _fit(tmp_path / "b", 2 * k, ckpt_path=str(ckpt))
    assert trainer.global_step == 2 * k
    a, b = _trainable(straight), _trainable(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)
    # the runs trained (equal because both moved identically, not because nothing moved)
    initial = _trainable(DiffEICModule("tiny"))
    assert not torch.equal(a["codec.control.conv_in.weight"], initial["codec.control.conv_in.weight"])


def _nan_at(monkeypatch, bad):
    original = DiffEICModule.compute_losses

    def patched(self, x, *args, **kwargs):
        losses = original(self, x, *args, **kwargs)
        if bad(self.batches_seen):
            losses["loss"] = losses["loss"] * float("nan")
        return losses
    monkeypatch.setattr(DiffEICModule, "compute_losses", patched)


def test_nan_step_is_skipped_and_logged(tmp_path, monkeypatch):
    _nan_at(monkeypatch, lambda batch: batch == 1)
    with pytest.warns(RuntimeWarning, match="non-finite loss or gradient at batch 2"):
        module, trainer = _fit(tmp_path, 3)
    assert module.skipped_total == 1 and module.consecutive_skips == 0
    assert module.batches_seen == 4 and trainer.global_step == 3          # the skipped batch made no update
    assert trainer.callback_metrics["train/skipped_total"] == 1
    assert all(torch.isfinite(v).all() for v in _trainable(module).values())


def test_consecutive_nans_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path, monkeypatch):
    _nan_at(monkeypatch, lambda batch: batch >= 2)
    with pytest.raises(TrainingDiverged, match="3 consecutive steps with a non-finite loss"):
        _fit(tmp_path, 10, ckpt_every=1, module_kw={"max_consecutive_skips": 3})
    ckpts = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    last = torch.load(ckpts[-1], weights_only=False)
    assert last["global_step"] == 2                     # written before the divergence, never after it
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    restored = DiffEICModule.load_from_checkpoint(ckpts[-1])    # loads although SD weights are not stored
    assert restored.batches_seen == 2 and math.isfinite(restored.codec.lfgcm.aux_loss().item())


def test_outputs_follow_the_root_dir_and_a_second_run_never_replaces_the_first_export(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    base = [sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs/tiny.yaml"),
            "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path / "mine")]
    first = subprocess.run(base, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stderr[-3000:]
    export = tmp_path / "mine" / "export"
    assert DiffEICCodec.from_pretrained(export).is_trained and not (tmp_path / "runs").exists()
    before = (export / "config.yaml").read_text()
    second = subprocess.run(base + ["--model.lmbda", "4"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=240)
    assert second.returncode != 0 and "holds an export of another training run" in second.stderr
    assert (export / "config.yaml").read_text() == before          # the first run's export is intact
    # overwrite: true lets a run replace another run's export (checked by the callback itself)
    from diffeic.training.callbacks import ExportCallback, ExportConflictError
    mine = ExportCallback(str(export))
    mine.run_id = "another-run"
    with pytest.raises(ExportConflictError, match="another training run"):
        mine._check_owner(export)
    ExportCallback(str(export), overwrite=True)._check_owner(export)


def test_the_trained_parts_are_in_training_mode_during_fit(tmp_path, monkeypatch):
    # Lightning keeps submodule modes; codecs are built in eval mode. In eval mode the LFGCM's rate uses hard
    # rounding (no gradient through y, z) and a real run diverged: pin the mode seen inside training_step.
    seen = []
    original = DiffEICModule.compute_losses

    def spy(self, x, *args, **kwargs):
        seen.append((self.codec.lfgcm.training, self.codec.lfgcm.gaussian_conditional.training,
                     self.codec.control.training, self.codec.backbone.training))
        return original(self, x, *args, **kwargs)
    monkeypatch.setattr(DiffEICModule, "compute_losses", spy)
    _fit(tmp_path, 1)
    assert seen == [(True, True, True, False)]

"""Overfitting one photo on the tiny preset lowers every loss term ([Li2024] Eq. (13))."""
import torch
from lightning.pytorch import Trainer
from PIL import Image

from diffeic.training import DiffEICDataModule, DiffEICModule
from diffeic.training.module import seeded

from conftest import photo


def _terms(module, x, t, noise):
    # Fixed image, timesteps, noise and RNG (posterior sample, rate noise): only the weights differ.
    module.train()
    with torch.no_grad(), seeded(1234):
        out = module.compute_losses(x, t=t, noise=noise)
    return {k: float(v) for k, v in out.items()}


def test_overfitting_one_photo_lowers_every_loss_term(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    x8 = (photo("coffee", (80, 120)) * 255).round().byte()
    Image.fromarray(x8.permute(1, 2, 0).numpy()).save(folder / "coffee.png")
    module = DiffEICModule("tiny", lr=1e-3, seed=0)
    data = DiffEICDataModule(root=str(folder), val_root=None, crop_size=64, short_side=(64, 64), batch_size=1,
                             num_workers=0, seed=0)
    # Evaluation batch: the centre crop at three timesteps spanning the schedule.
    x = (x8.float() / 255)[:, 8:72, 28:92].unsqueeze(0).repeat(3, 1, 1, 1)
    t = torch.tensor([100, 500, 900])
    noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    before = _terms(module, x, t, noise)
    Trainer(accelerator="cpu", max_steps=30, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0).fit(module, datamodule=data)
    after = _terms(module, x, t, noise)
    for term in ("l_ne", "bpp", "l_sa", "aux", "loss"):
        assert after[term] < before[term], (term, before[term], after[term])

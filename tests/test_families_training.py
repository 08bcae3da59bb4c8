"""A few hundred training steps of the tiny HiFiC and refinement codecs on the bundled photos (slow)."""
import pytest

from conftest import photo


def _fit(module, steps: int, tmp_path):
    from lightning.pytorch import Trainer

    from diffeic.training import DiffEICDataModule

    data = DiffEICDataModule(root="samples", val_root=None, crop_size=64, short_side=(64, 80), batch_size=4,
                             num_workers=0, seed=0)
    losses = []
    trainer = Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    original = module.training_step

    def step(batch, batch_idx):
        loss = original(batch, batch_idx)
        losses.append(float(loss))
        return loss
    module.training_step = step
    trainer.fit(module, datamodule=data)
    return losses


def _real_bpp(codec) -> float:
    x = photo("chelsea", (128, 192))
    codec.eval()
    return 8 * len(codec.compress(x)) / (128 * 192)


@pytest.mark.slow
def test_hific_training_lowers_the_loss_and_orders_rates_by_target(tmp_path):
    from diffeic.training.hific import HiFiCModule

    rates = {}
    for target in (0.25, 1.0):
        module = HiFiCModule(preset="hific_tiny", target_bpp=target, schedule_steps=0, gan_start_step=150,
                             perceptual="ms_ssim", lr=3e-4, seed=0)
        losses = _fit(module, 200, tmp_path)
        assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:20]) / 20
        rates[target] = _real_bpp(module.codec)
    assert rates[0.25] < rates[1.0]


@pytest.mark.slow
def test_refine_training_lowers_the_loss_and_orders_rates_by_lambda(tmp_path):
    from diffeic.training.refine import RefineModule

    rates = {}
    for lmbda in (0.002, 0.05):
        module = RefineModule(preset="refine_tiny", lmbda=lmbda, lr=3e-4, seed=0)
        losses = _fit(module, 200, tmp_path)
        assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20
        rates[lmbda] = _real_bpp(module.codec)
    assert rates[0.002] < rates[0.05]

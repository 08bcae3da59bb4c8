"""Training precision: under bf16 autocast only the frozen UNet + control module leave float32."""
import pytest
import torch
from lightning.pytorch import Trainer

from diffeic import DiffEICCodec
from diffeic.diffusion.sampling import training_scheduler
from diffeic.training import DiffEICModule
from diffeic.training.module import seeded, training_losses

from conftest import photo


def test_bf16_autocast_leaves_the_entropy_model_rate_and_alignment_in_float32():
    codec = DiffEICCodec.from_config("tiny")
    codec.lfgcm.train()
    scheduler = training_scheduler(codec.config.schedule)
    x = torch.stack([photo("coffee", (64, 64)), photo("chelsea", (64, 64))])
    t = torch.tensor([100, 700])
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def losses(autocast: bool):
        # Same RNG (posterior sample, rate noise) in both runs: only the autocast differs.
        with torch.no_grad(), seeded(5), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return training_losses(codec, scheduler, x, 4.0, t=t, noise=noise)

    fp32, mixed = losses(False), losses(True)
    for term in ("bpp", "l_sa", "aux"):       # VAE target, LFGCM, rate: bit-identical to the float32 run
        assert mixed[term].dtype == torch.float32 and torch.equal(mixed[term], fp32[term]), term
    # The UNet and control module did run in bf16 (else this test would prove nothing), close to float32.
    assert not torch.equal(mixed["l_ne"], fp32["l_ne"])
    assert abs(mixed["l_ne"].item() - fp32["l_ne"].item()) < 0.05 * fp32["l_ne"].item()


@pytest.mark.parametrize("precision", ["bf16-true", "16-true"])
def test_precisions_that_cast_the_lfgcm_or_need_loss_scaling_are_refused(precision):
    module = DiffEICModule("tiny")
    module.trainer = Trainer(accelerator="cpu", precision=precision, logger=False, enable_progress_bar=False,
                             enable_model_summary=False)
    with pytest.raises(ValueError, match=f"precision '{precision}' is not supported.*32-true.*bf16-mixed"):
        module.on_train_start()

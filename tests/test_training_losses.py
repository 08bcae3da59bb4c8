"""``training_losses`` against the paper's objective computed by hand (paper Eq. 13; DiffEIC's ``p_losses``).

    L = 1·MSE(ε, ε̂) + λ·bpp + 2·MSE(z_c, z_0),   bpp = Σ −log₂ p(ŷ, ẑ) / (B·H·W),
    z_0 = 0.18215 · a *sample* of the VAE posterior,  z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε,
    ᾱ_t from the scaled-linear β schedule 0.00085 → 0.012 over 1000 steps.

The hand computation uses the parts (VAE posterior, LFGCM, controlled UNet) but none of the code that
combines them, and draws the same random numbers in the same order from the same seed.
"""
import contextlib
import math

import pytest
import torch

from helpers import photo_crop

from diffeic.diffusion.sampling import training_scheduler
from diffeic.training.module import training_losses

LMBDA = 3.0                     # neither 1 nor 2: a swapped weight changes the total


@contextlib.contextmanager
def training_mode(codec):
    """The codec as DiffEICModule trains it (train mode), restored to eval afterwards (a shared fixture)."""
    codec.train()
    try:
        yield codec
    finally:
        codec.eval()


def batch() -> torch.Tensor:
    """Two different 64×128 crops (B·H·W ≠ H·W, H ≠ W)."""
    return torch.stack([photo_crop("astronaut", 30, 140, 64, 128), photo_crop("coffee", 100, 200, 64, 128)])


def alpha_bar(t: torch.Tensor) -> torch.Tensor:
    betas = torch.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)[t].float()


def by_hand(codec, x, t, noise, seed, lmbda, posterior="sample"):
    b, _, h, w = x.shape
    torch.manual_seed(seed)
    with torch.no_grad():
        dist = codec.backbone.vae.encode(x * 2 - 1).latent_dist
        eps_z = torch.randn(dist.mean.shape)                   # the posterior's draw, first from the RNG
        latent = dist.mean + dist.std * eps_z if posterior == "sample" else dist.mean
        z0 = 0.18215 * latent
    out = codec.lfgcm(x, z0)                                   # then the LFGCM's rate noise
    ab = alpha_bar(t).view(-1, 1, 1, 1)
    z_t = ab.sqrt() * z0 + (1 - ab).sqrt() * noise
    ctx = codec.backbone.text_embedding.expand(b, -1, -1)
    eps_hat = codec.control(codec.backbone.unet, z_t, t, ctx, out["z_c"])
    l_ne = ((eps_hat - noise) ** 2).mean()
    bits = sum((-torch.log(p) / math.log(2)).sum() for p in out["likelihoods"].values())
    bpp = bits / (b * h * w)
    l_sa = ((out["z_c"] - z0) ** 2).mean()
    return {"loss": 1.0 * l_ne + lmbda * bpp + 2.0 * l_sa, "l_ne": l_ne, "bpp": bpp, "l_sa": l_sa}


def test_training_losses_equal_the_hand_computed_objective(tiny_codec):
    x = batch()
    t = torch.tensor([37, 801])
    noise = torch.randn(2, 4, 8, 16, generator=torch.Generator().manual_seed(3))
    with training_mode(tiny_codec) as codec:
        scheduler = training_scheduler(codec.config.schedule)
        torch.manual_seed(11)
        got = training_losses(codec, scheduler, x, LMBDA, t=t, noise=noise)
        want = by_hand(codec, x, t, noise, 11, LMBDA)
        with torch.no_grad():
            mode = by_hand(codec, x, t, noise, 11, LMBDA, posterior="mode")
    for key in ("l_ne", "bpp", "l_sa", "loss"):
        assert got[key].item() == pytest.approx(want[key].item(), rel=1e-5, abs=1e-6), key
    # The checks above can tell the variants apart: each would move the total by far more than 1e-5.
    loss = want["loss"].item()
    assert abs(mode["loss"].item() - loss) > 1e-3 * loss                       # posterior mode instead of sample
    assert want["bpp"].item() * LMBDA / 2 > 1e-3 * loss                          # bpp over H·W instead of B·H·W
    assert abs((LMBDA - 2.0) * (want["bpp"] - want["l_sa"]).item()) > 1e-3 * loss   # λ and 2 swapped
    assert abs((LMBDA - 1.0) * (want["bpp"] - want["l_ne"]).item()) > 1e-3 * loss   # λ and 1 swapped
    assert want["bpp"].item() > 0.01 and want["l_sa"].item() > 1e-3 and want["l_ne"].item() > 1e-3



def test_channel_weighted_guide_loss_is_hand_computed_and_checked():
    from diffeic.training.module import guide_mse

    z0 = torch.zeros(2, 3, 2, 2)
    z_c = torch.zeros(2, 3, 2, 2)
    z_c[:, 0] = 1.0                      # per-channel MSE: 1, 0, 4
    z_c[:, 2] = 2.0
    assert guide_mse(z_c, z0).item() == pytest.approx(5 / 3)                  # the paper's plain MSE
    assert guide_mse(z_c, z0, [1, 1, 1]).item() == pytest.approx(5 / 3)      # equal weights change nothing
    # weights 1, 1, 4 normalised to mean 1 (x 1/2): (1*1 + 1*0 + 4*4) / 2 / 3
    assert guide_mse(z_c, z0, [1, 1, 4]).item() == pytest.approx(17 / 6)
    for bad in ([1, 1], [1, 0, 1], [1, -1, 1]):
        with pytest.raises(ValueError, match="one per latent channel"):
            guide_mse(z_c, z0, bad)


def test_rate_gains_start_where_the_channel_weights_put_them():
    import math

    from diffeic.config import get_config
    from diffeic.lfgcm import LFGCM
    from diffeic.training.module import scale_rate_gains

    cfg = get_config("configs/demo2_model_vr.yaml").lfgcm
    lfgcm = LFGCM(cfg)
    before = lfgcm.rate_gains.log_gain.detach().clone(), lfgcm.rate_gains.log_inverse_gain.detach().clone()
    weights = [1, 4, 4] + [1] * 9                       # mean 1.5: chroma 4/1.5, the others 1/1.5
    scale_rate_gains(lfgcm, weights)
    ratio = (lfgcm.rate_gains.log_gain - before[0]).exp()
    inverse = (lfgcm.rate_gains.log_inverse_gain - before[1]).exp()
    assert torch.allclose(ratio[:, 4:12], torch.full_like(ratio[:, 4:12], math.sqrt(4 / 1.5)))   # y channels 4c..4c+3
    assert torch.allclose(ratio[:, :4], torch.full_like(ratio[:, :4], math.sqrt(1 / 1.5)))
    assert torch.allclose(ratio[:, 12:48], torch.full_like(ratio[:, 12:48], math.sqrt(1 / 1.5)))
    assert torch.equal(ratio[:, 48:], torch.ones_like(ratio[:, 48:]))        # deep-only channels unchanged
    assert torch.allclose(ratio * inverse, torch.ones_like(ratio))          # the decoder undoes the same scale
    with pytest.raises(ValueError, match="one per latent channel"):
        scale_rate_gains(lfgcm, [1, 4, 4])
    with pytest.raises(ValueError, match="variable-rate LFGCM with linear_paths"):
        scale_rate_gains(LFGCM(get_config("tiny").lfgcm), weights)

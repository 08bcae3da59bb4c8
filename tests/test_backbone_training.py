"""Pretraining the demo prior: the latent-scale normalisation, the two objectives, the export folder."""
import math

import torch

from diffeic.config import get_config
from diffeic.diffusion.backbone import FrozenBackbone
from diffeic.diffusion.sampling import training_scheduler
from diffeic.training.backbone import ldm_losses, normalise_latent_scale, vae_losses


def _backbone():
    return FrozenBackbone.from_config(get_config("tiny").backbone, seed=1)


def test_latent_scale_normalisation_is_exact_and_hits_unit_variance():
    bb = _backbone()
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    z_before = bb.encode(x) / bb.scale_factor
    with torch.no_grad():
        recon_before = bb.vae.decode(z_before).sample
    c = normalise_latent_scale(bb, x)
    z_after = bb.encode(x) / bb.scale_factor
    torch.testing.assert_close(z_after, c * z_before, rtol=1e-5, atol=1e-6)      # the latent is rescaled by c
    assert abs(float(bb.encode(x).std()) - 1.0) < 1e-4                           # scale_factor · z has unit std
    with torch.no_grad():
        recon_after = bb.vae.decode(z_after).sample
    torch.testing.assert_close(recon_after, recon_before, rtol=1e-4, atol=1e-5)  # the decoder did not change
    # the posterior's spread scales with the mean: log-variance moved by exactly 2 ln c
    moments = bb.vae.quant_conv(bb.vae.encoder(x * 2 - 1))
    ch = bb.vae.config.latent_channels
    post = bb.vae.encode(x * 2 - 1).latent_dist
    torch.testing.assert_close(post.logvar, moments[:, ch:].clamp(-30, 20))
    assert c > 0 and math.isfinite(c)


def test_vae_objective_by_hand():
    bb = _backbone()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    out = vae_losses(bb, x, kl_weight=0.01)
    torch.manual_seed(5)
    post = bb.vae.encode(x * 2 - 1).latent_dist
    x_hat = bb.vae.decode(post.sample()).sample
    sse = ((x_hat - (x * 2 - 1)) ** 2).sum() / 2
    kl = (0.5 * (post.mean ** 2 + post.var - 1 - post.logvar)).sum() / 2       # KL(q || N(0, I)) per image
    torch.testing.assert_close(out["sse"], sse)
    torch.testing.assert_close(out["kl"], kl, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(out["loss"], sse + 0.01 * kl, rtol=1e-5, atol=1e-3)


def test_ldm_objective_is_the_epsilon_mse_on_scaled_posterior_samples():
    bb = _backbone()
    cfg = get_config("tiny")
    sched = training_scheduler(cfg.schedule)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(9)
    out = ldm_losses(bb, sched, x, cfg.schedule)
    torch.manual_seed(9)
    z0 = bb.vae.encode(x * 2 - 1).latent_dist.sample() * bb.scale_factor
    t = torch.randint(0, 1000, (2,))
    noise = torch.randn_like(z0)
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
    eps = bb.unet(z_t, t, bb.text_embedding.expand(2, -1, -1)).sample
    torch.testing.assert_close(out["loss"], ((eps - noise) ** 2).mean(), rtol=1e-5, atol=1e-6)

"""Colour: the training augmentation's colour transform and the decoder's colour fix."""
import random

import numpy as np
import pytest
import torch

from diffeic.config import get_config
from diffeic.diffusion.colour import colour_fix, gaussian_lowpass
from diffeic.training.data import CropSpec, colour_transform, paper_crop
from PIL import Image


def _photo(seed=0, size=(96, 80)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def test_colour_transform_keeps_grey_grey_and_changes_colour():
    for seed in range(20):
        m, b = colour_transform(random.Random(seed))
        grey = m @ np.full(3, 0.4) + b
        assert np.allclose(grey, grey[0], atol=1e-6), f"seed {seed}: grey became {grey}"
    # Hue rotation by a random angle: a pure red moves off red for most draws.
    moved = [np.abs((colour_transform(random.Random(s))[0] @ np.array([1.0, 0, 0]))[1:]).max() > 0.2
             for s in range(20)]
    assert sum(moved) >= 15


def test_no_colour_augmentation_leaves_the_paper_crop_unchanged():
    # colour=0 must draw nothing more from the per-sample RNG: crops (and every golden test) stay as they were.
    spec = CropSpec(64, 64, 80)
    a = paper_crop(_photo(), spec, random.Random("k"))
    rng = random.Random("k")
    b = paper_crop(_photo(), spec, rng)
    assert torch.equal(a, b)
    after = rng.random()
    rng2 = random.Random("k")
    paper_crop(_photo(), CropSpec(64, 64, 80, colour=0.0), rng2)
    assert rng2.random() == after


def test_colour_augmentation_is_the_drawn_affine_map():
    spec, plain = CropSpec(64, 64, 80, colour=1.0), CropSpec(64, 64, 80, colour=0.0)
    x0 = paper_crop(_photo(), plain, random.Random("s"))
    rng = random.Random("s")
    x1 = paper_crop(_photo(), spec, rng)
    # Replay: same crop draws, then the colour draw (p = 1 still draws its coin).
    rep = random.Random("s")
    paper_crop(_photo(), plain, rep)
    rep.random()
    m, b = colour_transform(rep)
    expected = (torch.einsum("ij,jhw->ihw", torch.from_numpy(m), x0) + torch.from_numpy(b)[:, None, None]).clamp(0, 1)
    assert torch.allclose(x1, expected, atol=1e-6)
    with pytest.raises(ValueError, match="colour"):
        CropSpec(64, 64, 80, colour=1.5)


def test_colour_fix_takes_the_content_latents_low_frequencies():
    torch.manual_seed(0)
    z_c = torch.randn(1, 4, 12, 16)
    assert torch.allclose(colour_fix(z_c, z_c), z_c, atol=1e-6)
    # A colour cast (a constant per channel) is removed exactly: a constant is its own low-pass.
    cast = torch.tensor([0.5, -1.0, 2.0, 0.3]).view(1, 4, 1, 1)
    assert torch.allclose(colour_fix(z_c + cast, z_c), z_c, atol=1e-5)
    # Detail at the highest frequency passes nearly untouched (the Gaussian's response there is ~0).
    checker = (torch.arange(12).view(-1, 1) + torch.arange(16).view(1, -1)) % 2 * 2.0 - 1.0
    fixed = colour_fix(z_c + checker, z_c)
    assert torch.allclose(fixed - z_c, checker.expand_as(z_c), atol=0.05)
    assert torch.allclose(gaussian_lowpass(torch.ones(1, 2, 3, 3)), torch.ones(1, 2, 3, 3), atol=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        colour_fix(z_c, z_c[..., :8])


def test_colour_fix_is_a_model_setting_that_presets_do_not_serialise():
    cfg = get_config("tiny")
    assert "colour_fix" not in cfg.to_dict()["sampler"]          # same YAML, same fingerprints as before
    cfg.sampler.colour_fix = True
    data = cfg.to_dict()
    assert data["sampler"]["colour_fix"] is True
    assert type(cfg).from_dict(data).sampler.colour_fix is True
    with pytest.raises(ValueError, match="colour_fix"):
        type(cfg).from_dict({**data, "sampler": {**data["sampler"], "colour_fix": "yes"}})


def test_decoder_applies_the_colour_fix_to_the_sample():
    from diffeic import DiffEICCodec
    from diffeic.diffusion.decoder import Decoder

    codec = DiffEICCodec.from_config("tiny")
    z_c = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    dec = Decoder(codec.backbone, codec.control)
    kw = dict(sampler="fewstep", steps=2, schedule=codec.config.schedule)
    z0 = dec.denoise(z_c, generator=torch.Generator().manual_seed(3), **kw)
    expected = dec.vae_decode(colour_fix(z0, z_c))
    got = dec.decode(z_c, generator=torch.Generator().manual_seed(3), colour_fix=True, **kw)
    plain = dec.decode(z_c, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, plain, atol=1e-3)


def test_vae_trained_in_opponent_colours_folds_into_an_rgb_vae():
    from diffusers import AutoencoderKL

    from diffeic.training.backbone import fold_colour_space, opponent_colours

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                        block_out_channels=[8, 8], norm_num_groups=1, down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2).eval()
    t = opponent_colours(3.0)
    # Grey is luma only; the two colour rows see only colour differences, weighed 3x.
    assert torch.allclose(t @ torch.ones(3), torch.tensor([1.0, 0, 0]))
    assert torch.allclose(t @ torch.tensor([1.0, 0, -1.0]), torch.tensor([0.0, 3.0, 0.0]))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        in_space = vae.decode(vae.encode(torch.einsum("ij,bjhw->bihw", t, x)).latent_dist.mode()).sample
        expected = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(t), in_space)
        fold_colour_space(vae, t)
        folded = vae.decode(vae.encode(x).latent_dist.mode()).sample
    assert torch.allclose(folded, expected, atol=1e-4)

"""The semantic family's offline decoder (diffeic.semantic.tiny_decoder) and its training step."""
from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from diffeic.bilevel import canny_edges
from diffeic.samples import load_photo
from diffeic.semantic import SemanticParts
from diffeic.semantic.palette import palette_grid, upsample_palette
from diffeic.semantic.regions import KeptRegion
from diffeic.semantic.tiny_decoder import (CONDITION_CHANNELS, TinyDecoderSettings, TinySemanticDecoder,
                                           build_condition)
from diffeic.training.semantic import SemanticTinyModule, crop_condition, load_tiny_backbone

FAST = TinyDecoderSettings(steps=2, start=600)


@pytest.fixture(scope="module")
def backbone():
    return load_tiny_backbone()


@pytest.fixture(scope="module")
def decoder(backbone):
    """The decoder with its zero convolutions (and the hint's last conv) made non-zero, so that the control and
    the condition change the output (at initialisation they do not, as in ControlNet)."""
    dec = TinySemanticDecoder(backbone, TinySemanticDecoder.default_arch())
    gen = torch.Generator().manual_seed(5)
    state = {k: v + (0.1 if not v.any() else 0.01) * torch.randn(v.shape, generator=gen)
             for k, v in dec.trainable_state().items()}
    dec.load_trainable_state(state)
    return dec


def _parts(h: int, w: int, edges=True, palette=True, region=True) -> SemanticParts:
    img = load_photo("chelsea")[100:100 + h, 100:100 + w]
    regions = ()
    if region:
        box = (3, 5, 3 + w // 3, 5 + h // 3)
        regions = (KeptRegion(box, img[box[1]:box[3], box[0]:box[2]].copy()),)
    return SemanticParts(h, w, prompt="a cup of coffee",
                         edges=canny_edges(img, short_side=min(h, w)) if edges else None,
                         palette=palette_grid(img, 32) if palette else None, regions=regions)


@pytest.mark.parametrize("edges,palette,region", list(itertools.product([False, True], repeat=3)))
def test_every_subset_decodes_to_size_and_range(decoder, edges, palette, region):
    parts = _parts(37, 53, edges, palette, region)
    x = decoder.decode(parts, FAST, seed=1)
    assert x.shape == (3, 37, 53) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    if region:                                             # the kept pixels exactly
        (x0, y0, x1, y1), pixels = parts.regions[0].box, parts.regions[0].pixels
        got = (x[:, y0:y1, x0:x1].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(got, pixels)


def test_seed_determinism_and_kept_regions_fixed(decoder):
    parts = _parts(36, 60)
    a = decoder.decode(parts, FAST, seed=3)
    assert torch.equal(a, decoder.decode(parts, FAST, seed=3))
    b = decoder.decode(parts, FAST, seed=4)
    x0, y0, x1, y1 = parts.regions[0].box
    inside = torch.zeros(36, 60, dtype=torch.bool)
    inside[y0:y1, x0:x1] = True
    assert torch.equal(a[:, inside], b[:, inside])
    assert (a[:, ~inside] - b[:, ~inside]).abs().mean() > 1e-3


def test_condition_changes_the_output(decoder):
    """The edges reach the output through the hint encoder and the control (with non-zero zero convs)."""
    with_edges = decoder.decode(_parts(40, 64, region=False), FAST, seed=0)
    without = decoder.decode(_parts(40, 64, edges=False, region=False), FAST, seed=0)
    assert (with_edges - without).abs().mean() > 1e-6       # exactly 0 if the edges were ignored


def test_pinned_decode(decoder):
    """A change in the sampling (timesteps, DDIM update, RePaint, colour fix, padding) changes these sums."""
    parts = _parts(48, 64)
    x = decoder.decode(parts, TinyDecoderSettings(steps=3, start=500), seed=11)
    assert float(x.sum()) == pytest.approx(PINNED_SUM, rel=1e-4)
    y = decoder.decode(_parts(48, 64, palette=False), TinyDecoderSettings(steps=3), seed=11)
    assert float(y.sum()) == pytest.approx(PINNED_SUM_NO_PALETTE, rel=1e-4)


PINNED_SUM = 3622.0918   # 48×64 chelsea crop, all parts, 3 steps from 500, seed 11 (torch 2.14.1 CPU)
PINNED_SUM_NO_PALETTE = 5240.3872   # the same without the palette: from noise at 999


def test_condition_layout():
    edges = np.zeros((4, 6), bool)
    edges[1, 2] = True
    pal = np.full((4, 6, 3), 255, np.uint8)
    region = KeptRegion((1, 1, 3, 2), np.zeros((1, 2, 3), np.uint8))
    cond = build_condition(4, 6, edges, pal, (region,))
    assert cond.shape == (CONDITION_CHANNELS, 4, 6)
    assert cond[0].sum() == 1 and cond[0, 1, 2] == 1
    assert torch.all(cond[1:4] == 1) and torch.all(cond[4:6] == 1)
    assert cond[6].sum() == 2 and torch.all(cond[7:10, 1, 1:3] == -1) and cond[7:10].sum() == -6
    empty = build_condition(4, 6)
    assert torch.all(empty == 0)
    half = build_condition(8, 12, edges)                   # a smaller edge map is resized to the image
    assert half[0].sum() == 4 and torch.all(half[0, 2:4, 4:6] == 1)


def test_load_trainable_state_refuses_mismatch(backbone):
    dec = TinySemanticDecoder(backbone, TinySemanticDecoder.default_arch())
    state = dec.trainable_state()
    name = "hint.net.0.weight"
    bad = dict(state)
    bad[name] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"hint\.net\.0\.weight.*shape \(3, 3\)"):
        dec.load_trainable_state(bad)
    missing = {k: v for k, v in state.items() if k != name}
    with pytest.raises(ValueError, match=r"missing \['hint\.net\.0\.weight'\]"):
        dec.load_trainable_state(missing)
    extra = dict(state, **{"control.surplus": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected \['control\.surplus'\]"):
        dec.load_trainable_state(extra)
    other = TinySemanticDecoder(backbone, dict(TinySemanticDecoder.default_arch(), width_ratio=0.4))
    with pytest.raises(ValueError, match="shape"):
        other.load_trainable_state(state)
    before = {k: v.clone() for k, v in dec.trainable_state().items()}
    assert all(torch.equal(before[k], v) for k, v in dec.trainable_state().items())   # refused: nothing loaded


def test_settings_and_arch_are_checked(backbone):
    for kwargs in ({"steps": 0}, {"start": 1000}, {"steps": 8, "start": 5}, {"steps": 2.5}, {"colour_fix": "yes"}):
        with pytest.raises(ValueError, match="TinyDecoderSettings"):
            TinyDecoderSettings(**kwargs)
    with pytest.raises(ValueError, match=r"unknown keys \['depth'\]"):
        TinySemanticDecoder(backbone, dict(TinySemanticDecoder.default_arch(), depth=3))


def test_random_init_is_deterministic(backbone):
    a = TinySemanticDecoder(backbone, TinySemanticDecoder.default_arch()).trainable_state()
    b = TinySemanticDecoder(backbone, TinySemanticDecoder.default_arch()).trainable_state()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_noise_loss_matches_hand_computed_eps_mse(backbone):
    """At initialisation the control adds exactly zero, so ε̂ is the frozen UNet's own: an independent reference
    through diffusers' scheduler and UNet."""
    dec = TinySemanticDecoder(backbone, TinySemanticDecoder.default_arch())
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=gen)
    cond = torch.stack([crop_condition(xi, random.Random(i)) for i, xi in enumerate(x)])
    t = torch.tensor([10, 700])
    noise = torch.randn(2, 4, 8, 8, generator=gen)
    loss = dec.noise_loss(x, cond, t, noise)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    with torch.no_grad():
        z0 = backbone.vae.encode(x * 2 - 1).latent_dist.mode() * 0.18215
        z_t = sched.add_noise(z0, noise, t)
        eps = backbone.unet(z_t, t, backbone.text_embedding.expand(2, -1, -1)).sample
    expected = F.mse_loss(eps, noise)
    assert torch.isfinite(loss)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_one_training_step_moves_the_control():
    module = SemanticTinyModule(seed=0)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    params = list(module.decoder.control.parameters()) + list(module.decoder.hint.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3)
    zero = module.decoder.control.mid_zero_conv.weight.detach().clone()
    loss = module.batch_loss(x, seed=7)
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    with torch.no_grad():                                 # the seed fixes t, ε and the parts
        assert float(loss.detach()) == pytest.approx(float(module.batch_loss(x, seed=7)))
    loss.backward()
    assert module.decoder.control.mid_zero_conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.decoder.backbone.parameters())     # the prior stays frozen
    opt.step()
    assert not torch.equal(zero, module.decoder.control.mid_zero_conv.weight)


def test_export_round_trip(tmp_path, backbone):
    """What the training exports is what ``load_export`` decodes with; another backbone's export is refused."""
    from diffeic.training.semantic import load_export

    module = SemanticTinyModule(seed=0)
    with torch.no_grad():
        module.decoder.control.mid_zero_conv.weight.add_(0.5)
    folder = module.export(tmp_path / "export", run_id="abc")
    assert sorted(p.name for p in folder.iterdir()) == ["arch.yaml", "decoder.safetensors", "run.yaml"]
    loaded = load_export(folder, backbone)
    state = module.decoder.trainable_state()
    assert all(torch.equal(state[k], v) for k, v in loaded.trainable_state().items())
    run = folder / "run.yaml"
    run.write_text(run.read_text().replace(backbone.fingerprint(), "0123456789abcdef"))
    with pytest.raises(ValueError, match="trained on backbone 0123456789abcdef"):
        load_export(folder, backbone)

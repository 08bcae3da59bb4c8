"""LFGCM architecture and entropy coding (issue #3): sizes, official layout, exact coding, rate."""
import json
from pathlib import Path

import pytest
import torch

from diffeic.config import get_config
from diffeic.lfgcm import LFGCM
from diffeic.lfgcm.entropy import _coder_value, _round_ste, checkerboard_masks

from conftest import photo

REFERENCE = Path(__file__).parent / "data" / "official_lc_keys.tsv"   # key names + shapes of the official lc.ckpt


@pytest.fixture(scope="module")
def sd21_lfgcm():
    torch.manual_seed(0)
    return LFGCM(get_config("sd21").lfgcm)


def test_sd21_parameter_count_matches_the_official_model(sd21_lfgcm):
    # computed from the official model definitions: 51,493,188 including the 576 EntropyBottleneck quantiles.
    assert sum(p.numel() for p in sd21_lfgcm.parameters()) == 51_493_188
    assert sum(p.numel() for n, p in sd21_lfgcm.named_parameters() if not n.endswith("quantiles")) == 51_492_612
    parts = {name: sum(p.numel() for p in getattr(sd21_lfgcm, name).parameters())
             for name in ("encoder", "hyper_enc", "hyper_dec", "decoder", "f_c", "local_context", "channel_context")}
    assert parts == {"encoder": 7_871_296, "hyper_enc": 8_203_840, "hyper_dec": 8_142_240, "decoder": 11_176_772,
                     "f_c": 596_928, "local_context": 1_063_040, "channel_context": 12_035_792}


def test_sd21_state_dict_follows_official_layout(sd21_lfgcm):
    """Every official LFGCM key has a same-shaped twin here (EB names in compressai ≥1.2.7 spelling)."""
    official = {}
    for line in REFERENCE.read_text().splitlines():
        key, shape = line.split("\t")
        if not key.startswith("preprocess_model."):
            continue
        key = key[len("preprocess_model."):].replace(".fushion.", ".fusion.")
        for old, new in (("_matrix", "matrices."), ("_bias", "biases."), ("_factor", "factors.")):
            key = key.replace("entropy_bottleneck." + old, "entropy_bottleneck." + new)
        official[key] = tuple(json.loads(shape))
    ours = {k: tuple(v.shape) for k, v in sd21_lfgcm.state_dict().items()}
    assert set(ours) == set(official)
    # CDF buffers are empty before update() in both; everything else must agree exactly.
    assert {k: s for k, s in ours.items() if s != official[k]} == {}


def test_checkerboard_anchors_are_odd_positions():
    anchor, nonanchor = checkerboard_masks(3, 4, torch.device("cpu"))
    assert anchor.tolist() == [[False, True, False, True], [True, False, True, False], [False, True, False, True]]
    assert torch.equal(nonanchor, ~anchor)


def _random_model(seed=0):
    torch.manual_seed(seed)
    model = LFGCM(get_config("tiny").lfgcm).eval()
    model.update(force=True)
    return model


@pytest.mark.parametrize("hw", [(64, 64), (128, 192), (320, 256)])
def test_coding_round_trip_is_bit_exact(hw):
    model = _random_model()
    h, w = hw
    x, z_g = torch.rand(1, 3, h, w), torch.randn(1, 4, h // 8, w // 8)
    coded = model.compress(x, z_g)
    assert coded["shape"] == (h // 64, w // 64)
    decoded = model.decompress(coded["strings"], coded["shape"])
    assert decoded["z_c"].shape == (1, 4, h // 8, w // 8)
    # The forward pass (rate estimate, training) uses the coder's σ and μ, so it rebuilds the same latents.
    out = model(x, z_g)
    assert torch.equal(out["y_hat"], decoded["y_hat"]) and torch.equal(out["z_hat"], decoded["z_hat"])


def test_training_forward_uses_noise_for_rate_and_ste_for_values():
    model = _random_model().train()
    x, z_g = torch.rand(1, 3, 64, 64), torch.randn(1, 4, 8, 8)
    torch.manual_seed(1)
    a = model(x, z_g)
    torch.manual_seed(2)
    b = model(x, z_g)
    # Values are rounded (deterministic); likelihoods use fresh uniform noise.
    assert torch.equal(a["y_hat"], b["y_hat"])
    assert not torch.equal(a["likelihoods"]["y"], b["likelihoods"]["y"])
    # Straight-through rounding lets gradients reach the encoder from z_c.
    a["z_c"].pow(2).mean().backward()
    assert model.encoder.g_a1[0].conv1.weight.grad.abs().sum() > 0
    assert model.aux_loss().item() > 0


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_forward_codes_the_coders_symbols_on_a_photo(mode):
    """Coding-path parity: the float forward rounds y exactly as the coder does.

    Before the forward used the exact twin's σ/μ, 0.1–0.25 % of this photo's symbols rounded the
    other way (the float networks' μ differs from the integer twin's by up to a grid step).
    """
    model = _random_model()
    x = photo("chelsea", (256, 384))[None]
    torch.manual_seed(3)
    z_g = torch.randn(1, 4, 32, 48)
    coded = model.decompress(**model.compress(x, z_g))
    getattr(model, mode)()
    out = model(x, z_g)
    assert torch.equal(out["y_hat"], coded["y_hat"]) and torch.equal(out["z_hat"], coded["z_hat"])


def test_forward_gradients_reach_the_float_entropy_networks():
    model = _random_model().train()
    x, z_g = torch.rand(1, 3, 64, 64), torch.randn(1, 4, 8, 8)
    out = model(x, z_g)
    (-torch.log2(out["likelihoods"]["y"]).sum()).backward()
    for net in (model.entropy_parameters_anchor[1], model.entropy_parameters_nonanchor[1], model.channel_context[1],
                model.local_context[0], model.hyper_dec):
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_straight_through_helpers_take_coder_values_and_float_gradients():
    v = torch.tensor([0.3, 1.49, -2.51], requires_grad=True)
    grid = torch.tensor([26.0, 130.0, -641.0], dtype=torch.float64)         # 0.1015625, 0.5078125, -2.50390625
    mu = _coder_value(v, grid)
    assert mu.tolist() == [26 / 256, 130 / 256, -641 / 256]
    mean = torch.tensor([0.25, -0.5, 0.125], requires_grad=True)
    y_hat = _round_ste(v, mean)
    assert y_hat.tolist() == [0.25, 1.5, -2.875]                           # round(v - μ) + μ, exactly
    (mu.sum() + 2 * y_hat.sum()).backward()
    assert v.grad.tolist() == [3.0, 3.0, 3.0] and mean.grad is None        # as quantize_ste(v - μ) + μ


"""The LFGCM's optional linear shortcuts (``lfgcm.linear_paths``, the CPU demo presets)."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from diffeic.config import LFGCMConfig, get_config
from diffeic.lfgcm import LFGCM


def _small(linear: bool) -> LFGCM:
    cfg = dataclasses.replace(get_config("tiny").lfgcm, linear_paths=linear)
    torch.manual_seed(0)
    return LFGCM(cfg).eval()


def test_without_the_flag_there_are_no_extra_weights_and_the_config_reads_as_before():
    plain = _small(False)
    assert not any(n.startswith("linear_") for n, _ in plain.named_parameters())
    assert "linear_paths" not in get_config("tiny").to_dict()["lfgcm"]      # same YAML, same fingerprints
    assert get_config("configs/demo2_model.yaml").to_dict()["lfgcm"]["linear_paths"] is True


def test_the_shortcuts_add_exactly_a_strided_conv_of_the_guide_and_a_shuffled_conv_of_y_hat():
    model = _small(True)
    cfg = model.cfg
    x = torch.rand(1, 3, 64, 128)
    z_g = torch.randn(1, cfg.latent_ch, 8, 16)
    with torch.no_grad():
        a = model.linear_analysis
        expected_y = model.encoder(x, z_g) + F.conv2d(z_g, a.weight, a.bias, stride=2)
        assert torch.allclose(model.analyse(x, z_g), expected_y, atol=1e-6)
        # Silence the deep synthesis: what is left is the linear one, computed here by hand.
        last = model.decoder.g_s4
        last.weight.zero_(); last.bias.zero_()
        y_hat = torch.randn(1, cfg.M, 4, 8)
        z_hat = torch.randn(1, cfg.N, 1, 2)
        conv = model.linear_synthesis[0]
        expected = F.pixel_shuffle(F.conv2d(y_hat, conv.weight, conv.bias), 2)
        assert torch.allclose(model.synthesize(y_hat, z_hat), expected, atol=1e-6)
        assert expected.shape == (1, cfg.latent_ch, 8, 16)


def test_the_flag_must_be_a_boolean():
    with pytest.raises(ValueError, match="linear_paths must be true or false"):
        LFGCMConfig(latent_ch=4, enc_mid=(8, 8, 8, 8), N=16, M=32, slices=(16, 16), linear_paths="yes")


def test_the_shortcuts_start_as_a_uniform_quantiser_of_the_latent():
    from diffeic.lfgcm.model import LINEAR_START_STEP as step
    model = _small(True)
    cfg = model.cfg
    x = torch.rand(1, 3, 64, 128)
    z_g = torch.randn(1, cfg.latent_ch, 8, 16) * 3
    with torch.no_grad():
        y = model.analyse(x, z_g)
        # Block (0, 1) of channel 1 sits in y's channel 4*1 + 2*0 + 1 = 5 at position (0, 0), divided by the step.
        assert torch.allclose(y[0, 5], z_g[0, 1, 0::2, 1::2] / step)
        assert torch.count_nonzero(y[:, 4 * cfg.latent_ch:]) == 0
        z_c = model.synthesize(torch.round(y), torch.zeros(1, cfg.N, 1, 2))
    assert torch.allclose(z_c, step * torch.round(z_g / step), atol=1e-5)


def test_the_shortcuts_need_room_for_a_2x2_block_in_y():
    with pytest.raises(ValueError, match="M >= 4 \\* latent_ch"):
        LFGCMConfig(latent_ch=12, enc_mid=(8, 8, 8, 8), N=16, M=32, slices=(16, 16), linear_paths=True)

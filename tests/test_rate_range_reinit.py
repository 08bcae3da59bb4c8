"""Training from a variable-rate checkpoint over another λ range (``build_codec(..., init_from, rate=...)``)."""
import math
import warnings

import pytest
import torch

from diffeic import DiffEICCodec
from diffeic.training.module import build_codec


@pytest.fixture(scope="module")
def vr_folder(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        codec = DiffEICCodec.from_config("tiny_vr")        # λ ∈ [1, 16]: q = log2(16/λ) ∈ [0, 4]
    with torch.no_grad():                                   # distinct gains per level and channel
        g = codec.lfgcm.rate_gains
        g.log_gain.copy_(torch.arange(g.log_gain.numel(), dtype=torch.float32).view_as(g.log_gain) / 100)
        g.log_inverse_gain.copy_(-g.log_gain)
    folder = tmp_path_factory.mktemp("vr")
    codec.save_pretrained(folder)
    return folder, codec


def test_a_narrower_range_keeps_each_lambdas_gain_and_every_other_weight(vr_folder):
    folder, old = vr_folder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new = build_codec("tiny_vr", init_from=str(folder), rate={"lmbda_min": 2.0, "lmbda_max": 8.0, "levels": 3})
    assert new.rate_range == (0.0, 2.0)                     # q' = log2(8/λ)
    g_old, g_new = old.lfgcm.rate_gains, new.lfgcm.rate_gains
    # New level 1 is λ = 4, the old model's q = log2(16/4) = 2: its old level 2 exactly.
    assert torch.allclose(g_new.log_gain[1], g_old.log_gain[2], atol=1e-6)
    # New level 0 is λ = 8, old q = 1: old level 1.  Between levels the old model interpolates log-linearly.
    assert torch.allclose(g_new.log_gain[0], g_old.log_gain[1], atol=1e-6)
    assert torch.allclose(g_new.log_inverse_gain[2], g_old.log_inverse_gain[3], atol=1e-6)
    q = torch.tensor([0.5])                                 # λ = 8·2^-0.5 → old q = 1.5: halfway between levels 1, 2
    expected = 0.5 * (g_old.log_gain[1] + g_old.log_gain[2])
    assert torch.allclose(g_new.gain(q).log()[0, :, 0, 0], expected, atol=1e-5)
    old_state, new_state = old.lfgcm.state_dict(), new.lfgcm.state_dict()
    for k, v in old_state.items():
        if not k.startswith("rate_gains."):
            assert torch.equal(new_state[k], v), k
    assert math.isclose(new.lfgcm.rate_gains.lmbda(0.0), 8.0)


def test_a_range_outside_the_checkpoints_is_refused(vr_folder):
    folder, _ = vr_folder
    with pytest.raises(ValueError, match=r"must lie inside the checkpoint's \[1, 16\]"):
        build_codec("tiny_vr", init_from=str(folder), rate={"lmbda_min": 0.5, "lmbda_max": 8.0, "levels": 3})

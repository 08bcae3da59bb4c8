"""Variable-rate LFGCM (issue 18): gain units, rate parameter in the stream, compress-to-a-size, errors."""
import math
import re

import numpy as np
import pytest
import torch

from diffeic import BitstreamError, DiffEICCodec
from diffeic.bitstream import StreamHeader, pack, unpack
from diffeic.config import DiffEICConfig, RateConfig, get_config
from diffeic.lfgcm.variable_rate import RateGains, check_rate
from diffeic.target_size import TargetTooSmall, fit_to_budget

from conftest import photo
from helpers import lfgcm_forward

RATES = (0.0, 1.0, 2.0, 3.0, 4.0)


@pytest.fixture(scope="module")
def vr_codec():
    return DiffEICCodec.from_config("tiny_vr")


@pytest.fixture(scope="module")
def photos():
    return {"astronaut": photo("astronaut", (128, 128)), "coffee": photo("coffee", (96, 144))}


@pytest.fixture(scope="module")
def sizes(vr_codec, photos):
    """Real stream sizes of each photo at each of RATES."""
    return {name: [len(vr_codec.compress(x, rate=q)) for q in RATES] for name, x in photos.items()}


# ------------------------------------------------------------------ config and gains
def test_presets_and_yaml_round_trip(tmp_path):
    cfg = get_config("tiny_vr")
    assert cfg.name == "tiny_vr" and cfg.lfgcm.rate == RateConfig(1.0, 16.0, 5)
    cfg.to_yaml(tmp_path / "vr.yaml")
    assert DiffEICConfig.from_yaml(tmp_path / "vr.yaml") == cfg
    # A fixed-rate config serialises exactly as before the field existed (same fingerprints).
    assert "rate" not in get_config("tiny").to_dict()["lfgcm"]
    assert DiffEICConfig.from_dict(get_config("tiny").to_dict()).lfgcm.rate is None
    assert get_config("sd21_vr").lfgcm.rate is not None
    with pytest.raises(ValueError, match="lmbda_min < lmbda_max"):
        RateConfig(lmbda_min=4, lmbda_max=2)
    with pytest.raises(ValueError, match="levels"):
        RateConfig(levels=1)


def test_gains_interpolate_geometrically_between_levels():
    gains = RateGains(3, RateConfig(1.0, 16.0, 5))
    with torch.no_grad():
        gains.log_gain.copy_(torch.log(torch.tensor([[1.0, 2, 4], [2, 2, 2], [4, 1, 1], [8, 1, 1], [1, 1, 1]])))
    g = gains.gain(torch.tensor([0.0, 0.5, 1.0, 2.25])).flatten(1)
    expect = torch.tensor([[1.0, 2, 4], [math.sqrt(2), 2, math.sqrt(8)], [2, 2, 2],
                           [4 * 2 ** 0.25, 1, 1]])          # (1-l)·log a + l·log b
    torch.testing.assert_close(g, expect)
    # Initial gains: 1 at q_max (stage-1 model unchanged), halved every 2 units of q below it.
    fresh = RateGains(2, RateConfig())
    torch.testing.assert_close(fresh.gain(torch.tensor([4.0, 2.0, 0.0])).flatten(1),
                               torch.tensor([[1.0, 1.0], [0.5, 0.5], [0.25, 0.25]]))
    torch.testing.assert_close(fresh.inverse_gain(torch.tensor([0.0])).flatten(), torch.tensor([4.0, 4.0]))
    assert fresh.lmbda(0.0) == 16.0 and fresh.lmbda(4.0) == 1.0 and fresh.lmbda(1.5) == pytest.approx(16 / 2 ** 1.5)


def test_fixed_rate_model_is_unchanged_by_the_feature(tiny_codec, vr_codec):
    # Same seed, and the gains draw no random numbers: every other weight equals the fixed model's.
    fixed = tiny_codec.lfgcm.state_dict()
    vr = vr_codec.lfgcm.state_dict()
    assert set(vr) - set(fixed) == {"rate_gains.log_gain", "rate_gains.log_inverse_gain"}
    assert all(torch.equal(fixed[k], vr[k]) for k in fixed if not k.endswith(("_quantized_cdf", "_cdf_length",
                                                                                "_offset", "scale_table")))
    assert tiny_codec.rate_range is None and vr_codec.rate_range == (0.0, 4.0)


# ------------------------------------------------------------------ rate behaviour on photos
def test_rate_rises_with_q_on_photos(sizes):
    """Real coded sizes, not a tautology: the entropy model and coder decide how many bytes a gain costs."""
    for name, s in sizes.items():
        assert all(a < b for a, b in zip(s, s[1:])), (name, s)
        assert s[-1] > 2 * s[0], (name, s)


@pytest.mark.parametrize("q", [0.0, 1.37, 2.1, 4.0])
def test_streams_round_trip_bit_exactly_at_any_rate(vr_codec, photos, q):
    x = photos["coffee"]
    bits = vr_codec.compress(x, rate=q)
    q32 = float(np.float32(q))
    assert DiffEICCodec.inspect(bits)["rate"] == q32 and unpack(bits)[0].version == 2
    coded = lfgcm_forward(vr_codec, x, q32)
    lat = vr_codec.decompress_latents(bits)
    assert torch.equal(lat["y_hat"], coded["y_hat"]) and torch.equal(lat["z_hat"], coded["z_hat"])
    # The decoder synthesises with the stream's q: exactly what the encoder side would.
    torch.testing.assert_close(lat["z_c"], coded["z_c"], rtol=0, atol=0)
    assert vr_codec.compress(x, rate=q) == bits


def test_decoded_image_and_default_rate(vr_codec, photos):
    x = photos["coffee"]
    bits = vr_codec.compress(x)                      # default: the highest rate
    assert DiffEICCodec.inspect(bits)["rate"] == 4.0
    assert vr_codec.decompress(bits, steps=1).shape == x.shape


# ------------------------------------------------------------------ compress to a size
def test_target_size_search_fits_and_lands_close(vr_codec, photos, sizes):
    x = photos["astronaut"]
    lo, hi = sizes["astronaut"][0], sizes["astronaut"][-1]
    for frac in (0.2, 0.55, 0.9):
        target = int(lo + frac * (hi - lo))
        bits = vr_codec.compress(x, target_bytes=target)
        assert target * 0.95 <= len(bits) <= target, (target, len(bits))
        q = DiffEICCodec.inspect(bits)["rate"]
        assert vr_codec.compress(x, rate=q) == bits        # the stream is exactly the one at its q
    h, w = x.shape[-2:]
    bits = vr_codec.compress(x, target_bpp=8 * (lo + hi) / 2 / (h * w))
    assert 0.95 * (lo + hi) / 2 <= len(bits) <= (lo + hi) / 2
    # Above the top rate: the top rate; below the bottom: a clear refusal.
    assert DiffEICCodec.inspect(vr_codec.compress(x, target_bytes=hi + 100))["rate"] == 4.0
    with pytest.raises(TargetTooSmall, match=rf"below this model's lowest rate: at q=0 the stream takes {lo} bytes"):
        vr_codec.compress(x, target_bytes=lo - 1)
    # The image's size as every message writes it: width first, labelled (coffee is 96 high, 144 wide).
    with pytest.raises(TargetTooSmall, match=r"for an image of 144x96 \(width x height\)\)$"):
        vr_codec.compress(photos["coffee"], target_bytes=sizes["coffee"][0] - 1)


def test_bisection_never_exceeds_the_budget_on_a_bumpy_size_curve():
    # Size rises with q but not monotonically (bumps of 3 bytes), as a real coder's can.
    def encode(q):
        calls.append(q)
        return bytes(int(100 + 50 * q + 3 * math.sin(40 * q)))

    for budget in range(103, 300, 7):
        calls = []
        q, bits = fit_to_budget(encode, 0.0, 4.0, budget)
        assert len(bits) <= budget and len(bits) >= budget - 8, (budget, len(bits))
        assert bits == encode(q) and len(calls) <= 12
    with pytest.raises(TargetTooSmall):
        fit_to_budget(encode, 0.0, 4.0, 90)


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("bad,err,msg", [
    (float("nan"), ValueError, "finite"), (float("inf"), ValueError, "finite"), (-0.5, ValueError, "outside"),
    (4.001, ValueError, r"outside this model's range \[0, 4\]"), ("2", TypeError, "real number"),
    (True, TypeError, "real number"), (torch.tensor([1.0, 2.0]), TypeError, "real number")])
def test_bad_rates_are_refused_clearly(vr_codec, photos, bad, err, msg):
    with pytest.raises(err, match=msg):
        vr_codec.compress(photos["coffee"], rate=bad)


def test_rate_options_need_a_variable_rate_model_and_one_choice(tiny_codec, vr_codec, photos):
    x = photos["coffee"]
    for kw in ({"rate": 1.0}, {"target_bpp": 0.1}, {"target_bytes": 500}):
        with pytest.raises(ValueError, match="needs a variable-rate model.*fixed-rate"):
            tiny_codec.compress(x, **kw)
    with pytest.raises(ValueError, match="at most one of"):
        vr_codec.compress(x, rate=1.0, target_bytes=100)
    with pytest.raises(ValueError, match=r"target_bpp = -0.1: must be a finite number in \(0, 1024\]"):
        vr_codec.compress(x, target_bpp=-0.1)
    with pytest.raises(ValueError, match=r"target_bytes = 0: must be an integer in \[1, "):
        vr_codec.compress(x, target_bytes=0)
    with pytest.raises(TypeError, match="integer"):
        vr_codec.compress(x, target_bytes=100.5)
    with pytest.raises(ValueError, match="fixed-rate"):
        tiny_codec.lfgcm.synthesize(torch.zeros(1, 32, 2, 2), torch.zeros(1, 16, 1, 1), 2.0)
    with pytest.raises(ValueError, match="variable-rate: pass rate"):
        vr_codec.lfgcm.synthesize(torch.zeros(1, 32, 2, 2), torch.zeros(1, 16, 1, 1))
    assert check_rate(np.float64(2.5), get_config("tiny_vr").lfgcm.rate) == 2.5


def test_streams_with_a_wrong_or_missing_rate_are_refused(tiny_codec, vr_codec, photos):
    bits = vr_codec.compress(photos["coffee"], rate=2.0)
    header, payload = unpack(bits)
    with pytest.raises(BitstreamError, match="made by model"):
        tiny_codec.decompress(bits)
    for rate, msg in ((7.5, "outside this model's range"), (None, "no rate parameter")):
        forged = pack(StreamHeader(header.fingerprint, header.height, header.width, rate=rate), payload)
        with pytest.raises(BitstreamError, match=f"corrupt header: .*{msg}"):
            vr_codec.decompress(forged)


# ------------------------------------------------------------------ training
def test_training_loss_uses_the_sampled_rate(vr_codec, tiny_codec):
    from diffeic.diffusion.sampling import training_scheduler
    from diffeic.training import training_losses

    sched = training_scheduler(vr_codec.config.schedule)
    x = photo("coffee", (64, 64))[None]
    t, noise = torch.tensor([500]), torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    vr_codec.lfgcm.train()
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            losses = training_losses(vr_codec, sched, x, 1.0, t=t, noise=noise, rate=1.5)
            drawn = training_losses(vr_codec, sched, x, 1.0, t=t, noise=noise)
    finally:
        vr_codec.lfgcm.eval()
    assert float(losses["rate"]) == 1.5
    expect = losses["l_ne"] + 16 / 2 ** 1.5 * losses["bpp"] + 2.0 * losses["l_sa"]     # λ = 16·2^-q
    torch.testing.assert_close(losses["loss"], expect)
    assert 0.0 <= float(drawn["rate"]) <= 4.0 and float(drawn["rate"]) != 1.5
    with pytest.raises(ValueError, match="fixed-rate"):
        training_losses(tiny_codec, sched, x, 1.0, t=t, noise=noise, rate=1.0)


def test_stage_two_from_a_fixed_rate_export_starts_at_that_model(tmp_path, tiny_codec):
    from diffeic.training import DiffEICModule
    from diffeic.training.module import build_codec

    folder = tiny_codec.save_pretrained(tmp_path / "stage1")
    codec = build_codec("tiny_vr", init_from=str(folder))
    assert codec.rate_range == (0.0, 4.0) and codec.config.name == "tiny_vr"
    # Gains start at 1 for q_max: the variable-rate model codes the top rate exactly as stage 1 did.
    x = photo("coffee", (64, 96))
    assert unpack(codec.compress(x, rate=4.0))[1] == unpack(tiny_codec.compress(x))[1]
    assert unpack(codec.compress(x, rate=2.0))[1] != unpack(tiny_codec.compress(x))[1]
    with pytest.raises(ValueError, match="variable-rate model.*leave lmbda unset"):
        DiffEICModule("tiny_vr", lmbda=4.0)


# ------------------------------------------------------------------ command line and eval
def test_cli_rate_options_and_info(tmp_path, capsys, vr_codec, monkeypatch):
    from PIL import Image

    from diffeic.cli import main

    monkeypatch.setattr(DiffEICCodec, "from_config", classmethod(
        lambda cls, config="tiny": vr_codec if config == "tiny_vr" else _build(config)))
    img = tmp_path / "coffee.png"
    Image.fromarray((photo("coffee", (96, 144)) * 255).round().byte().permute(1, 2, 0).numpy()).save(img)
    assert main(["compress", str(img), "--model", "tiny_vr", "--rate", "2.5", "-o", str(tmp_path / "a.deic")]) == 0
    assert "rate 2.5" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "a.deic")]) == 0
    assert re.search(r"rate q\s+2\.5000", capsys.readouterr().out)
    assert main(["compress", str(img), "--model", "tiny_vr", "--target-bytes", "400", "-o",
                 str(tmp_path / "b.deic")]) == 0
    assert (tmp_path / "b.deic").stat().st_size <= 400
    assert main(["compress", str(img), "--model", "tiny_vr", "--rate", "9", "-o", str(tmp_path / "c.deic")]) == 1
    assert "outside this model's range [0, 4]" in capsys.readouterr().err
    assert not (tmp_path / "c.deic").exists()
    assert main(["compress", str(img), "--rate", "1", "--target-bpp", "0.1"]) == 2      # argparse: not allowed with


def _build(config):
    raise AssertionError(f"unexpected model build {config!r}")


def test_eval_expands_rate_points(vr_codec, tiny_codec):
    from diffeic.evaluation.runner import _rate_points

    assert _rate_points(vr_codec, "tiny_vr", [0, 2.5]) == [("tiny_vr,rate=0", 0.0), ("tiny_vr,rate=2.5", 2.5)]
    assert _rate_points(tiny_codec, "tiny", [0, 2.5]) == [("tiny", None)]
    # No --rates: the model's five trained levels, λ = 16, 8, 4, 2, 1.
    assert _rate_points(vr_codec, "tiny_vr", None) == [(f"tiny_vr,rate={q}", float(q)) for q in range(5)]
    with pytest.raises(ValueError, match="outside"):
        _rate_points(vr_codec, "tiny_vr", [5])


def test_training_sets_a_variable_rate_range_and_refuses_it_for_fixed_rate():
    from diffeic.training.module import build_codec

    codec = build_codec("tiny_vr", rate={"lmbda_min": 1.0, "lmbda_max": 256.0, "levels": 5})
    assert codec.rate_range == (0.0, 8.0) and codec.lfgcm.rate_gains.levels() == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert float(codec.lfgcm.rate_gains.lmbda(torch.tensor(2.0))) == 64.0
    with pytest.raises(ValueError, match="needs a variable-rate preset"):
        build_codec("tiny", rate={"lmbda_max": 256.0})
    with pytest.raises(ValueError, match="allowed keys are lmbda_min, lmbda_max, levels"):
        build_codec("tiny_vr", rate={"lambda_max": 256.0})

"""The HiFiC and refinement codec families: streams, family ids, loading, losses, samplers, sizes."""

import pytest
import torch

from conftest import photo
from diffeic import BitstreamError, load_codec
from diffeic.hific import HiFiCCodec
from diffeic.refine import RefineCodec


@pytest.fixture(scope="module")
def image():
    return photo("astronaut", (40, 60))        # padded to 64×64: cheap


# ---------------------------------------------------------------- streams

@pytest.mark.parametrize("name", ["hific", "refine"])
def test_stream_round_trip_is_exact_and_deterministic(name, request, image):
    codec = request.getfixturevalue(name)
    bits = codec.compress(image)
    info = codec.inspect(bits)
    assert (info["family"], info["height"], info["width"], info["version"]) == (codec.family, 40, 60, 2)
    # The latent the decoder rebuilds is exactly the encoder's (both from the exact integer path).
    y = codec.model.encoder(torch.nn.functional.pad(image[None], (0, 4, 0, 24), mode="replicate"))
    _, y_sent = codec.model.hyperprior.compress(y)
    latents = codec.decompress_latents(bits)
    header, y_hat = latents["header"], latents["y_hat"]
    assert torch.equal(y_hat, y_sent)
    a = codec.decompress(bits, steps=1) if name == "refine" else codec.decompress(bits)
    b = codec.decompress(bits, steps=1) if name == "refine" else codec.decompress(bits)
    assert a.shape == (3, 40, 60) and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    # The file is the coder's real output: within a few bytes of the entropy model's estimate.
    assert info["payload_bytes"] <= codec.estimate_bits(image) / 8 * 1.05 + 16


def test_each_family_refuses_the_others_streams_by_name(hific, refine, tiny_codec, image):
    h_bits, r_bits = hific.compress(image), refine.compress(image)
    d_bits = tiny_codec.compress(photo("astronaut", (64, 64)))
    with pytest.raises(BitstreamError, match="'diffeic' codec"):
        hific.decompress(d_bits)
    with pytest.raises(BitstreamError, match="'diffeic' codec"):
        refine.decompress(d_bits)
    with pytest.raises(BitstreamError, match="'refine' codec, not by a 'hific'"):
        hific.decompress(r_bits)
    with pytest.raises(BitstreamError, match="'hific' codec, not by a 'refine'"):
        refine.decompress(h_bits)
    with pytest.raises(BitstreamError, match="'hific' codec, not by a 'diffeic'"):
        tiny_codec.decompress(h_bits)


def test_corrupt_streams_raise_bitstream_error(hific, image):
    bits = bytearray(hific.compress(image))
    bits[len(bits) // 2] ^= 0x10
    with pytest.raises(BitstreamError, match="checksum"):
        hific.decompress(bytes(bits))
    with pytest.raises(BitstreamError, match="truncated|checksum"):
        hific.decompress(bytes(bits[:9]))


def test_decode_settings_live_in_the_stream_for_the_refiner_only(hific, refine, image):
    bits = refine.compress(image, steps=1, seed=7)
    assert (refine.inspect(bits)["steps"], refine.inspect(bits)["seed"]) == (1, 7)
    first = refine.decompress(bits)
    assert torch.equal(first, refine.decompress(bits, steps=1, seed=7))
    assert not torch.equal(first, refine.decompress(bits, seed=8))
    # steps=0: the MSE reconstruction itself (what the rate pays for), without the refiner.
    y_hat = refine.decompress_latents(bits)["y_hat"]
    mse_image = refine.model.decoder(y_hat).clamp(0, 1)[0, :, :40, :60]
    assert torch.equal(refine.decompress(bits, steps=0), mse_image)
    assert refine.inspect(refine.compress(image, steps=refine.config.steps))["steps"] is None   # defaults not written
    with pytest.raises(ValueError, match="takes no 'steps'"):
        hific.compress(image, steps=2)
    with pytest.raises(ValueError, match=r"steps = 0: must be an integer in \[1, 10000\]"):
        refine.compress(image, steps=0)
    with pytest.raises(TypeError, match="floating-point"):
        hific.compress((image * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        refine.compress(image * float("nan"))


# ---------------------------------------------------------------- loading

def test_load_codec_by_preset_and_folder(hific, refine, image, tmp_path):
    assert type(load_codec("hific_tiny")) is HiFiCCodec and type(load_codec("refine_tiny")) is RefineCodec
    assert load_codec("hific_tiny").fingerprint() == hific.fingerprint()       # deterministic initialisation
    for codec in (hific, refine):
        folder = codec.save_pretrained(tmp_path / codec.family, note="test")
        loaded = load_codec(folder)
        assert type(loaded) is type(codec) and loaded.fingerprint() == codec.fingerprint()
        bits = codec.compress(image)
        kw = {"steps": 1} if codec.family == "refine" else {}
        assert torch.equal(loaded.decompress(bits, **kw), codec.decompress(bits, **kw))
    with pytest.raises(ValueError, match="holds a 'hific' model, not a 'refine'"):
        RefineCodec.from_pretrained(tmp_path / "hific")
    with pytest.raises(ValueError, match="neither a preset"):
        load_codec(tmp_path / "missing")


def test_one_loader_for_every_kind_of_model_spec(tmp_path, tiny_codec):
    from diffeic import cli
    from diffeic.codecs import model_kind
    from diffeic.config import get_config

    yaml_file = tmp_path / "mine.yaml"
    get_config("tiny").to_yaml(yaml_file)
    assert [model_kind(s) for s in ("tiny", "hific_tiny", yaml_file, "tiny-trained", tmp_path, "user/repo")] == \
        ["preset", "preset", "config", "checkpoint", "checkpoint", "checkpoint"]
    assert load_codec(yaml_file).fingerprint() == tiny_codec.fingerprint()        # same config, same init
    shipped = load_codec("tiny-trained")
    assert shipped.is_trained and shipped.config.lfgcm.rate is not None
    # One refusal, worded once, for the library, the diffeic command and eval.py.
    with pytest.raises(ValueError, match="'tinyy': neither a preset") as err:
        load_codec("tinyy")
    with pytest.raises(cli.CLIError) as cli_err:
        cli._model_kind("tinyy")
    assert str(cli_err.value) == f"--model {err.value}"      # eval.py's wording: test_api_conventions


@pytest.mark.parametrize("name,module", [("hific_tiny", "HiFiCModule"), ("refine_tiny", "RefineModule")])
def test_train_py_configs_name_and_validate_their_module(name, module, capsys):
    from diffeic.training.cli import main

    with pytest.raises(SystemExit) as done:      # --print_config parses and checks everything, then exits
        main(["fit", "--config", f"configs/{name}.yaml", "--print_config"])
    assert done.value.code in (0, None)
    assert f"class_path: diffeic.training.{name.split('_')[0]}.{module}" in capsys.readouterr().out


# ---------------------------------------------------------------- sizes

def _hific_count(N=220, base=60, blocks=9, hyper=320, disc=64):
    """Parameter counts from the paper's architecture (Fig. 2 and the authors' release), by hand."""
    conv = lambda cin, cout, k: cin * cout * k * k + cout            # noqa: E731
    norm = lambda c: 2 * c                                            # ChannelNorm γ, β  # noqa: E731
    widths = [base * 2 ** i for i in range(5)]                       # 60 … 960
    enc = conv(3, base, 7) + norm(base) + sum(conv(a, b, 3) + norm(b) for a, b in zip(widths, widths[1:])) \
        + conv(widths[-1], N, 3)
    gen = norm(N) + conv(N, widths[-1], 3) + norm(widths[-1]) + blocks * 2 * (conv(960, 960, 3) + norm(960)) \
        + sum(conv(b, a, 3) + norm(a) for a, b in zip(widths, widths[1:])) + conv(base, 3, 7)
    synth = 2 * conv(hyper, hyper, 5) + conv(hyper, N, 3)
    hyperprior = conv(N, hyper, 3) + 2 * conv(hyper, hyper, 5) + 2 * synth
    # compressai's EntropyBottleneck per channel, filters (3,3,3,3): matrices 3+9+9+9+3, biases 3+3+3+3+1,
    # factors 3+3+3+3, quantiles 3.  (The authors' release uses tfc's default filters (3,3,3): 46 per channel,
    # 4,800 parameters fewer in all, 0.003 % of the codec.)
    eb = hyper * (33 + 13 + 12 + 3)
    d = conv(N, 12, 3) + conv(15, disc, 4) + conv(64, 128, 4) + conv(128, 256, 4) + conv(256, 512, 4) + conv(512, 1, 4)
    return enc, gen, hyperprior + eb, d


def test_hific_preset_has_the_papers_size():
    from diffeic.hific.config import PRESETS
    from diffeic.hific.discriminator import Discriminator
    from diffeic.hific.model import HiFiCModel

    with torch.device("meta"):
        model, disc = HiFiCModel(PRESETS["hific"]()), Discriminator(PRESETS["hific"]())
    count = lambda m: sum(p.numel() for p in m.parameters())          # noqa: E731
    enc, gen, hyper, d = _hific_count()
    assert (count(model.encoder), count(model.generator), count(model.hyperprior)) == (enc, gen, hyper)
    assert count(disc) == d
    assert count(model) == 181_481_103          # ≈181.5 M for E, G and P together


# ---------------------------------------------------------------- HiFiC losses

def test_rate_target_schedule_switches_lambda_around_the_target():
    from diffeic.hific.losses import RateTargetSchedule

    s = RateTargetSchedule(target_bpp=0.14, lambda_a=2.0, lambda_b=2 ** -4, schedule_steps=10)
    assert s.target(0) == pytest.approx(0.20) and s.target(10) == pytest.approx(0.14)
    assert (s.weight(0.19, 0), s.weight(0.21, 0)) == (2 * 2 ** -4, 4.0)      # warm-up: λ doubled, r_t × 0.2/0.14
    assert (s.weight(0.13, 10), s.weight(0.15, 10)) == (2 ** -4, 2.0)
    with pytest.raises(ValueError, match="lambda_a > lambda_b"):
        RateTargetSchedule(lambda_a=0.1, lambda_b=0.2)


@pytest.fixture(scope="module")
def hific_module():
    from diffeic.training.hific import HiFiCModule

    with pytest.warns(RuntimeWarning, match="LPIPS and DISTS unavailable"):
        return HiFiCModule(preset="hific_tiny", perceptual="auto", seed=0)


def test_perceptual_fallback_is_named_and_behaves(hific_module):
    perceptual = hific_module.perceptual
    assert hific_module.perceptual_name == "ms_ssim"    # no AlexNet weights offline → 1 − (MS-)SSIM, never random-LPIPS
    x = photo("coffee", (64, 64))[None]
    assert perceptual(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert perceptual(x.flip(-1), x).item() > 0.1


def test_every_hific_loss_term_reaches_what_it_should(hific_module):
    module = hific_module
    x = photo("coffee", (64, 64))[None]
    model, disc = module.codec.model, module.discriminator
    model.train()
    torch.manual_seed(0)
    out = model(x)
    losses = module.compute_losses(x, out, gan=True)
    assert {"bpp", "mse", "perceptual", "g_gan", "loss"} <= set(losses)
    hp = module.hparams
    expected = (losses["lambda"] * losses["bpp"] + hp.k_m * losses["mse"] + hp.k_p * losses["perceptual"]
                + hp.beta * losses["g_gan"])
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-6)

    def grads(term, params):
        model.zero_grad(set_to_none=True)
        disc.zero_grad(set_to_none=True)
        term.backward(retain_graph=True)
        return [p.grad for p in params]

    gen = list(model.generator.parameters())
    # The GAN term moves the generator (and never the discriminator, which it reads frozen).
    assert any(g is not None and g.abs().sum() > 0 for g in grads(losses["g_gan"], gen))
    assert all(g is None for g in grads(losses["g_gan"], disc.parameters()))
    # The rate term trains the encoder and the hyperprior, not the generator.
    assert all(g is None for g in grads(losses["bpp"], gen))
    assert any(g is not None and g.abs().sum() > 0 for g in grads(losses["bpp"], model.encoder.parameters()))
    # The discriminator sees ŷ: its output depends on the latent, and its loss trains the latent branch.
    y_hat = out["y_hat"].detach()
    assert not torch.allclose(disc(x, y_hat), disc(x, y_hat + 1.0))
    d_loss = module.discriminator_loss(x, out["x_hat"], out["y_hat"])
    assert any(g is not None and g.abs().sum() > 0 for g in grads(d_loss, disc.scales[0].latent.parameters()))
    assert all(g is None for g in grads(d_loss, gen))          # D's loss never reaches G
    model.zero_grad(set_to_none=True)
    disc.zero_grad(set_to_none=True)
    model.eval()


# ---------------------------------------------------------------- refiner

def test_shifted_schedule_endpoints():
    from diffeic.refine.sampling import ShiftedCosineSchedule

    s = ShiftedCosineSchedule(logsnr_min=-10.0, logsnr_max=10.0, shift=2.0)
    lam = s.logsnr(torch.tensor([0.0, 1.0]))
    assert lam.tolist() == pytest.approx([12.0, -8.0], abs=1e-4)      # the cosine span, 2 nats less noise
    alpha, sigma = s.alpha_sigma(torch.tensor([0.5]))
    assert (alpha ** 2 + sigma ** 2).item() == pytest.approx(1.0)
    assert (alpha ** 2 / sigma ** 2).log().item() == pytest.approx(2.0, abs=1e-5)   # logSNR(½) = 0 + shift


def test_samplers_reach_the_target_with_an_oracle_refiner():
    from diffeic.refine.sampling import ShiftedCosineSchedule, sample_diffusion, sample_flow

    target = torch.rand(1, 3, 8, 8) * 2 - 1
    cond = torch.zeros_like(target)
    s = ShiftedCosineSchedule(-10.0, 10.0, 2.0)

    def oracle_v(z, c, t):          # the v that makes x̂0 = target exactly
        a, sg = (v.view(-1, 1, 1, 1) for v in s.alpha_sigma(t))
        return (a * z - target) / sg

    def oracle_flow(x, c, t):       # the straight-line velocity from the current point to the target
        return (target - x) / (1 - t).view(-1, 1, 1, 1)

    g = torch.Generator().manual_seed(0)
    assert torch.allclose(sample_diffusion(oracle_v, s, cond, 5, g), target, atol=1e-5)
    assert torch.allclose(sample_flow(oracle_flow, cond, 3, 0.1, g), target, atol=1e-5)


def test_refiner_loss_never_reaches_the_autoencoder(refine):
    from diffeic.refine.model import RefineModel

    model = RefineModel(refine.config)
    x = photo("coffee", (64, 64))[None]
    out = model(x)
    model.refiner_loss(x, out["x_mse"]).backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.decoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.refiner.parameters())


# ---------------------------------------------------------------- the command line and eval

def test_cli_compresses_and_decompresses_with_another_family(tmp_path, capsys):
    from PIL import Image

    from diffeic.cli import main

    src = tmp_path / "photo.png"
    Image.fromarray((photo("coffee", (40, 60)).permute(1, 2, 0) * 255).round().byte().numpy()).save(src)
    assert main(["compress", str(src), "-o", str(tmp_path / "p.deic"), "--model", "refine_tiny", "--steps", "1"]) == 0
    assert main(["info", str(tmp_path / "p.deic"), "--json"]) == 0
    assert '"family": "refine"' in capsys.readouterr().out
    assert main(["decompress", str(tmp_path / "p.deic"), "-o", str(tmp_path / "p.png"), "--model", "refine_tiny"]) == 0
    assert "refine sampler, 1 step, seed 0" in capsys.readouterr().out
    assert Image.open(tmp_path / "p.png").size == (60, 40)
    # The wrong family: one line naming the family that made the stream, exit 1.
    assert main(["decompress", str(tmp_path / "p.deic"), "-o", str(tmp_path / "q.png"), "--model", "hific_tiny"]) == 1
    assert "'refine' codec" in capsys.readouterr().err


def test_eval_loads_other_families_with_their_settings():
    from diffeic.evaluation import runner

    hific, refine = runner._load_models(runner.EvalConfig(models=["hific_tiny", "refine_tiny"]), "cpu")
    assert (type(hific.codec).__name__, hific.setting, hific.point) == ("HiFiCCodec", "deterministic", "hific_tiny")
    assert (refine.setting, refine.point, refine.trained) == ("steps=4;seed=0+index", "refine_tiny", False)
    assert "untrained" in refine.label
    (refine,) = runner._load_models(runner.EvalConfig(models=["refine_tiny"], steps=2), "cpu")
    assert (refine.setting, refine.point, refine.steps) == ("steps=2;seed=0+index", "refine_tiny,steps=2", 2)
    with pytest.raises(ValueError, match="do not apply to hific_tiny"):
        runner._load_models(runner.EvalConfig(models=["hific_tiny"], seed=3), "cpu")

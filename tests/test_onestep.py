"""One-step decoding (issue #19): the mode, its checkpoints and refusals, its training stage (tiny preset, CPU)."""
import copy

import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

from diffeic import BitstreamError, DiffEICCodec
from diffeic.bitstream import StreamHeader, pack, unpack
from diffeic.codecs.diffeic import ONESTEP_FILE
from diffeic.diffusion.onestep import OneStepConfig, OneStepDecoder
from diffeic.diffusion.sampling import alphas_cumprod
from diffeic.training.onestep import OneStepModule, PatchDiscriminator, one_step_losses
from diffeic.netweights import ms_ssim_loss, perceptual_loss

from conftest import photo


@pytest.fixture(scope="module")
def codec():
    return DiffEICCodec.from_config("tiny")


@pytest.fixture(scope="module")
def image():
    return photo("chelsea", (70, 90))


def _reference_one_step(codec, z_c, config=OneStepConfig(), noise=None):
    """Independent reference: the controlled UNet at t*, ε → x̂_0 by hand, VAE decode."""
    a = float(alphas_cumprod(codec.config.schedule)[config.timestep])
    z_in = z_c if noise is None else a ** 0.5 * z_c + (1 - a) ** 0.5 * noise
    context = codec.backbone.text_embedding.expand(z_c.shape[0], -1, -1)
    t = torch.full((z_c.shape[0],), config.timestep)
    with torch.no_grad():
        eps = codec.control(codec.backbone.unet, z_in, t, context, z_c)
        return codec.backbone.decode((z_in - (1 - a) ** 0.5 * eps) / a ** 0.5)


def test_sampler_id_4_is_onestep_in_the_container():
    bits = pack(StreamHeader(fingerprint="00112233", height=5, width=7, sampler="onestep"), b"xy")
    assert bits[3] == 1 and bits[10] == 4          # flags: sampler present; the id byte after the two varints
    assert unpack(bits)[0].sampler == "onestep"


def test_onestep_round_trips_real_streams_with_one_network_call(codec, image):
    bits = codec.compress(image, sampler="onestep")
    assert DiffEICCodec.inspect(bits)["sampler"] == "onestep"
    calls = []
    hook = codec.control.register_forward_hook(lambda *a: calls.append(1))
    try:
        x_hat = codec.decompress(bits)
    finally:
        hook.remove()
    assert len(calls) == 1 and x_hat.shape == image.shape
    z_c = codec.decompress_latents(bits)["z_c"]
    ref = _reference_one_step(codec, z_c)[0, :, :70, :90]
    torch.testing.assert_close(x_hat, ref, rtol=0, atol=1e-5)
    # A stream written for another sampler decodes one-step on request, identically.
    torch.testing.assert_close(codec.decompress(codec.compress(image), sampler="onestep"), x_hat, rtol=0, atol=0)
    assert not torch.allclose(codec.decompress(bits, sampler="ddpm"), x_hat, atol=1e-3)
    batch = codec.decompress_batch([bits, bits])
    torch.testing.assert_close(batch[1], x_hat, rtol=0, atol=1e-5)


def test_noised_input_is_deterministic_for_a_seed(image):
    codec = DiffEICCodec.from_config("tiny")
    cfg = OneStepConfig(input="noised")
    codec.onestep = OneStepDecoder(codec.control, cfg, codec.config.schedule)
    bits = codec.compress(image, sampler="onestep", seed=7)
    a, b = codec.decompress(bits), codec.decompress(bits)
    assert torch.equal(a, b)
    assert not torch.allclose(codec.decompress(bits, seed=8), a, atol=1e-4)
    z_c = codec.decompress_latents(bits)["z_c"]
    noise = torch.randn(z_c.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, _reference_one_step(codec, z_c, cfg, noise)[0, :, :70, :90], rtol=0, atol=1e-5)


def test_only_the_content_input_decodes_without_noise_so_eval_gives_it_one_seed(image):
    from diffeic.evaluation.runner import EvalConfig, _load_models

    codec = DiffEICCodec.from_config("tiny")
    assert codec.draws_noise("ddpm") and codec.draws_noise("fewstep") and not codec.draws_noise("onestep")
    bits = codec.compress(image, sampler="onestep", seed=7)
    assert torch.equal(codec.decompress(bits, seed=7), codec.decompress(bits, seed=8))   # the seed is not used
    codec.onestep = OneStepDecoder(codec.control, OneStepConfig(input="noised"), codec.config.schedule)
    assert codec.draws_noise("onestep")
    (one,), (several,) = (_load_models(EvalConfig(models=["tiny"], sampler=s, seeds=3), "cpu")
                          for s in ("onestep", "ddpm"))
    assert (one.seed, one.setting) == (None, "sampler=onestep;steps=1;deterministic")
    assert (several.seed, several.setting) == (231, "sampler=ddpm;steps=4;seed=231+index")


def test_x0_prediction_reads_the_output_as_the_latent(codec):
    z_c = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    dec = OneStepDecoder(codec.control, OneStepConfig(prediction="x0", timestep=999))
    out = dec.predict(lambda z, t: (z * 2 + t[:, None, None, None]), z_c)
    torch.testing.assert_close(out, z_c * 2 + 999)


def test_bad_one_step_settings_are_named(codec, image):
    for bad, match in (({"input": "noise"}, "input"), ({"prediction": "v"}, "prediction"),
                       ({"timestep": -1}, "timestep"), ({"timestep": True}, "timestep")):
        with pytest.raises(ValueError, match=match):
            OneStepConfig(**bad)
    with pytest.raises(ValueError, match="outside 0..999"):
        OneStepDecoder(codec.control, OneStepConfig(timestep=1000))
    with pytest.raises(ValueError, match="exactly one network evaluation"):
        codec.compress(image, sampler="onestep", steps=4)


def _trained_base(tmp_path, codec):
    base = copy.deepcopy(codec)
    base.is_trained = True
    return DiffEICCodec.from_pretrained(base.save_pretrained(tmp_path / "base"))


def test_trained_checkpoint_without_one_step_weights_refuses(tmp_path, codec, image):
    loaded = _trained_base(tmp_path, codec)
    assert loaded.onestep is None and loaded.fingerprint() == codec.fingerprint()
    bits = codec.compress(image, sampler="onestep")          # same model: the stream reaches the one-step check
    with pytest.raises(BitstreamError, match="asks for one-step decoding.*no trained one-step decoder"):
        loaded.decompress(bits)
    with pytest.raises(BitstreamError, match="no trained one-step decoder"):
        loaded.decompress_batch([bits])
    with pytest.raises(ValueError, match="train.py fit --config configs/tiny_onestep.yaml") as err:
        loaded.compress(image, sampler="onestep")
    assert not isinstance(err.value, BitstreamError)         # the caller's choice, not the stream's fault
    with pytest.raises(ValueError, match="no trained one-step decoder"):
        loaded.decompress(codec.compress(image), sampler="onestep")
    assert loaded.decompress(bits, sampler="ddpm").shape == image.shape   # other samplers still work


def test_exported_one_step_checkpoint_decodes_and_keeps_the_base_streams(tmp_path, codec, image):
    base = _trained_base(tmp_path, codec)
    module = OneStepModule(str(tmp_path / "base"), vae_checkpointing=False, perceptual="none")
    with torch.no_grad():                                      # stand-in for training: move the one-step weights
        module.codec.onestep.control.dec_zero_convs[0].bias.add_(0.05)
    folder = module.export(tmp_path / "os")
    meta = yaml.safe_load((folder / "config.yaml").read_text())
    assert meta["onestep"] == {"timestep": 299, "input": "content", "prediction": "eps", "trained": True}
    assert meta["trained"] is True and meta["init_from"] == str(tmp_path / "base")
    loaded = DiffEICCodec.from_pretrained(folder)
    assert loaded.onestep.trained and loaded.fingerprint() == base.fingerprint()
    bits = loaded.compress(image, sampler="onestep")
    x_hat = loaded.decompress(bits)
    z_c = loaded.decompress_latents(bits)["z_c"]
    plain = _reference_one_step(loaded, z_c)[0, :, :70, :90]       # the base control: a different image
    assert (x_hat - plain).abs().max() > 1e-4
    torch.testing.assert_close(module.codec.onestep.control.state_dict()["dec_zero_convs.0.bias"],
                               loaded.onestep.control.state_dict()["dec_zero_convs.0.bias"])
    # Streams of the base model decode unchanged with the multi-step sampler; the base refuses one-step streams.
    old = base.compress(image)
    torch.testing.assert_close(loaded.decompress(old), base.decompress(old), rtol=0, atol=0)
    with pytest.raises(BitstreamError, match="one-step"):
        base.decompress(bits)
    (folder / ONESTEP_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=ONESTEP_FILE):
        DiffEICCodec.from_pretrained(folder)


def test_fast_options_apply_to_the_one_step_path(image):
    codec = DiffEICCodec.from_config("tiny")
    bits = codec.compress(image, sampler="onestep")
    plain = codec.decompress(bits)
    codec.optimize(channels_last=True, cuda_graphs=True)       # graphs fall back to eager off CUDA
    assert codec.one_step_fast_decoder().options.channels_last
    torch.testing.assert_close(codec.decompress(bits), plain, rtol=0, atol=1e-4)
    codec.optimize(dtype="bf16")
    assert (codec.decompress(bits) - plain).abs().mean() < 0.05


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_one_step_cuda_graph_matches_eager(image):
    codec = DiffEICCodec.from_config("tiny").to("cuda")
    bits = codec.compress(image.cuda(), sampler="onestep")
    eager = codec.decompress(bits)
    codec.optimize(cuda_graphs=True)
    torch.testing.assert_close(codec.decompress(bits), eager, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- training

def _batch():
    return torch.stack([photo(n, (64, 64)) for n in ("astronaut", "rocket")])


def test_training_lowers_the_loss_and_touches_only_the_one_step_weights():
    torch.manual_seed(0)
    module = OneStepModule("tiny", lr=2e-3, seed=0, perceptual="ms_ssim", perceptual_weight=0.2,
                           vae_checkpointing=True)          # checkpointing on: exercised, same gradients
    x = _batch()
    frozen = {k: v.clone() for k, v in module.codec.state_dict().items() if not k.startswith("onestep.")}

    def held_loss():
        with torch.no_grad():
            return float(module.compute_losses(x)["loss"])

    before = held_loss()
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=30, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, DataLoader(TensorDataset(x), batch_size=2, collate_fn=lambda b: torch.stack([i[0] for i in b])))
    after = held_loss()
    assert module.skipped_total == 0
    assert after < 0.8 * before, (before, after)
    for k, v in module.codec.state_dict().items():
        if k in frozen:
            assert torch.equal(v, frozen[k]), k                # LFGCM, 50-step control and SD parts untouched


def test_loss_terms_adversarial_and_distillation():
    torch.manual_seed(0)
    module = OneStepModule("tiny", vae_checkpointing=False, perceptual="none")
    codec, decoder = module.codec, module.codec.onestep
    disc = PatchDiscriminator(8)
    x = _batch()
    torch.manual_seed(5)                    # the teacher's start noise comes from the (per-step seeded) global RNG
    losses = one_step_losses(codec, decoder, x, discriminator=disc, adv_weight=0.1, distill_weight=1.0,
                             teacher_steps=1)
    assert {"l_latent", "l_mse", "l_perceptual", "l_adv", "l_disc", "l_distill", "bpp"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values()) and float(losses["l_perceptual"]) == 0
    # The generator term reaches the decoder only; the critic gets the gradient of its own hinge loss only.
    losses["l_adv"].backward()
    assert all(p.grad is None for p in disc.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.parameters())
    # Distillation target: the checkpoint's own 1-step ddpm decode of z_c, so the term is MSE to it.
    with torch.no_grad():
        z_target = codec.backbone.encode(x)
        z_c = codec.lfgcm.eval()(x, z_target)["z_c"]
        from diffeic.diffusion.decoder import denoise
        torch.manual_seed(5)
        teacher = denoise(codec.backbone, codec.control, z_c, "ddpm", 1)
        ctx = codec.backbone.text_embedding.expand(2, -1, -1)
        z0 = decoder.predict(lambda z_t, t: decoder.control(codec.backbone.unet, z_t, t, ctx, z_c), z_c)
        expected = torch.nn.functional.mse_loss(z0, teacher)
    torch.testing.assert_close(losses["l_distill"].detach(), expected, rtol=1e-5, atol=1e-6)


def test_perceptual_fallback_is_ms_ssim_offline():
    from diffeic.netweights import alexnet_weights, hub_checkpoint_dir, vgg16_weights

    cached = {n: (hub_checkpoint_dir() / w.filename).is_file() for n, w in
              (("lpips", alexnet_weights()), ("dists", vgg16_weights()))}
    name, fn = perceptual_loss("auto")
    assert name == next((n for n in ("lpips", "dists") if cached[n]), "ms_ssim")
    if not cached["lpips"]:
        with pytest.raises(ValueError, match="perceptual loss 'lpips' unavailable"):
            perceptual_loss("lpips")
    with pytest.raises(ValueError, match="perceptual loss must be one of"):
        perceptual_loss("vgg")
    from pytorch_msssim import ms_ssim, ssim

    x = photo("coffee", (192, 256))[None]
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert float(ms_ssim_loss(x, x)) == pytest.approx(0, abs=1e-6)
    torch.testing.assert_close(ms_ssim_loss(y, x), 1 - ms_ssim(y, x, data_range=1.0))
    torch.testing.assert_close(ms_ssim_loss(y[..., :64, :64], x[..., :64, :64]),
                               1 - ssim(y[..., :64, :64], x[..., :64, :64], data_range=1.0))


def test_cli_config_trains_and_exports(tmp_path, monkeypatch):
    from diffeic.training.cli import main

    base = _trained_base(tmp_path, DiffEICCodec.from_config("tiny"))
    monkeypatch.chdir(tmp_path)
    repo_config = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs" / "tiny_onestep.yaml"
    main(["fit", "--config", str(repo_config), "--model.init_from", str(tmp_path / "base"),
          "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--data.val_limit", "1",
          "--data.batch_size", "2", "--trainer.log_every_n_steps", "1",
          "--trainer.enable_progress_bar", "false"])
    loaded = DiffEICCodec.from_pretrained(tmp_path / "runs" / "tiny_onestep" / "export")
    assert loaded.onestep.trained and loaded.fingerprint() == base.fingerprint()
    metrics = (tmp_path / "runs/tiny_onestep/lightning_logs/version_0/metrics.csv").read_text()
    for name in ("train/l_latent", "train/l_mse", "train/l_perceptual", "val/psnr"):
        assert name in metrics

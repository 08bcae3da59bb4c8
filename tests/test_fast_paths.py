"""Each decoding fast path (issue #8) against the plain eager float32 path, on CPU with the tiny preset.

Tolerances (max |difference| of images in [0,1] unless stated; measured values in brackets):
default options: exact · SDPA vs classic attention: 1e-5 [7e-7] · channels_last: 1e-5 [7e-7] ·
CUDA-graph wrapper on CPU (falls back to eager): exact · bf16 autocast: PSNR ≥ 30 dB vs float32 ·
generator lists: exact · batched decode vs one by one: 1e-5 [1.4e-6, batch-size-dependent CPU kernels] ·
one latent tile: exact · several tiles: relative L2 of z_0 ≤ 0.15 [0.03] and no seam.
"""
from __future__ import annotations

import math

import pytest
import torch

from diffeic import DiffEICCodec
from diffeic.diffusion.decoder import decode_latent
from diffeic import DecodeOptions, Decoder
from diffeic.diffusion.fast import CUDAGraphStep, set_attention
from diffeic.diffusion.sampling import sample
from diffeic.diffusion.tiling import TileOptions, tile_layout, tile_starts, tiled_step

STEPS = 3


def gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def codec():
    """A tiny codec whose control module is switched on (non-zero zero-convs), so it takes part."""
    c = DiffEICCodec.from_config("tiny")
    with torch.no_grad():
        for p in c.control.zero_conv_parameters():
            p.copy_(torch.randn(p.shape, generator=gen(0)) * 0.05)
    yield c
    Decoder(c.backbone, c.control).configure()        # leave the modules in their default state


@pytest.fixture(scope="module")
def z_c():
    return torch.randn(2, 4, 16, 24, generator=gen(3))


@pytest.fixture(scope="module")
def plain(codec, z_c):
    return decode_latent(codec.backbone, codec.control, z_c, "ddpm", STEPS, gen())


def fast_decode(codec, z_c, **options) -> torch.Tensor:
    decoder = Decoder(codec.backbone, codec.control, DecodeOptions(**options)).configure()
    try:
        return decoder.decode(z_c, "ddpm", STEPS, gen())
    finally:
        Decoder(codec.backbone, codec.control).configure()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10((a - b).pow(2).mean().item() + 1e-20)


# --------------------------------------------------------------------------- precision / kernels / layout

def test_default_options_are_the_plain_path(codec, z_c, plain):
    assert torch.equal(fast_decode(codec, z_c), plain)
    assert torch.equal(decode_latent(codec.backbone, codec.control, z_c, "ddpm", STEPS, gen(),
                                     options=DecodeOptions()), plain)


def test_bf16_autocast_close(codec, z_c, plain):
    out = fast_decode(codec, z_c, dtype="bf16")
    assert out.dtype == torch.float32
    assert not torch.equal(out, plain)               # it really ran in reduced precision
    assert psnr(out, plain) >= 30.0


def test_fp16_autocast_close_or_skipped(codec, z_c, plain):
    try:
        out = fast_decode(codec, z_c, dtype="fp16")
    except (RuntimeError, NotImplementedError) as err:      # fp16 kernels missing on this CPU build
        pytest.skip(f"fp16 autocast not supported on CPU here: {err}")
    assert psnr(out, plain) >= 30.0


def test_half_precision_never_reaches_the_entropy_coder(codec):
    x = torch.rand(3, 64, 64, generator=gen(4))
    reference = codec.compress(x)
    codec.optimize(dtype="bf16")
    try:
        assert codec.compress(x) == reference            # streams are bit-identical under every option
        assert codec.decompress(reference).dtype == torch.float32
    finally:
        codec.optimize()


def test_sdpa_versus_classic_attention(codec, z_c, plain):
    modules = [codec.backbone.unet, codec.control, codec.backbone.vae]
    try:
        assert set_attention(modules, sdpa=False) > 0
        kinds = {type(m.processor).__name__ for m in codec.control.modules() if hasattr(m, "processor")}
        assert kinds == {"AttnProcessor"}
    finally:
        set_attention(modules, sdpa=True)
    # diffusers' default is already SDPA (AttnProcessor2_0); the plain path uses it.
    assert {type(p).__name__ for p in codec.backbone.unet.attn_processors.values()} == {"AttnProcessor2_0"}
    classic = fast_decode(codec, z_c, sdpa=False)
    assert (classic - plain).abs().max().item() <= 1e-5


def test_channels_last(codec, z_c, plain):
    decoder = Decoder(codec.backbone, codec.control, DecodeOptions(channels_last=True)).configure()
    try:
        w = codec.backbone.unet.conv_in.weight
        assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
        out = decoder.decode(z_c, "ddpm", STEPS, gen())
    finally:
        Decoder(codec.backbone, codec.control).configure()
    assert codec.backbone.unet.conv_in.weight.is_contiguous()
    assert (out - plain).abs().max().item() <= 1e-5


# --------------------------------------------------------------------------- CUDA graphs

def test_cuda_graph_wrapper_falls_back_on_cpu(codec, z_c, plain):
    decoder = Decoder(codec.backbone, codec.control, DecodeOptions(cuda_graphs=True))
    assert torch.equal(decoder.decode(z_c, "ddpm", STEPS, gen()), plain)
    graphed = decoder._step.step
    assert isinstance(graphed, CUDAGraphStep) and graphed.graphs == {}      # nothing captured on CPU
    assert decoder.evaluations == STEPS


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_capture_matches_eager(codec, z_c):
    codec.to("cuda")
    try:
        zc = z_c.cuda()
        eager = Decoder(codec.backbone, codec.control).decode(zc, "ddpm", STEPS, gen())
        decoder = Decoder(codec.backbone, codec.control, DecodeOptions(cuda_graphs=True))
        first = decoder.decode(zc, "ddpm", STEPS, gen())
        second = decoder.decode(zc, "ddpm", STEPS, gen())
        assert len(decoder._step.step.graphs) == 1        # captured once for this shape, then replayed
        assert torch.equal(first, second)
        assert (first - eager).abs().max().item() <= 1e-4
    finally:
        codec.to("cpu")


# --------------------------------------------------------------------------- batching

@pytest.mark.parametrize("sampler", ["ddpm", "fewstep", "ddim"])
def test_generator_list_equals_one_by_one_exactly(sampler):
    # A per-item eps function isolates the sampler's noise handling from batch-dependent kernels.
    z_c = torch.randn(3, 4, 5, 6, generator=gen(8))

    def eps_fn(z, t):
        return 0.3 * z + 0.001 * t.float().view(-1, 1, 1, 1)

    batched = sample(eps_fn, z_c, sampler, 4, [gen(10), gen(11), gen(12)])
    single = torch.cat([sample(eps_fn, z_c[i:i + 1], sampler, 4, gen(10 + i)) for i in range(3)])
    assert torch.equal(batched, single)
    # A list of one generator is the generator itself (single-item results unchanged).
    assert torch.equal(sample(eps_fn, z_c[:1], sampler, 4, [gen(10)]), single[:1])


def test_generator_list_validation():
    z_c = torch.zeros(2, 4, 4, 4)
    with pytest.raises(ValueError, match="one per batch item"):
        sample(lambda z, t: z, z_c, "ddpm", 2, [gen(1)])
    with pytest.raises(ValueError, match="CPU torch.Generator"):
        sample(lambda z, t: z, z_c, "ddpm", 2, [gen(1), "not a generator"])


def test_batched_decode_matches_one_by_one(codec):
    images = [torch.rand(3, 64, 64, generator=gen(20)), torch.rand(3, 60, 50, generator=gen(21)),
              torch.rand(3, 128, 64, generator=gen(22))]
    streams = [codec.compress(images[0], seed=5), codec.compress(images[1], seed=6), codec.compress(images[2])]
    one_by_one = [codec.decompress(s) for s in streams]
    batched = codec.decompress_batch(streams)
    assert [b.shape for b in batched] == [o.shape for o in one_by_one]      # order and crops kept
    for b, o in zip(batched, one_by_one):
        assert (b - o).abs().max().item() <= 1e-5
    # One image under two seeds in one batch: each item keeps its own noise (one generator each).
    pair = codec.decompress_batch([streams[0], codec.compress(images[0], seed=7)])
    assert not torch.equal(pair[0], pair[1])
    assert (pair[0] - one_by_one[0]).abs().max().item() <= 1e-5


# --------------------------------------------------------------------------- tiling

def test_tile_layout_covers_with_equal_tiles():
    opts = TileOptions(size=16, overlap=8)
    layout = tile_layout(40, 24, opts)
    cover = torch.zeros(40, 24, dtype=torch.float64)
    for rs, cs, w in layout:
        assert w.shape == (16, 16) and (w > 0).all()
        cover[rs, cs] += w
    assert (cover > 0).all()
    assert tile_starts(40, 16, 8) == [0, 8, 16, 24]
    assert tile_starts(12, 16, 8) == [0]
    for bad in (dict(size=12), dict(size=16, overlap=16), dict(size=16, overlap=4), dict(batch=0)):
        with pytest.raises(ValueError):
            TileOptions(**bad)


def test_one_tile_is_exactly_untiled(codec, z_c, plain):
    out = fast_decode(codec, z_c, tiles=TileOptions(size=32, overlap=8))
    assert torch.equal(out, plain)


@pytest.mark.parametrize("batch", [1, 4])
def test_several_tiles_close_to_untiled(codec, z_c, batch):
    untiled = Decoder(codec.backbone, codec.control).denoise(z_c, "ddpm", STEPS, gen())
    decoder = Decoder(codec.backbone, codec.control, DecodeOptions(tiles=TileOptions(16, 8, batch=batch)))
    tiled = decoder.denoise(z_c, "ddpm", STEPS, gen())
    rel = ((tiled - untiled).norm() / untiled.norm()).item()
    assert 0 < rel <= 0.15
    assert decoder.evaluations == STEPS * math.ceil(2 / batch)      # 2 tiles (16×16 over 16×24) per step


def _border_energy_ratio(z: torch.Tensor, borders) -> float:
    """Mean squared horizontal difference across tile borders / median over all columns."""
    g = (z[..., 1:] - z[..., :-1]).pow(2).mean(dim=(0, 1, 2))
    return (g[list(borders)].mean() / g.median()).item()


def test_blended_tiles_leave_no_seam():
    # A step whose output depends on the whole tile (its mean): hard tile cuts then show as steps.
    z = torch.linspace(0, 1, 64).repeat(1, 4, 16, 1) + 0.05 * torch.randn(1, 4, 16, 64, generator=gen(2))

    def step(z_t, t, context, z_c):
        return z_c + 4 * z_t.mean(dim=(2, 3), keepdim=True)

    t, ctx = torch.zeros(1, dtype=torch.long), torch.zeros(1, 1, 1)
    hard = tiled_step(step, TileOptions(size=16, overlap=0))(z, t, ctx, z)
    blended = tiled_step(step, TileOptions(size=24, overlap=16))(z, t, ctx, z)
    assert _border_energy_ratio(hard, [15, 31, 47]) > 5              # the metric sees seams
    starts = tile_starts(64, 24, 16)                                   # [0, 8, 16, ..., 40]
    assert _border_energy_ratio(blended, [s - 1 for s in starts[1:]] + [s + 23 for s in starts[:-1]]) < 1.5


def test_blended_unet_tiles_leave_no_seam(codec):
    # Smooth content so the controlled UNet's output is smooth where there is no seam.
    z_c = torch.nn.functional.interpolate(torch.randn(1, 4, 4, 6, generator=gen(6)), size=(16, 48),
                                          mode="bilinear", align_corners=False)
    z_t = z_c.clone()
    t, ctx = torch.tensor([400]), codec.backbone.text_embedding
    step = Decoder(codec.backbone, codec.control)._step
    with torch.no_grad():
        blended = tiled_step(step, TileOptions(size=16, overlap=8))(z_t, t, ctx, z_c)
    borders = [7, 15, 23, 31, 39]           # tile edges at 8, 16, ..., 40 (starts 0, 8, ..., 32)
    assert _border_energy_ratio(blended, borders) < 1.5


def test_auto_tiling_threshold(codec):
    decoder = Decoder(codec.backbone, codec.control)
    assert decoder.tiles_for(torch.empty(1, 4, 64, 96)) is None                    # 768×512
    assert decoder.tiles_for(torch.empty(1, 4, 128, 128)) is None                  # 1024×1024: at the limit
    assert decoder.tiles_for(torch.empty(1, 4, 376, 504)) == TileOptions()         # 4000×3000
    never = Decoder(codec.backbone, codec.control, DecodeOptions(auto_tile_pixels=None))
    assert never.tiles_for(torch.empty(1, 4, 376, 504)) is None


def test_fewstep_counts_network_evaluations(codec, z_c):
    decoder = Decoder(codec.backbone, codec.control)
    decoder.decode(z_c[:1, :, :8, :8], "fewstep", 4, gen())
    assert decoder.evaluations == 4


def test_large_images_tile_the_vae_encoder_and_still_decode(monkeypatch):
    """Above ``auto_tile_pixels`` the guidance VAE encoder runs in tiles; small images never do."""
    codec = DiffEICCodec.from_config("tiny")
    calls = []
    original = type(codec.backbone.vae)._tiled_encode

    def spy(vae, x):
        calls.append(tuple(x.shape))
        return original(vae, x)

    monkeypatch.setattr(type(codec.backbone.vae), "_tiled_encode", spy)
    x = torch.rand(3, 150, 200, generator=gen(7))
    small = codec.compress(x)
    assert calls == []
    codec.optimize(auto_tile_pixels=64 * 64, vae_tile_pixels=64)
    try:
        big = codec.compress(x)
        assert calls and calls[0][-2:] == (192, 256)           # padded to the LFGCM's multiple of 64
        y = codec.decompress(big, steps=1)
    finally:
        codec.optimize()
    assert y.shape == (3, 150, 200) and torch.isfinite(y).all()
    assert DiffEICCodec.inspect(big)["height"] == DiffEICCodec.inspect(small)["height"] == 150


def test_the_encoders_vae_tiling_is_the_codecs_not_a_decode_option(monkeypatch):
    """``optimize(vae_tiling=True)`` tiles the guidance VAE encoder of every image (codec.encoder_tiling);
    the decoder's options have no such field, and the setting survives a change of decode options."""
    import dataclasses

    import diffeic
    from diffeic.diffusion import decoder as decoder_module

    assert "vae_tiling" not in {f.name for f in dataclasses.fields(DecodeOptions)}
    assert (diffeic.Decoder, diffeic.DecodeOptions) == (Decoder, DecodeOptions)
    assert (decoder_module.FastDecoder, decoder_module.FastOptions) == (Decoder, DecodeOptions)   # deprecated
    codec = DiffEICCodec.from_config("tiny")
    calls = []
    original = type(codec.backbone.vae)._tiled_encode
    monkeypatch.setattr(type(codec.backbone.vae), "_tiled_encode", lambda vae, x: calls.append(1) or original(vae, x))
    x = torch.rand(3, 100, 130, generator=gen(3))
    plain = codec.compress(x)
    codec.optimize(vae_tiling=True, vae_tile_pixels=64)
    codec.optimize(codec.fast_decoder().options, dtype=None)          # kept when not given
    assert codec.encoder_tiling and not calls
    tiled = codec.compress(x)
    assert calls and tiled != plain
    codec.optimize(vae_tiling=False)
    assert codec.compress(x) == plain

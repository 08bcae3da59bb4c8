"""The LFGCM's coding contract (compressai's: ``compress`` → ``{"strings", "shape"}``, ``decompress(strings, shape)``)
and the pieces its coder shares: one list of coding tables, one walk over the slices for float and exact nets.

The model is the shipped ``tiny-trained`` one (trained weights: latents with many non-zero symbols, unlike a
random initialisation; variable-rate, used at its highest rate), on two exact photo crops.
"""
import pytest
import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional

from helpers import photo_crop

from diffeic import DiffEICCodec
from diffeic.entropy.exact import ACT_SCALE, from_grid
from diffeic.entropy.hyperprior import MeanScaleHyperprior
from diffeic.entropy.latent_coder import HyperpriorCoder
from diffeic.lfgcm import LFGCM
from diffeic.lfgcm.entropy import checkerboard_masks, slice_walk
from diffeic.lfgcm.exact import ExactEntropyPath

Q = 8.0


@pytest.fixture(scope="module")
def trained():
    codec = DiffEICCodec.from_pretrained("tiny-trained")
    x = torch.stack([photo_crop("astronaut", 40, 150, 64, 128), photo_crop("coffee", 100, 200, 64, 128)])
    with torch.no_grad():
        z_g = codec.backbone.encode(x)
    return codec.lfgcm, x, z_g


def test_compress_then_decompress_gives_the_forward_pass_latents(trained):
    lfgcm, x, z_g = trained
    coded = lfgcm.compress(x, z_g, Q)
    assert sorted(coded) == ["shape", "strings"] and coded["shape"] == (1, 2)       # z of a 64x128 image
    assert len(coded["strings"]) == 1 and [type(s) for s in coded["strings"][0]] == [bytes, bytes]
    decoded = lfgcm.decompress(coded["strings"], coded["shape"], Q)
    with torch.no_grad():
        forward = lfgcm.eval()(x, z_g, Q)
    for key in ("y_hat", "z_hat", "z_c"):               # training, rate estimate and coder see the same values
        assert torch.equal(decoded[key], forward[key]), key
    assert min(len(s) for s in coded["strings"][0]) > 100             # symbols worth coding: ~15 % not zero


def test_a_batch_codes_each_item_as_it_would_alone(trained):
    lfgcm, x, z_g = trained
    batch = lfgcm.compress(x, z_g, Q)["strings"][0]
    alone = [lfgcm.compress(x[i:i + 1], z_g[i:i + 1], Q)["strings"][0][0] for i in range(2)]
    assert batch == alone and batch[0] != batch[1]
    one = lfgcm.decompress([batch[1:]], (1, 2), Q)
    assert torch.equal(one["y_hat"], lfgcm.decompress([batch], (1, 2), Q)["y_hat"][1:])


def test_the_compressor_reuses_the_analysis_across_rates_without_changing_it(trained):
    # The target-size search probes one image at ~10 rates through one analysis: a probe must not alter it.
    lfgcm, x, z_g = trained
    at = lfgcm.compressor(x[:1], z_g[:1])
    low, high, low_again = (at(q)["strings"][0][0] for q in (0.0, Q, 0.0))
    assert low == low_again and len(low) < len(high)


def _rebuilt(module, update) -> set:
    """The state-dict entries that ``update()`` changes."""
    before = {k: v.clone() for k, v in module.state_dict().items()}
    update()
    after = module.state_dict()
    assert sorted(after) == sorted(before)
    return {k for k in after if before[k].shape != after[k].shape or not torch.equal(before[k], after[k])}


def test_the_one_table_list_is_what_compressais_coder_builds():
    """The listed tables (which the loaders resize, training leaves out of its checkpoints and the checks
    guard) are exactly the buffers compressai's own table builders fill, none missing, none extra."""
    eb, gc = EntropyBottleneck(4), GaussianConditional(None)
    built = ({"entropy_bottleneck." + k for k in _rebuilt(eb, lambda: eb.update(force=True))}
             | {"gaussian_conditional." + k
                for k in _rebuilt(gc, lambda: gc.update_scale_table(torch.tensor([0.2, 2.0])))})
    assert built == set(HyperpriorCoder.coding_table_names())


@pytest.mark.parametrize("build", [lambda: LFGCM(DiffEICCodec.from_config("tiny").config.lfgcm),
                                   lambda: MeanScaleHyperprior(8, 4)], ids=["lfgcm", "hyperprior"])
def test_both_coders_build_exactly_the_listed_tables(build):
    model = build()
    assert _rebuilt(model, lambda: model.update(force=True)) == set(HyperpriorCoder.coding_table_names())


def test_every_listed_table_moves_the_fingerprint(tiny_codec):
    original = tiny_codec.fingerprint()
    for name in tiny_codec.lfgcm.coding_table_names():
        table = tiny_codec.lfgcm.get_buffer(name)
        saved = table.clone()
        with torch.no_grad():
            table.add_(1)
        try:
            assert tiny_codec.fingerprint() != original, name
        finally:
            with torch.no_grad():
                table.copy_(saved)
    assert tiny_codec.fingerprint() == original


def test_float_and_exact_walks_visit_the_same_passes_and_agree_on_the_parameters(trained):
    """Fed the same decoded values, the float networks and their exact integer twin walk the slices and
    checkerboard passes in the same order and give σ, μ within the twin's rounding: a few 2^-8 grid steps
    (measured: at most 1.3 steps here; swapping two equal-size slices' spatial contexts in the twin moves σ by 3.7)."""
    lfgcm, x, z_g = trained
    with torch.no_grad():
        forward = lfgcm.eval()(x[:1], z_g[:1], Q)
        y_hat, z_hat = forward["y_hat"], forward["z_hat"]
        masks = checkerboard_masks(*y_hat.shape[-2:], y_hat.device)

        def walk(nets, psi, y):
            seen = []

            def code_pass(k, mask, scales, means):
                seen.append((k, bool(mask[0, 1]), scales, means))
                return y.split(lfgcm.slices, dim=1)[k] * mask
            slice_walk(nets, psi, len(lfgcm.slices), masks, code_pass)
            return seen

        floats = walk(lfgcm, lfgcm.hyper_dec(z_hat), y_hat)
        exact = ExactEntropyPath(lfgcm, y_hat.device)
        grid = walk(exact, exact.psi(z_hat.double() * ACT_SCALE), y_hat.double() * ACT_SCALE)
    assert [(k, a) for k, a, _, _ in floats] == [(k, a) for k, a, _, _ in grid] \
        == [(k, a) for k in range(len(lfgcm.slices)) for a in (True, False)]      # anchors (odd i+j) first
    for (_, _, s_f, m_f), (_, _, s_e, m_e) in zip(floats, grid):
        assert (from_grid(s_e) - s_f).abs().max() < 3 / ACT_SCALE and (from_grid(m_e) - m_f).abs().max() < 3 / ACT_SCALE
    assert max(float(m.abs().max()) for _, _, _, m in floats) > 0.5      # the parameters are not all ~0

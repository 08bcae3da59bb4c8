"""The controlled UNet against an independent reference forward ([Li2024] Sec. III-C; official ``CDDM.forward``).

The reference below is written from the equations, on diffusers' own block forwards:

    control branch:  h_c = concat(z_t, z_c) → conv_in → down blocks → mid        (features c_0 … c_11, c_mid)
    encoder:         h_b ← base_in[i](h_b) + ZE_i(c_i)       (the running state, hence also the skip)
    middle:          h_b ← base_mid(h_b) + ZM(c_mid)
    decoder:         h_b ← base_out[j](concat(h_b + ZD_j(c_{11−j}), skip))

The control branch runs through diffusers' ``DownBlock``/``MidBlock`` forwards and the frozen UNet through
its ordinary ``UNet2DConditionModel.forward``; the 25 injections are added by forward hooks.  None of
``diffeic.diffusion.control``'s block walking is used.  The zero convolutions are non-zero here (a
trained model's), otherwise every variant would equal the plain UNet.
"""
import copy

import pytest
import torch


def reference_eps(unet, control, z_t, t, ctx, z_c):
    b = z_t.shape[0]
    t = torch.as_tensor(t).reshape(-1).expand(b)
    emb_c = control.time_embedding(control.time_proj(t).to(z_t.dtype))
    h = control.conv_in(torch.cat([z_t, z_c], dim=1))
    feats = [h]
    for down in control.down_blocks:
        if getattr(down, "attentions", None) is not None:
            h, res = down(h, temb=emb_c, encoder_hidden_states=ctx)
        else:
            h, res = down(h, temb=emb_c)
        feats.extend(res)                       # each resnet(/attention) output, then the downsampler's
    c_mid = control.mid_block(h, emb_c, encoder_hidden_states=ctx)
    n = len(feats)

    # The frozen UNet's modules whose outputs are the 12 encoder features, in order.
    enc_modules = [unet.conv_in]
    for down in unet.down_blocks:
        attentions = getattr(down, "attentions", None)
        enc_modules += list(attentions) if attentions is not None else list(down.resnets)
        enc_modules += list(down.downsamplers or [])
    # The first module of each decoder block: it receives concat(h_b, skip).
    dec_resnets = [r for up in unet.up_blocks for r in up.resnets]
    assert len(enc_modules) == len(dec_resnets) == n == 12

    def add_to_output(extra):
        def hook(module, args, output):
            return (output[0] + extra,) + tuple(output[1:]) if isinstance(output, tuple) else output + extra
        return hook

    def add_to_hidden_part(extra):          # h_b is the first extra.shape[1] channels of concat(h_b, skip)
        def hook(module, args):
            x, c = args[0], extra.shape[1]
            return (torch.cat([x[:, :c] + extra, x[:, c:]], dim=1),) + tuple(args[1:])
        return hook

    handles = []
    try:
        for i, module in enumerate(enc_modules):
            handles.append(module.register_forward_hook(add_to_output(control.enc_zero_convs[i](feats[i]))))
        handles.append(unet.mid_block.register_forward_hook(add_to_output(control.mid_zero_conv(c_mid))))
        for j, resnet in enumerate(dec_resnets):
            handles.append(resnet.register_forward_pre_hook(
                add_to_hidden_part(control.dec_zero_convs[j](feats[n - 1 - j]))))
        return unet(z_t, t, encoder_hidden_states=ctx).sample
    finally:
        for handle in handles:
            handle.remove()


@pytest.fixture(scope="module")
def trained_like_control(tiny_codec):
    """A copy of the tiny codec's control module as training leaves it: non-zero zero-convs (weights and
    biases), and an input conv that reads z_t and z_c differently (crop-init gives both the same filters,
    which would hide a swapped concatenation)."""
    control = copy.deepcopy(tiny_codec.control)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in control.zero_conv_parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
        w = control.conv_in.weight
        w[:, w.shape[1] // 2:] += 0.1 * torch.randn(w[:, w.shape[1] // 2:].shape, generator=g)
    return control


@pytest.mark.parametrize("size", [(16, 24), (13, 11)])
def test_controlled_unet_equals_the_reference_forward(tiny_codec, trained_like_control, size):
    unet = tiny_codec.backbone.unet
    g = torch.Generator().manual_seed(5)
    z_t, z_c = torch.randn(2, 4, *size, generator=g), torch.randn(2, 4, *size, generator=g)
    t = torch.tensor([999, 17])
    ctx = tiny_codec.backbone.text_embedding.expand(2, -1, -1)
    with torch.no_grad():
        ours = trained_like_control(unet, z_t, t, ctx, z_c)
        ref = reference_eps(unet, trained_like_control, z_t, t, ctx, z_c)
        plain = unet(z_t, t, encoder_hidden_states=ctx).sample
    assert (ref - plain).abs().max() > 0.05 * plain.abs().max()      # the injections matter here
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)

"""Control module: structure, crop-init, zero-conv identity, injection and gradients ([Li2024] Sec. III-C)."""
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel

from diffeic.config import ControlConfig, get_config
from diffeic.diffusion.backbone import FrozenBackbone
from diffeic.diffusion.control import ControlModule, crop_like, ldm_input_blocks, ldm_output_blocks

OFFICIAL_KEYS = Path(__file__).parent / "data" / "official_lc_keys.tsv"   # key names + shapes of the official lc.ckpt


@pytest.fixture(scope="module")
def tiny():
    cfg = get_config("tiny")
    backbone = FrozenBackbone.from_config(cfg.backbone, seed=0)
    control = ControlModule.from_unet(backbone.unet, cfg.control)
    return cfg, backbone, control


@pytest.fixture(scope="module")
def sd21_control():
    """The sd21-size control module; the 866M-param UNet only exists on the meta device."""
    cfg = get_config("sd21")
    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg.backbone.unet)
    return ControlModule.from_unet(unet, cfg.control, init_from_unet=False)


def _inputs(backbone, b=2, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    z_t = torch.randn(b, 4, h, w, generator=g)
    z_c = torch.randn(b, 4, h, w, generator=g)
    t = torch.tensor([999, 17][:b])
    ctx = backbone.text_embedding.expand(b, -1, -1)
    return z_t, t, ctx, z_c


# --------------------------------------------------------------------------- structure / counts

def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_sd21_trainable_parameter_count(sd21_control):
    c = sd21_control
    assert n_params(c) == 24_410_240                                  # computed from the official module definitions
    assert sum(p.numel() for p in c.zero_conv_parameters()) == 4_487_040
    assert n_params(c) - 4_487_040 == 19_923_200
    assert len(c.zero_conv_parameters()) == 50                        # 25 convs × (weight, bias)


def test_sd21_block_parameter_counts_match_official_table(sd21_control):
    # the official ``lc.ckpt`` control weights, one row per ldm block
    c = sd21_control
    blocks = ldm_input_blocks(c.conv_in, c.down_blocks)
    counts = [sum(n_params(m) for m in b) for b in blocks]
    assert n_params(c.time_embedding) == 2_050_560
    assert counts == [4_672, 370_432, 370_432, 36_928, 986_624, 1_052_160, 147_584,
                      3_087_360, 3_349_504, 590_080, 1_509_120, 1_509_120]
    assert n_params(c.mid_block) == 4_858_624
    assert c.feature_channels() == [64] * 4 + [128] * 3 + [256] * 5


def test_sd21_zero_conv_channel_table(sd21_control):
    c = sd21_control
    enc = [(z.in_channels, z.out_channels) for z in c.enc_zero_convs]
    dec = [(z.in_channels, z.out_channels) for z in c.dec_zero_convs]
    assert enc == [(64, 320)] * 4 + [(128, 640)] * 3 + [(256, 1280)] * 5          # official ``CDDM.forward``
    assert (c.mid_zero_conv.in_channels, c.mid_zero_conv.out_channels) == (256, 1280)
    assert dec == [(256, 1280)] * 5 + [(128, 1280)] * 2 + [(128, 640)] + [(64, 640)] * 2 + [(64, 320)] * 2
    heads = [b.attentions[0].transformer_blocks[0].attn1.heads for b in c.down_blocks[:3]]
    assert heads == [4, 8, 16]
    assert c.mid_block.attentions[0].transformer_blocks[0].attn1.heads == 16
    assert c.conv_in.in_channels == 8


def _ldm_to_ours(key: str):
    """The ldm → diffusers naming rules: an official control_model key -> our state-dict key."""
    import re
    k = key[len("control_model."):]
    if k == "scale_list":
        return None
    m = re.fullmatch(r"enc_zero_convs_out\.(\d+)\.0\.(\w+)", k)
    if m:
        return f"enc_zero_convs.{m[1]}.{m[2]}"
    m = re.fullmatch(r"dec_zero_convs_out\.(\d+)\.0\.(\w+)", k)
    if m:
        return f"dec_zero_convs.{m[1]}.{m[2]}"
    m = re.fullmatch(r"middle_block_out\.0\.(\w+)", k)
    if m:
        return f"mid_zero_conv.{m[1]}"
    k = k[len("control_model."):]
    res = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
           "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}

    def resnet(rest):
        for a, b in res.items():
            if rest.startswith(a + "."):
                return b + rest[len(a):]
        raise AssertionError(rest)

    k = k.replace("time_embed.0.", "time_embedding.linear_1.").replace("time_embed.2.", "time_embedding.linear_2.")
    if k.startswith("time_embedding"):
        return k
    m = re.fullmatch(r"input_blocks\.(\d+)\.(\d)\.(.+)", k)
    if m:
        i, sub, rest = int(m[1]), int(m[2]), m[3]
        if i == 0:
            return f"conv_in.{rest}"
        level, r = divmod(i - 1, 3)
        if r == 2:
            return f"down_blocks.{level}.downsamplers.0.conv.{rest[len('op.'):]}"
        return f"down_blocks.{level}.resnets.{r}.{resnet(rest)}" if sub == 0 else \
            f"down_blocks.{level}.attentions.{r}.{rest}"
    m = re.fullmatch(r"middle_block\.(\d)\.(.+)", k)
    idx, rest = int(m[1]), m[2]
    if idx == 1:
        return f"mid_block.attentions.0.{rest}"
    return f"mid_block.resnets.{idx // 2}.{resnet(rest)}"


def test_sd21_state_dict_maps_onto_official_keys(sd21_control):
    """Every official control key maps (by the documented rules) to one of ours with the same shape, and back."""
    ours = {k: tuple(v.shape) for k, v in sd21_control.state_dict().items()}
    mapped = {}
    for line in OFFICIAL_KEYS.read_text().splitlines():
        if not line.startswith("control_model."):
            continue
        key, shape = line.split("\t")
        target = _ldm_to_ours(key)
        if target is None:
            continue
        mapped[target] = tuple(int(s) for s in shape.strip("[]").split(","))
    assert len(mapped) == 348
    assert mapped == ours


# --------------------------------------------------------------------------- crop initialisation

def test_crop_init_copies_leading_slices(tiny):
    _, backbone, control = tiny
    unet = backbone.unet
    w0 = control.conv_in.weight.shape[0]
    # conv_in: z_t (0-3) and z_c (4-7) channels are identical copies of the first SD filters
    assert torch.equal(control.conv_in.weight[:, :4], unet.conv_in.weight[:w0])
    assert torch.equal(control.conv_in.weight[:, 4:], unet.conv_in.weight[:w0])
    assert torch.equal(control.conv_in.bias, unet.conv_in.bias[:w0])
    # 1-D: a GroupNorm gamma takes the leading entries
    assert torch.equal(control.down_blocks[1].resnets[0].norm2.weight,
                       unet.down_blocks[1].resnets[0].norm2.weight[: control.down_blocks[1].resnets[0].out_channels])
    # cross-attention K keeps every context input, crops output rows
    ck = control.down_blocks[2].attentions[1].transformer_blocks[0].attn2.to_k.weight
    uk = unet.down_blocks[2].attentions[1].transformer_blocks[0].attn2.to_k.weight
    assert ck.shape[1] == uk.shape[1] == 32 and torch.equal(ck, uk[: ck.shape[0]])
    # time-embedding MLP is full width: copied as is
    assert torch.equal(control.time_embedding.linear_2.weight, unet.time_embedding.linear_2.weight)
    assert control.time_embedding.linear_1.in_features == unet.time_embedding.linear_1.in_features
    # ResBlock time projection keeps all 4*C time inputs
    cp = control.down_blocks[0].resnets[0].time_emb_proj.weight
    assert torch.equal(cp, unet.down_blocks[0].resnets[0].time_emb_proj.weight[: cp.shape[0]])
    # zero convs are zero
    assert all(torch.count_nonzero(p) == 0 for p in control.zero_conv_parameters())


def test_crop_like_rule():
    w = torch.arange(2 * 3 * 1 * 1.0).reshape(2, 3, 1, 1)
    out = crop_like(w, (1, 5, 1, 1))
    assert out.flatten().tolist() == [0, 1, 2, 0, 1]             # cat([w, w], 1)[:1, :5]
    assert crop_like(torch.arange(5.0), (2,)).tolist() == [0, 1]
    with pytest.raises(ValueError):
        crop_like(w, (3, 3, 1, 1))


def test_random_init_differs_from_crop_init(tiny):
    cfg, backbone, control = tiny
    fresh = ControlModule.from_unet(backbone.unet, cfg.control, init_from_unet=False)
    assert not torch.equal(fresh.conv_in.weight[:, :4], fresh.conv_in.weight[:, 4:])
    assert set(fresh.state_dict()) == set(control.state_dict())


def test_bad_control_config(tiny):
    _, backbone, _ = tiny
    with pytest.raises(ValueError, match="head_dim"):
        ControlModule.from_unet(backbone.unet, ControlConfig(width_ratio=0.2, head_dim=3, norm_groups=8))


# --------------------------------------------------------------------------- forward

@pytest.mark.parametrize("size", [(16, 16), (13, 11)])
def test_zero_init_controlled_output_equals_frozen_unet_exactly(tiny, size):
    _, backbone, control = tiny
    z_t, t, ctx, z_c = _inputs(backbone, 2, *size)
    with torch.no_grad():
        ours = control(backbone.unet, z_t, t, ctx, z_c)
        ref = backbone.unet(z_t, t, encoder_hidden_states=ctx).sample
    assert torch.equal(ours, ref)


def test_scalar_timestep_broadcasts(tiny):
    _, backbone, control = tiny
    z_t, _, ctx, z_c = _inputs(backbone)
    with torch.no_grad():
        a = control(backbone.unet, z_t, 500, ctx, z_c)
        b = control(backbone.unet, z_t, torch.tensor([500, 500]), ctx, z_c)
    assert torch.equal(a, b)


def _perturbed(cfg, backbone, control, which: str, seed=1):
    c = ControlModule.from_unet(backbone.unet, cfg.control)
    c.load_state_dict(control.state_dict())
    g = torch.Generator().manual_seed(seed)
    convs = {"enc": list(c.enc_zero_convs), "mid": [c.mid_zero_conv], "dec": list(c.dec_zero_convs)}[which]
    with torch.no_grad():
        for conv in convs:
            conv.weight.copy_(0.05 * torch.randn(conv.weight.shape, generator=g))
    return c


@pytest.mark.parametrize("which", ["enc", "mid", "dec"])
def test_perturbed_zero_convs_change_output(tiny, which):
    cfg, backbone, control = tiny
    c = _perturbed(cfg, backbone, control, which)
    z_t, t, ctx, z_c = _inputs(backbone)
    with torch.no_grad():
        ours = c(backbone.unet, z_t, t, ctx, z_c)
        ref = backbone.unet(z_t, t, encoder_hidden_states=ctx).sample
        other_zc = c(backbone.unet, z_t, t, ctx, torch.zeros_like(z_c))
    assert (ours - ref).abs().max() > 1e-4
    assert (ours - other_zc).abs().max() > 1e-5           # the output now depends on z_c


def test_encoder_injection_modifies_running_state_not_only_skips(tiny):
    """Our forward differs from diffusers' ControlNet-style residual adds with the same features."""
    cfg, backbone, control = tiny
    c = _perturbed(cfg, backbone, control, "enc")
    z_t, t, ctx, z_c = _inputs(backbone)
    with torch.no_grad():
        ours = c(backbone.unet, z_t, t, ctx, z_c)
        feats, _ = c.features(z_t, t, ctx, z_c)
        # diffusers' ControlNet path adds the same 12 features to the skips only; ours also feeds
        # them into the next frozen block, so the two must differ.
        residuals = tuple(z(f) for z, f in zip(c.enc_zero_convs, feats))
        controlnet_style = backbone.unet(z_t, t, encoder_hidden_states=ctx, down_block_additional_residuals=residuals,
                                         mid_block_additional_residual=torch.zeros(1)).sample
    assert (ours - controlnet_style).abs().max() > 1e-5


def test_gradients_flow_to_control_only(tiny):
    cfg, backbone, control = tiny
    assert all(not p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.training and not backbone.unet.training
    c = _perturbed(cfg, backbone, control, "dec")
    z_t, t, ctx, z_c = _inputs(backbone)
    c.zero_grad()
    loss = c(backbone.unet, z_t, t, ctx, z_c).square().mean()
    loss.backward()
    assert all(p.grad is None for p in backbone.parameters())
    grads = {n: p.grad for n, p in c.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert grads["conv_in.weight"].abs().sum() > 0             # reaches the control branch through ZD
    assert grads["mid_zero_conv.weight"].abs().sum() > 0
    # with exactly-zero injections only the zero convs receive gradient (ControlNet property)
    control.zero_grad()
    control(backbone.unet, z_t, t, ctx, z_c).square().mean().backward()
    assert control.conv_in.weight.grad.abs().sum() == 0
    assert control.enc_zero_convs[0].weight.grad.abs().sum() > 0
    control.zero_grad()


def test_gradient_checkpointing_gives_same_grads(tiny):
    cfg, backbone, control = tiny
    c = _perturbed(cfg, backbone, control, "enc")
    z_t, t, ctx, z_c = _inputs(backbone)
    c(backbone.unet, z_t, t, ctx, z_c).square().mean().backward()
    plain = {n: p.grad.clone() for n, p in c.named_parameters()}
    c.zero_grad()
    c.gradient_checkpointing = True
    c(backbone.unet, z_t, t, ctx, z_c).square().mean().backward()
    for n, p in c.named_parameters():
        torch.testing.assert_close(p.grad, plain[n], rtol=1e-5, atol=1e-7)


def test_state_dict_holds_only_trainable_parts(tiny):
    _, backbone, control = tiny
    keys = control.state_dict().keys()
    assert not any(k.startswith(("unet", "up_blocks", "conv_out")) for k in keys)
    assert len(ldm_output_blocks(backbone.unet.up_blocks)) == 12
    assert len(control.enc_zero_convs) == len(control.dec_zero_convs) == 12

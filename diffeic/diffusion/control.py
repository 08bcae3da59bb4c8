"""The control module and the controlled UNet forward ([Li2024] Sec. III-C).

The control module is a narrow copy (``width_ratio`` of the widths) of the frozen UNet's
``conv_in``, down blocks and mid block, with its own full-width time-embedding MLP.  It reads
``concat(z_t, z_c)`` and steers the frozen UNet through 25 zero-initialised 1×1 convolutions:
12 encoder-side (``enc_zero_convs``), one middle (``mid_zero_conv``) and 12 decoder-side
(``dec_zero_convs``).

Module names are diffusers-native and line up one-to-one with the official ldm keys
(the official ``lc.ckpt``): ``time_embedding.linear_{1,2}`` ↔ ``time_embed.{0,2}``,
``conv_in`` ↔ ``input_blocks.0.0``, ``down_blocks.{l}.resnets.{r}`` ↔ ``input_blocks.{3l+1+r}.0``,
``down_blocks.{l}.attentions.{r}`` ↔ ``input_blocks.{3l+1+r}.1``,
``down_blocks.{l}.downsamplers.0.conv`` ↔ ``input_blocks.{3l+3}.0.op``, ``mid_block`` ↔
``middle_block``; ``enc_zero_convs.{i}`` ↔ ``enc_zero_convs_out.{i}.0``, ``mid_zero_conv`` ↔
``middle_block_out.0``, ``dec_zero_convs.{j}`` ↔ ``dec_zero_convs_out.{j}.0``.

Why a forward of our own: DiffEIC adds the encoder-side injections to the frozen UNet's *running*
hidden state (the next frozen block sees the modified feature, and so does the skip), and adds
the decoder-side injections to the hidden state *before* it is concatenated with the skip.
diffusers' ``down_block_additional_residuals`` only touches the skips, so it would be a different
model; :func:`controlled_unet_forward` walks the frozen UNet block by block instead.

References:
[Li2024] Z. Li, Y. Zhou, H. Wei, C. Ge, J. Jiang, "Toward Extreme Image Compression with Latent Feature
    Guidance and Diffusion Prior", IEEE TCSVT 35(1):888–899, 2025 (arXiv:2404.18820, "Towards …").
    "official ``path``" names a file of the authors' implementation, github.com/huai-chang/DiffEIC.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2DCrossAttn, get_down_block
from diffusers.models.upsampling import Upsample2D
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import ControlConfig

Tensor = torch.Tensor

# One ldm "input block" / "output block" of a diffusers UNet, as a list of modules run in order.
# Input block: [conv_in] | [resnet] | [resnet, attention] | [downsampler].
# Output block: [resnet] | [resnet, attention] | either followed by [upsampler].
_Block = List[nn.Module]


# --------------------------------------------------------------------------- block walking

def ldm_input_blocks(conv_in: nn.Module, down_blocks: Sequence[nn.Module]) -> List[_Block]:
    """The 12 ldm input blocks of a diffusers encoder, in ldm order (official ``input_blocks`` indices)."""
    blocks: List[_Block] = [[conv_in]]
    for down in down_blocks:
        attentions = getattr(down, "attentions", None)
        for r, resnet in enumerate(down.resnets):
            blocks.append([resnet] if attentions is None else [resnet, attentions[r]])
        for downsampler in down.downsamplers or []:
            blocks.append([downsampler])
    return blocks


def ldm_output_blocks(up_blocks: Sequence[nn.Module]) -> List[_Block]:
    """The 12 ldm output blocks of a diffusers decoder; an upsampler ends the last block of a level."""
    blocks: List[_Block] = []
    for up in up_blocks:
        attentions = getattr(up, "attentions", None)
        for r, resnet in enumerate(up.resnets):
            blocks.append([resnet] if attentions is None else [resnet, attentions[r]])
        blocks[-1].extend(up.upsamplers or [])
    return blocks


def _run_block(block: _Block, h: Tensor, emb: Tensor, context: Tensor,
               upsample_size: Optional[Tuple[int, int]] = None) -> Tensor:
    """Run one ldm block, calling each diffusers module exactly as its parent block would."""
    for module in block:
        if isinstance(module, ResnetBlock2D):
            h = module(h, emb)
        elif isinstance(module, Transformer2DModel):
            h = module(h, encoder_hidden_states=context, return_dict=False)[0]
        elif isinstance(module, Upsample2D):
            h = module(h, upsample_size)
        else:                           # conv_in, Downsample2D
            h = module(h)
    return h


def _timesteps_for(t: Union[Tensor, int, float], sample: Tensor) -> Tensor:
    """Broadcast a scalar/0-d/(B,) timestep to ``(B,)`` on the sample's device (as diffusers does)."""
    t = torch.as_tensor(t, device=sample.device)
    if t.ndim == 0:
        t = t[None]
    return t.expand(sample.shape[0])


# --------------------------------------------------------------------------- the module

class ControlModule(nn.Module):
    """Trainable control branch + 25 zero convolutions ([Li2024] Sec. III-C; official ``CDDM``).

    Build with :meth:`from_unet`.  Call as ``control(unet, z_t, t, context, z_c) -> eps``; the
    frozen UNet is passed in, not registered, so ``state_dict()`` holds only trainable tensors.
    """

    def __init__(self, *, base_widths: Sequence[int], widths: Sequence[int], down_block_types: Sequence[str],
                 layers_per_block: Sequence[int], heads: Sequence[int], groups: Sequence[int],
                 latent_channels: int, content_channels: int, time_proj_dim: int, time_embed_dim: int,
                 flip_sin_to_cos: bool, freq_shift: float, act_fn: str, norm_eps: float,
                 cross_attention_dim: int, use_linear_projection: bool, upcast_attention: bool,
                 transformer_layers_per_block: int, resnet_time_scale_shift: str, mid_block_scale_factor: float,
                 enc_out_channels: Sequence[int], dec_out_channels: Sequence[int]) -> None:
        super().__init__()
        self.latent_channels = latent_channels
        self.content_channels = content_channels
        self.gradient_checkpointing = False

        # Same sinusoidal features and full-width MLP as the base UNet (official ``ControlModule``: 320 → 1280).
        self.time_proj = Timesteps(time_proj_dim, flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(time_proj_dim, time_embed_dim, act_fn=act_fn)
        self.conv_in = nn.Conv2d(latent_channels + content_channels, widths[0], 3, padding=1)

        self.down_blocks = nn.ModuleList()
        for i, kind in enumerate(down_block_types):
            c_in, c_out = widths[max(i - 1, 0)], widths[i]
            self.down_blocks.append(get_down_block(
                kind, num_layers=layers_per_block[i], in_channels=c_in, out_channels=c_out,
                temb_channels=time_embed_dim, add_downsample=i < len(widths) - 1, resnet_eps=norm_eps,
                resnet_act_fn=act_fn, resnet_groups=groups[i], cross_attention_dim=cross_attention_dim,
                num_attention_heads=heads[i], attention_head_dim=c_out // heads[i], downsample_padding=1,
                use_linear_projection=use_linear_projection, upcast_attention=upcast_attention,
                transformer_layers_per_block=transformer_layers_per_block,
                resnet_time_scale_shift=resnet_time_scale_shift,
            ))
        self.mid_block = UNetMidBlock2DCrossAttn(
            in_channels=widths[-1], temb_channels=time_embed_dim, resnet_eps=norm_eps, resnet_act_fn=act_fn,
            output_scale_factor=mid_block_scale_factor, resnet_time_scale_shift=resnet_time_scale_shift,
            cross_attention_dim=cross_attention_dim, num_attention_heads=heads[-1], resnet_groups=groups[-1],
            use_linear_projection=use_linear_projection, upcast_attention=upcast_attention,
            transformer_layers_per_block=transformer_layers_per_block,
        )

        ctrl_channels = self.feature_channels()
        if len(ctrl_channels) != len(enc_out_channels) or len(ctrl_channels) != len(dec_out_channels):
            raise ValueError(f"control has {len(ctrl_channels)} input blocks but the UNet has "
                             f"{len(enc_out_channels)} input / {len(dec_out_channels)} output blocks")
        n = len(ctrl_channels)
        # ZE_i: control input block i -> base input block i; ZM: mid -> mid;
        # ZD_j: control input block n-1-j -> hidden state entering base output block j (official ``CDDM.forward``).
        self.enc_zero_convs = nn.ModuleList(_zero_conv(c, o) for c, o in zip(ctrl_channels, enc_out_channels))
        self.mid_zero_conv = _zero_conv(widths[-1], base_widths[-1])
        self.dec_zero_convs = nn.ModuleList(
            _zero_conv(ctrl_channels[n - 1 - j], dec_out_channels[j]) for j in range(n))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_unet(cls, unet: UNet2DConditionModel, cfg: ControlConfig,
                  init_from_unet: bool = True) -> "ControlModule":
        """Build the control module for ``unet`` at ``cfg.width_ratio`` ([Li2024] Sec. III-C).

        With ``init_from_unet`` the non-zero-conv weights are crop-initialised from the UNet
        (official ``model/diffeic.py``); the zero convs are always zero.  ``unet`` may live on the ``meta`` device
        when ``init_from_unet=False`` (e.g. to count parameters without allocating SD).
        """
        _check_supported(unet)
        uc = unet.config
        base = list(uc.block_out_channels)
        w0 = int(base[0] * cfg.width_ratio)          # ldm: model_channels = int(320 * ratio)
        if w0 < 1:
            raise ValueError(f"width_ratio {cfg.width_ratio} gives zero control channels")
        widths = [w0 * b // base[0] for b in base]   # ldm: model_channels * channel_mult
        for w in widths:
            if w % cfg.head_dim:
                raise ValueError(f"control width {w} is not divisible by head_dim {cfg.head_dim}")
        heads = [w // cfg.head_dim for w in widths]
        groups = [_largest_divisor(math.gcd(widths[max(i - 1, 0)], w), cfg.norm_groups)
                  for i, w in enumerate(widths)]
        lpb = uc.layers_per_block
        lpb = [lpb] * len(base) if isinstance(lpb, int) else list(lpb)
        tlpb = uc.transformer_layers_per_block
        if not isinstance(tlpb, int):
            raise ValueError("per-block transformer_layers_per_block is not supported")

        enc_out = [_out_channels(b) for b in ldm_input_blocks(unet.conv_in, unet.down_blocks)]
        # Hidden state entering output block j = its first resnet's input minus the skip it pops.
        skips = list(reversed(enc_out))
        dec_resnets = [b[0] for b in ldm_output_blocks(unet.up_blocks)]
        dec_out = [r.in_channels - s for r, s in zip(dec_resnets, skips)]

        module = cls(
            base_widths=base, widths=widths, down_block_types=list(uc.down_block_types), layers_per_block=lpb,
            heads=heads, groups=groups, latent_channels=uc.in_channels, content_channels=uc.in_channels,
            time_proj_dim=unet.time_embedding.linear_1.in_features,
            time_embed_dim=unet.time_embedding.linear_2.out_features,
            flip_sin_to_cos=uc.flip_sin_to_cos, freq_shift=uc.freq_shift, act_fn=uc.act_fn, norm_eps=uc.norm_eps,
            cross_attention_dim=uc.cross_attention_dim, use_linear_projection=uc.use_linear_projection,
            upcast_attention=uc.upcast_attention, transformer_layers_per_block=tlpb,
            resnet_time_scale_shift=uc.resnet_time_scale_shift, mid_block_scale_factor=uc.mid_block_scale_factor,
            enc_out_channels=enc_out, dec_out_channels=dec_out,
        )
        if init_from_unet:
            module.crop_init_from(unet)
        return module

    @torch.no_grad()
    def crop_init_from(self, unet: UNet2DConditionModel) -> None:
        """Copy the UNet's weights into the control branch by leading-slice cropping (official ``model/diffeic.py``).

        Same shape → copy; 1-D → leading entries; ≥2-D → ``cat([w, w], dim=1)[:out, :in]`` (so
        conv_in's z_t and z_c channels get identical copies, and cross-attention K/V keep every
        context input).  Zero convs are not in the UNet and stay zero.
        """
        source = unet.state_dict()
        for name, target in self.state_dict().items():
            if name.split(".")[0] in _ZERO_CONV_NAMES:
                continue
            if name not in source:
                raise KeyError(f"control tensor {name!r} has no counterpart in the UNet")
            target.copy_(crop_like(source[name], target.shape))

    def zero_conv_parameters(self) -> List[nn.Parameter]:
        """The 25 zero convs' weights and biases (official ``CDDM.forward``)."""
        return [p for n, p in self.named_parameters() if n.split(".")[0] in _ZERO_CONV_NAMES]

    def feature_channels(self) -> List[int]:
        """Channels of the control input blocks 0..11 (the inputs of ZE_i)."""
        return [_out_channels(b) for b in ldm_input_blocks(self.conv_in, self.down_blocks)]

    # ------------------------------------------------------------------ forward
    def features(self, z_t: Tensor, t: Union[Tensor, int], context: Tensor,
                 z_c: Tensor) -> Tuple[List[Tensor], Tensor]:
        """Control features of input blocks 0..11 and of the mid block for ``concat(z_t, z_c)``."""
        t_emb = self.time_proj(_timesteps_for(t, z_t)).to(dtype=z_t.dtype)
        emb = self.time_embedding(t_emb)
        h = torch.cat([z_t, z_c], dim=1)        # z_t first (official input_blocks.0.0 channel order)
        feats = []
        for block in ldm_input_blocks(self.conv_in, self.down_blocks):
            h = self.maybe_checkpoint(_run_block, block, h, emb, context)
            feats.append(h)
        h = self.maybe_checkpoint(self.mid_block, h, emb, context)
        return feats, h

    def forward(self, unet: UNet2DConditionModel, z_t: Tensor, t: Union[Tensor, int], context: Tensor,
                z_c: Tensor) -> Tensor:
        """Predicted noise of the controlled frozen UNet; see :func:`controlled_unet_forward`."""
        return controlled_unet_forward(unet, self, z_t, t, context, z_c)

    def maybe_checkpoint(self, fn: Callable, *args):
        """``fn(*args)``, under activation checkpointing when ``gradient_checkpointing`` is on and grads are
        enabled (official: ``use_checkpoint=True``; trades compute for training memory)."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)


def controlled_unet_forward(unet: UNet2DConditionModel, control: ControlModule, z_t: Tensor,
                            t: Union[Tensor, int], context: Tensor, z_c: Tensor) -> Tensor:
    """eps = UNet_ctrl(z_t, t, c, z_c), the official ``CDDM.forward``, injection scale 1.

    ::

        h_b = z_t;  h_c = concat(z_t, z_c)
        for i in 0..11:  h_b = base_in[i](h_b) + ZE_i(h_c_i)     # changes the main path and the skip
        h_b = base_mid(h_b) + ZM(h_c_mid)
        for j in 0..11:  h_b = base_out[j](concat(h_b + ZD_j(h_c_{11-j}), skip_b.pop()))
        eps = base_out_conv(h_b)
    """
    ctrl_feats, ctrl_mid = control.features(z_t, t, context, z_c)
    run = control.maybe_checkpoint

    t_emb = unet.get_time_embed(sample=z_t, timestep=_timesteps_for(t, z_t))
    emb = unet.time_embedding(t_emb)

    # Encoder: every injection modifies the running hidden state, hence also the skip.
    h, skips = z_t, []
    for block, feat, zero_conv in zip(ldm_input_blocks(unet.conv_in, unet.down_blocks), ctrl_feats,
                                      control.enc_zero_convs):
        h = run(_run_block, block, h, emb, context) + zero_conv(feat)
        skips.append(h)

    h = run(unet.mid_block, h, emb, context) + control.mid_zero_conv(ctrl_mid)

    # Decoder: add ZD_j to the hidden state before it is concatenated with the skip.
    # diffusers passes an explicit upsample size only when the input is not a multiple of 2**n.
    factor = 2 ** unet.num_upsamplers
    forward_upsample_size = any(s % factor for s in z_t.shape[-2:])
    for j, block in enumerate(ldm_output_blocks(unet.up_blocks)):
        h = h + control.dec_zero_convs[j](ctrl_feats[len(ctrl_feats) - 1 - j])
        h = torch.cat([h, skips.pop()], dim=1)
        upsample_size = tuple(skips[-1].shape[2:]) if (forward_upsample_size and skips) else None
        h = run(_run_block, block, h, emb, context, upsample_size)

    if unet.conv_norm_out is not None:
        h = unet.conv_act(unet.conv_norm_out(h))
    return unet.conv_out(h)


# --------------------------------------------------------------------------- helpers

_ZERO_CONV_NAMES = ("enc_zero_convs", "mid_zero_conv", "dec_zero_convs")


def crop_like(source: Tensor, shape: Sequence[int]) -> Tensor:
    """The official crop rule mapping a UNet tensor onto a control tensor of ``shape``.

    That of ``sync_control_weights_from_base_checkpoint`` in the official ``model/diffeic.py``.
    """
    shape = tuple(shape)
    if tuple(source.shape) == shape:
        return source
    if source.ndim != len(shape):
        raise ValueError(f"cannot crop a {tuple(source.shape)} tensor to {shape}")
    if source.ndim == 1:
        out = source[: shape[0]]
    else:
        out = torch.cat([source, source], dim=1)[: shape[0], : shape[1]]
    if tuple(out.shape) != shape:
        raise ValueError(f"cannot crop a {tuple(source.shape)} tensor to {shape}")
    return out


def _zero_conv(c_in: int, c_out: int) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _out_channels(block: _Block) -> int:
    return int(block[-1].out_channels)   # Conv2d, ResnetBlock2D, Transformer2DModel, Down/Upsample2D


def _largest_divisor(c: int, at_most: int) -> int:
    """Largest divisor of ``c`` not exceeding ``at_most`` (official ``find_denominator``: GroupNorm groups)."""
    return max(g for g in range(1, min(c, at_most) + 1) if c % g == 0)


def _check_supported(unet: UNet2DConditionModel) -> None:
    """The controlled forward covers SD-style UNets: time embedding only, cross-attention context."""
    unsupported = [name for name in ("class_embedding", "add_embedding", "time_embed_act", "encoder_hid_proj")
                   if getattr(unet, name, None) is not None]
    if unsupported or unet.config.center_input_sample:
        raise ValueError(f"ControlModule does not support UNets with {unsupported or 'center_input_sample'}")

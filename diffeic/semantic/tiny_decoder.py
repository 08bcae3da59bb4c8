"""The offline generative decoder of the semantic family: a ControlNet-style control over the frozen tiny backbone.

Rethinking Image Compression on the Web with Generative AI redraws a picture from its parts with Stable Diffusion
1.5 and a Canny ControlNet (Zhang et al., "Adding Conditional Control to Text-to-Image Diffusion Models", ICCV
2023): img2img from the upsampled colour palette, inpainting around the kept regions.  This is the same decoder at
toy width, so the family decodes offline and in tests:

* **condition** (full resolution, :data:`CONDITION_CHANNELS` = 10 channels, :func:`build_condition`): the edge map
  (1), the upsampled palette in [-1, 1] (3), a presence flag for the edges and one for the palette (2), the kept
  regions' mask (1) and their pixels in [-1, 1] (3); an absent part is zeros with its flag (or mask) 0;
* **hint encoder** (ControlNet's ``input_hint_block``): 3×3 convolutions with SiLU, three of stride 2, from the
  condition down to the latent's 1/8 resolution, ending in a zero-initialised convolution to the latent's channels;
* **control**: :class:`~diffeic.diffusion.control.ControlModule` over the frozen UNet, reading ``concat(z_t, hint)``
  and steering the UNet through zero convolutions (:func:`~diffeic.diffusion.control.controlled_unet_forward`);
  the UNet's empty-prompt context is the only text it sees: **the prompt has no effect** (no text encoder);
* **sampling** (:meth:`TinySemanticDecoder.decode`): deterministic DDIM (η = 0) over ``steps`` timesteps spaced
  from ``start`` down to 0 (:func:`~diffeic.diffusion.sampling.spaced_timesteps`), starting from the VAE latent of
  the upsampled palette noised to ``start`` (img2img from the palette), or from pure noise at t = 999 without a
  palette; kept regions RePaint-style (Lugmayr et al., "RePaint: Inpainting using Denoising Diffusion Probabilistic
  Models", CVPR 2022): after every step the latent cells inside a kept box are replaced by the true latent noised
  to the next timestep, and the exact pixels are pasted at the end; optionally the low frequencies of the result
  are taken from the palette's latent (:func:`~diffeic.diffusion.colour.colour_fix`).

The image is padded (edge replication) to a multiple of :data:`PAD` pixels for the UNet and cropped back.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ControlConfig, ScheduleConfig
from ..diffusion.backbone import FrozenBackbone
from ..diffusion.colour import colour_fix
from ..diffusion.control import ControlModule, controlled_unet_forward
from ..diffusion.sampling import alphas_cumprod, cpu_randn, spaced_timesteps
from ..sizes import size_text
from .palette import upsample_palette
from .regions import KeptRegion

Tensor = torch.Tensor

#: Channels of the full-resolution condition (see the module docstring for their order).
CONDITION_CHANNELS = 10
#: The decoder pads images to a multiple of this many pixels (VAE 1/8 × the UNet's three downsamplings).
PAD = 64
#: Timesteps of the training schedule (SD's 1000-step scaled-linear DDPM).
NUM_TIMESTEPS = 1000

__all__ = ["TinyDecoderSettings", "TinySemanticDecoder", "HintEncoder", "build_condition", "CONDITION_CHANNELS",
           "PAD"]


@dataclass(frozen=True)
class TinyDecoderSettings:
    """Decode-time knobs of :class:`TinySemanticDecoder`.

    ``steps``: denoising calls (1 .. ``start + 1``); ``start``: img2img start timestep when a palette is present
    (1 .. 999; without a palette sampling starts from pure noise at 999); ``colour_fix``: take the low frequencies
    from the upsampled palette (only when a palette is present).
    """

    steps: int = 8
    start: int = 600
    colour_fix: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "start"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"TinyDecoderSettings.{name} must be an integer, got {value!r}")
        if not 1 <= self.start <= NUM_TIMESTEPS - 1:
            raise ValueError(f"TinyDecoderSettings.start must be in 1..{NUM_TIMESTEPS - 1}, got {self.start}")
        if not 1 <= self.steps <= self.start + 1:
            raise ValueError(f"TinyDecoderSettings.steps must be in 1..{self.start + 1} (one per timestep up to "
                             f"start={self.start}), got {self.steps}")
        if not isinstance(self.colour_fix, (bool, np.bool_)):
            raise ValueError(f"TinyDecoderSettings.colour_fix must be True or False, got {self.colour_fix!r}")


class HintEncoder(nn.Module):
    """ControlNet's input hint block: full-resolution condition → ``out_channels`` at 1/8 (three stride-2 convs).

    ``widths`` (3 values): the channels at full, 1/2 and 1/4 resolution; two 3×3 convs per level (the second of
    stride 2), SiLU between, and a zero-initialised 3×3 conv at 1/8 to ``out_channels``.
    """

    def __init__(self, in_channels: int, widths: Sequence[int], out_channels: int) -> None:
        super().__init__()
        if len(widths) != 3 or any(int(w) < 1 for w in widths):
            raise ValueError(f"hint_widths must be three positive channel counts (full, 1/2, 1/4), got {widths}")
        layers: list = []
        c = in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.SiLU(), nn.Conv2d(w, w, 3, padding=1, stride=2), nn.SiLU()]
            c = w
        out = nn.Conv2d(c, out_channels, 3, padding=1)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(*layers, out)

    def forward(self, cond: Tensor) -> Tensor:
        return self.net(cond)


# --------------------------------------------------------------------------- the condition

def _to_pm1(rgb8: np.ndarray) -> Tensor:
    return torch.from_numpy(np.array(rgb8, dtype=np.uint8)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def build_condition(height: int, width: int, edges: Optional[np.ndarray] = None,
                    palette: Optional[np.ndarray] = None, regions: Sequence[KeptRegion] = ()) -> Tensor:
    """The ``(CONDITION_CHANNELS, height, width)`` float condition of some parts (module docstring).

    ``edges``: a bool map (any size: resized to the image by nearest neighbour, as an edge map smaller than the
    image, :func:`diffeic.semantic.parts.edge_shape`, is); ``palette``: the *upsampled* palette, uint8
    ``(height, width, 3)`` (:func:`diffeic.semantic.palette.upsample_palette`); ``regions``: kept regions.
    """
    cond = torch.zeros(CONDITION_CHANNELS, height, width)
    if edges is not None:
        e = torch.from_numpy(np.asarray(edges, dtype=np.float32))
        if e.ndim != 2:
            raise ValueError(f"an edge map is 2-D, got shape {tuple(e.shape)}")
        if tuple(e.shape) != (height, width):
            e = F.interpolate(e[None, None], size=(height, width), mode="nearest")[0, 0]
        cond[0] = e
        cond[4] = 1.0
    if palette is not None:
        if np.shape(palette) != (height, width, 3):
            raise ValueError(f"the upsampled palette must be ({height}, {width}, 3), got {np.shape(palette)}")
        cond[1:4] = _to_pm1(palette)
        cond[5] = 1.0
    for region in regions:
        x0, y0, x1, y1 = region.box
        cond[6, y0:y1, x0:x1] = 1.0
        cond[7:10, y0:y1, x0:x1] = _to_pm1(region.pixels)
    return cond


def _pad_to(x: Tensor, multiple: int = PAD) -> Tensor:
    """Replicate-pad the last two dims of ``(B, C, H, W)`` up to a multiple of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x


def _latent_mask(regions: Sequence[KeptRegion], lh: int, lw: int, factor: int) -> Tensor:
    """``(1, 1, lh, lw)``: 1 on latent cells lying wholly inside a kept box (their true latent is known)."""
    mask = torch.zeros(1, 1, lh, lw)
    for region in regions:
        x0, y0, x1, y1 = region.box
        cx0, cy0 = math.ceil(x0 / factor), math.ceil(y0 / factor)
        cx1, cy1 = x1 // factor, y1 // factor
        if cx1 > cx0 and cy1 > cy0:
            mask[..., cy0:cy1, cx0:cx1] = 1.0
    return mask


# --------------------------------------------------------------------------- the decoder

class TinySemanticDecoder(nn.Module):
    """Control module (+ its hint encoder) over a frozen tiny backbone (:class:`FrozenBackbone`).

    ``arch`` (plain data, :meth:`default_arch`): ``width_ratio``, ``head_dim``, ``norm_groups`` of the control module
    (:class:`~diffeic.config.ControlConfig`), ``hint_widths`` of the hint encoder, ``init_from_unet`` (crop-initialise
    the control from the UNet, as DiffEIC does) and ``init_seed`` (the deterministic random initialisation).
    """

    def __init__(self, backbone: FrozenBackbone, arch: Dict[str, Any]) -> None:
        super().__init__()
        arch = self.check_arch(arch)
        self.arch = arch
        self.backbone = backbone
        latent = int(backbone.unet.config.in_channels)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(arch["init_seed"])
            cfg = ControlConfig(width_ratio=arch["width_ratio"], head_dim=arch["head_dim"],
                                norm_groups=arch["norm_groups"])
            self.control = ControlModule.from_unet(backbone.unet, cfg, init_from_unet=arch["init_from_unet"])
            self.hint = HintEncoder(CONDITION_CHANNELS, arch["hint_widths"], latent)
        self.vae_factor = 2 ** (len(backbone.vae.config.block_out_channels) - 1)

    @staticmethod
    def default_arch() -> Dict[str, Any]:
        """The architecture of the ``semantic_tiny`` decoder (a fresh dict)."""
        return {"width_ratio": 0.5, "head_dim": 4, "norm_groups": 8, "hint_widths": [16, 32, 64],
                "init_from_unet": True, "init_seed": 0}

    @classmethod
    def check_arch(cls, arch: Dict[str, Any]) -> Dict[str, Any]:
        """``arch`` with its keys checked against :meth:`default_arch` (unknown or missing keys: ``ValueError``)."""
        if not isinstance(arch, dict):
            raise ValueError(f"the decoder's arch is a mapping, got {type(arch).__name__}")
        known = cls.default_arch()
        unknown, missing = sorted(set(arch) - set(known)), sorted(set(known) - set(arch))
        if unknown or missing:
            raise ValueError(f"decoder arch: unknown keys {unknown}, missing keys {missing} "
                             f"(expected {sorted(known)})")
        out = dict(arch)
        out["hint_widths"] = [int(w) for w in arch["hint_widths"]]
        out["init_from_unet"] = bool(arch["init_from_unet"])
        out["init_seed"] = int(arch["init_seed"])
        return out

    # ------------------------------------------------------------------ weights
    def trainable_state(self) -> Dict[str, torch.Tensor]:
        """What a checkpoint stores: the control module's and the hint encoder's tensors (``control.*``, ``hint.*``)."""
        state = {f"control.{k}": v for k, v in self.control.state_dict().items()}
        state.update({f"hint.{k}": v for k, v in self.hint.state_dict().items()})
        return state

    def load_trainable_state(self, state: Dict[str, torch.Tensor]) -> None:
        """Load :meth:`trainable_state` tensors, strictly: a missing, unexpected or wrongly shaped tensor raises a
        ``ValueError`` naming it (a checkpoint of another architecture, or of another decoder)."""
        own = self.trainable_state()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"decoder weights do not match this architecture: missing {missing[:5]}"
                             f"{' …' if len(missing) > 5 else ''} ({len(missing)}), unexpected {unexpected[:5]}"
                             f"{' …' if len(unexpected) > 5 else ''} ({len(unexpected)})")
        for name, value in state.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"decoder weight {name!r} is not a tensor ({type(value).__name__})")
            if tuple(value.shape) != tuple(own[name].shape):
                raise ValueError(f"decoder weight {name!r} has shape {tuple(value.shape)}, this architecture needs "
                                 f"{tuple(own[name].shape)}")
        with torch.no_grad():
            for name, value in state.items():
                own[name].copy_(value.to(own[name].dtype))

    # ------------------------------------------------------------------ the network
    def eps(self, z_t: Tensor, t: Tensor, hint: Tensor) -> Tensor:
        """Predicted noise of the controlled frozen UNet for latents ``z_t`` at timesteps ``t`` given ``hint``."""
        context = self.backbone.text_embedding.to(z_t).expand(z_t.shape[0], -1, -1)
        return controlled_unet_forward(self.backbone.unet, self.control, z_t, t, context, hint)

    def noise_loss(self, x01: Tensor, cond: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """The training objective, ``MSE(ε, ε̂(√ᾱ_t z_0 + √(1−ᾱ_t) ε, t, hint(cond)))`` with ``z_0`` the VAE latent
        of ``x01`` (B, 3, H, W) in [0, 1] and ``cond`` its (B, 10, H, W) condition; H, W multiples of :data:`PAD`."""
        with torch.no_grad():
            z0 = self.backbone.encode(x01)
        a = alphas_cumprod_tensor().to(z0)[t.to(z0.device)].view(-1, 1, 1, 1)
        z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
        return F.mse_loss(self.eps(z_t, t.to(z0.device), self.hint(cond)), noise)

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def decode(self, parts: Any, settings: TinyDecoderSettings, seed: int) -> Tensor:
        """``(3, parts.height, parts.width)`` float32 in [0, 1] from the parts (any subset; the prompt has no effect:
        this model has no text encoder); kept regions pasted exactly; deterministic for a seed on CPU."""
        if not isinstance(settings, TinyDecoderSettings):
            raise TypeError(f"settings must be TinyDecoderSettings, got {type(settings).__name__}")
        if getattr(parts, "is_fallback", False):
            raise ValueError("a fallback stream holds a plain image, not parts: decode it without the decoder")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        h, w = int(parts.height), int(parts.width)
        regions = tuple(parts.regions or ())
        pal = upsample_palette(parts.palette, h, w) if parts.palette is not None else None
        device = next(self.control.parameters()).device
        cond = _pad_to(build_condition(h, w, parts.edges, pal, regions)[None]).to(device)
        generator = torch.Generator().manual_seed(int(seed))

        # The image the latent starts from / is known from: palette (else mid-grey) with the kept pixels in it.
        base = torch.full((1, 3, h, w), 0.5) if pal is None else torch.from_numpy(np.array(pal, dtype=np.uint8)).permute(2, 0, 1)[None] / 255.0
        known = base.clone()
        for region in regions:
            x0, y0, x1, y1 = region.box
            known[0, :, y0:y1, x0:x1] = torch.from_numpy(np.array(region.pixels, dtype=np.uint8)).permute(2, 0, 1) / 255.
        z_known = self.backbone.encode(_pad_to(known).to(device))
        z_pal = self.backbone.encode(_pad_to(base).to(device)) if pal is not None else None
        lh, lw = z_known.shape[-2:]
        mask = _latent_mask(regions, lh, lw, self.vae_factor).to(device) if regions else None

        alphas = alphas_cumprod_tensor().to(device)
        first = settings.start if pal is not None else NUM_TIMESTEPS - 1
        steps = min(settings.steps, first + 1)
        timesteps = spaced_timesteps(first, steps)
        noise = cpu_randn(z_known.shape, generator, z_known)
        if pal is not None:     # img2img from the palette (with the kept pixels in it)
            z = alphas[first].sqrt() * z_known + (1 - alphas[first]).sqrt() * noise
        else:
            z = noise
        hint = self.hint(cond)
        for i, t in enumerate(timesteps):
            a_t = alphas[t]
            a_prev = alphas[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.ones((), device=device)
            eps = self.eps(z, torch.full((1,), t, dtype=torch.long, device=device), hint)
            x0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
            z = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
            if mask is not None:      # RePaint: the known cells follow the true latent down the chain
                if i + 1 < len(timesteps):
                    known_t = a_prev.sqrt() * z_known + (1 - a_prev).sqrt() * cpu_randn(z.shape, generator, z)
                else:
                    known_t = z_known
                z = mask * known_t + (1 - mask) * z
        if z_pal is not None and settings.colour_fix:
            z = colour_fix(z, z_pal)
        x = self.backbone.decode(z)[0, :, :h, :w].float().cpu()
        for region in regions:
            x0, y0, x1, y1 = region.box
            x[:, y0:y1, x0:x1] = torch.from_numpy(np.array(region.pixels, dtype=np.uint8)).permute(2, 0, 1) / 255.0
        return x.clamp(0, 1).contiguous()


_ALPHAS: Optional[Tensor] = None


def alphas_cumprod_tensor() -> Tensor:
    """ᾱ_t of the backbone's training schedule (SD's scaled-linear 1000-step DDPM), computed once."""
    global _ALPHAS
    if _ALPHAS is None:
        _ALPHAS = alphas_cumprod(ScheduleConfig())
    return _ALPHAS

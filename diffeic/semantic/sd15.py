"""The ``semantic_sd15`` decoder: Stable Diffusion 1.5 with a Canny ControlNet, as in Rethinking Image Compression on
the Web with Generative AI, through diffusers.

* **img2img from the palette**: ``StableDiffusionControlNetImg2ImgPipeline`` starts from the upsampled palette
  (:func:`~diffeic.semantic.palette.upsample_palette`) at ``strength`` (without a palette: from noise, strength 1),
  conditioned on the prompt and on the edge map through the Canny ControlNet (without edges: a blank control
  image at scale 0);
* **kept regions**: ``StableDiffusionControlNetInpaintPipeline`` with a mask that keeps the regions, which are then
  pasted back exactly (:func:`~diffeic.semantic.regions.paste_regions`).

The picture is generated at the edge map's resolution (short side ``min(512, H, W)``, SD1.5's native size) rounded
to multiples of 64, then resized (bicubic) to the image size.  Weights: a local diffusers folder or a hub id for
the base (``runwayml/stable-diffusion-v1-5``-style, default :data:`~diffeic.semantic.config.DEFAULT_SD15`) and for
the ControlNet (default ``lllyasviel/sd-controlnet-canny``), read from the hub cache first; with
``HF_HUB_OFFLINE=1`` only local files are tried, and a missing model raises :class:`SD15Unavailable` saying what to
download and where to point the codec (as the SD2.1 loader, :mod:`diffeic.diffusion.sd_source`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..config import check_float, check_int
from ..diffusion.sd_source import BackboneUnavailableError, SDSource, cache_first, low_memory, resolve_source
from ..util import first_line
from .config import CONTROLNET_ENV, DEFAULT_CONTROLNET, DEFAULT_SD15, SD15_ENV, SemanticConfig
from .palette import upsample_palette
from .parts import edge_shape
from .regions import paste_regions

#: Generation sizes are multiples of this (the SD1.5 UNet's latent is downsampled 3 times, the VAE 8×).
SIZE_MULTIPLE = 64
#: The text encoder's context length (CLIP ViT-L/14).
TEXT_LEN = 77

__all__ = ["SD15Decoder", "SD15Settings", "SD15Unavailable", "generation_size", "how_to_get_sd15"]


class SD15Unavailable(BackboneUnavailableError):
    """The SD1.5 base or the Canny ControlNet cannot be found or read."""


@dataclass(frozen=True)
class SD15Settings:
    """Decode-time knobs of the SD1.5 decoder (checked: ``ValueError`` naming the field)."""

    steps: int = 20                 # denoising steps of the diffusers scheduler
    strength: float = 0.8           # img2img strength from the palette (1: pure noise)
    guidance: float = 7.5           # classifier-free guidance scale (≤ 1: none)
    control_scale: float = 1.0      # ControlNet conditioning scale

    def __post_init__(self) -> None:
        check_int("steps", self.steps, 1, 1000)
        check_float("strength", self.strength, 0.0, 1.0)
        check_float("guidance", self.guidance, 0.0, 100.0, lo_open=False)
        check_float("control_scale", self.control_scale, 0.0, 10.0, lo_open=False)


def how_to_get_sd15(what: str, location: str) -> str:
    """The advice every :class:`SD15Unavailable` ends with."""
    return (f"The semantic_sd15 decoder needs SD1.5 (diffusers layout: vae/, unet/, text_encoder/, tokenizer/, "
            f"scheduler/) and the Canny ControlNet. Download them once (`hf download {DEFAULT_SD15} --local-dir "
            f"/path/sd15`, `hf download {DEFAULT_CONTROLNET} --local-dir /path/controlnet-canny`) and set "
            f"{SD15_ENV}=/path/sd15 and {CONTROLNET_ENV}=/path/controlnet-canny (or the config's sd15_path and "
            f"controlnet_path), or run once online so the hub cache holds them (HF_HUB_OFFLINE=1 then reads only "
            f"the cache). Tried: the {what} at {location!r}.")


def _source(path: str, what: str) -> SDSource:
    try:
        return resolve_source(path)
    except BackboneUnavailableError:
        raise SD15Unavailable(f"{what} {path!r} does not exist. " + how_to_get_sd15(what, path)) from None


def _load(load: Callable, source: SDSource, what: str, **kwargs: Any) -> Any:
    try:
        return cache_first(load, source, **kwargs)
    except SD15Unavailable:
        raise
    except (BackboneUnavailableError, OSError, ValueError, KeyError, RuntimeError) as err:
        raise SD15Unavailable(f"cannot load the {what} from {source.describe()} ({type(err).__name__}: "
                              f"{first_line(err)}). " + how_to_get_sd15(what, source.location)) from err


def generation_size(height: int, width: int) -> Tuple[int, int]:
    """``(h, w)`` the picture of a ``height × width`` image is generated at: its edge map's size
    (:func:`~diffeic.semantic.parts.edge_shape`) rounded to the nearest multiple of 64 (at least 64)."""
    eh, ew = edge_shape(height, width)
    return tuple(max(SIZE_MULTIPLE, SIZE_MULTIPLE * round(v / SIZE_MULTIPLE)) for v in (eh, ew))


def _resize(rgb: np.ndarray, height: int, width: int, resample=Image.Resampling.BICUBIC) -> np.ndarray:
    if rgb.shape[:2] == (height, width):
        return rgb
    return np.asarray(Image.fromarray(rgb, "RGB").resize((width, height), resample), dtype=np.uint8)


class SD15Decoder(nn.Module):
    """The diffusers ControlNet pipelines over shared modules (VAE, UNet, ControlNet, text encoder), frozen.

    ``encode_text(prompt) → (1, 77, dim)``: the prompt's embedding (default: the pipeline's CLIP text encoder);
    tests pass their own with a tiny random pipeline (:meth:`from_components`).
    """

    def __init__(self, img2img: Any, inpaint: Any, encode_text: Optional[Callable[[str], torch.Tensor]] = None) -> None:
        super().__init__()
        self.img2img, self.inpaint = img2img, inpaint
        self.unet, self.controlnet, self.vae = img2img.unet, img2img.controlnet, img2img.vae
        self._encode_text = encode_text or self._clip_text
        self._fingerprint: Optional[str] = None
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_components(cls, vae: nn.Module, unet: nn.Module, controlnet: nn.Module, scheduler: Any,
                        text_encoder: Optional[nn.Module] = None, tokenizer: Any = None,
                        encode_text: Optional[Callable[[str], torch.Tensor]] = None) -> "SD15Decoder":
        """The decoder from diffusers modules (both pipelines share them)."""
        from diffusers import StableDiffusionControlNetImg2ImgPipeline, StableDiffusionControlNetInpaintPipeline

        parts = dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, controlnet=controlnet,
                     scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        img2img = StableDiffusionControlNetImg2ImgPipeline(**parts)
        inpaint = StableDiffusionControlNetInpaintPipeline(**parts)
        for pipe in (img2img, inpaint):
            pipe.set_progress_bar_config(disable=True)
        return cls(img2img, inpaint, encode_text)

    @classmethod
    def from_config(cls, cfg: SemanticConfig) -> "SD15Decoder":
        """SD1.5 and the Canny ControlNet from ``cfg``'s locations (:meth:`SemanticConfig.resolved_sd15`,
        :meth:`~SemanticConfig.resolved_controlnet`); :class:`SD15Unavailable` saying what to do when absent."""
        from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        base = _source(cfg.resolved_sd15(), "SD1.5 base")
        control = _source(cfg.resolved_controlnet(), "Canny ControlNet")
        low = low_memory()
        controlnet = _load(ControlNetModel.from_pretrained, control, "Canny ControlNet", **low)
        vae = _load(AutoencoderKL.from_pretrained, base, "SD1.5 base", subfolder="vae", **low)
        unet = _load(UNet2DConditionModel.from_pretrained, base, "SD1.5 base", subfolder="unet", **low)
        text_encoder = _load(CLIPTextModel.from_pretrained, base, "SD1.5 base", subfolder="text_encoder")
        tokenizer = _load(CLIPTokenizer.from_pretrained, base, "SD1.5 base", subfolder="tokenizer")
        scheduler = _load(DDIMScheduler.from_pretrained, base, "SD1.5 base", subfolder="scheduler")
        return cls.from_components(vae.float(), unet.float(), controlnet.float(), scheduler, text_encoder.float(),
                                   tokenizer)

    # ------------------------------------------------------------------ what the codec asks of a decoder
    def trainable_state(self) -> Dict[str, torch.Tensor]:
        """Nothing is trained here: the weights are SD1.5's and the ControlNet's (their fingerprint covers them)."""
        return {}

    def load_trainable_state(self, state: Dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"the SD1.5 decoder has no trainable weights, got {len(state)} tensor(s) "
                             f"({', '.join(sorted(state)[:3])}, ...)")

    def backbone_fingerprint(self) -> str:
        """SHA-256 (16 hex digits) of the VAE, UNet, ControlNet and text encoder weights; cached."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            modules = [("vae", self.vae), ("unet", self.unet), ("controlnet", self.controlnet),
                       ("text_encoder", self.img2img.text_encoder)]
            for prefix, module in modules:
                if module is None:
                    continue
                for name, t in module.state_dict().items():
                    h.update(f"{prefix}.{name}".encode())
                    h.update(t.detach().to("cpu", torch.float32).contiguous().numpy())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    @property
    def _device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def _clip_text(self, prompt: str) -> torch.Tensor:
        pipe = self.img2img
        if pipe.tokenizer is None or pipe.text_encoder is None:
            raise ValueError("this SD1.5 decoder has no text encoder: build it with encode_text")
        ids = pipe.tokenizer(prompt, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return pipe.text_encoder(ids.to(self._device))[0]

    @torch.no_grad()
    def decode(self, parts: Any, settings: SD15Settings, seed: int) -> torch.Tensor:
        """``(3, parts.height, parts.width)`` float32 in [0, 1] redrawn from ``parts`` (any subset; not a fallback)
        with ``settings``; the noise from a CPU generator seeded with ``seed``."""
        h, w = parts.height, parts.width
        gh, gw = generation_size(h, w)
        if parts.palette is not None:
            init, strength = upsample_palette(parts.palette, gh, gw), settings.strength
        else:
            init, strength = np.full((gh, gw, 3), 127, np.uint8), 1.0
        if parts.edges is not None:
            edges = np.asarray(Image.fromarray(parts.edges.astype(np.uint8) * 255, "L")
                               .resize((gw, gh), Image.Resampling.NEAREST))
            control, scale = np.repeat(edges[..., None], 3, axis=2), settings.control_scale
        else:
            control, scale = np.zeros((gh, gw, 3), np.uint8), 0.0
        text = self._encode_text(parts.prompt or "")
        common = dict(prompt_embeds=text, negative_prompt_embeds=self._encode_text("") if settings.guidance > 1
                      else None, control_image=Image.fromarray(control, "RGB"), height=gh, width=gw,
                      num_inference_steps=settings.steps, guidance_scale=settings.guidance,
                      controlnet_conditioning_scale=scale, generator=torch.Generator("cpu").manual_seed(int(seed)),
                      output_type="np")
        if parts.regions:
            mask = np.full((h, w), 255, np.uint8)
            for region in parts.regions:
                x0, y0, x1, y1 = region.box
                mask[y0:y1, x0:x1] = 0                                     # kept: not redrawn
            start = paste_regions(_resize(init, h, w), parts.regions)
            out = self.inpaint(image=Image.fromarray(_resize(start, gh, gw), "RGB"),
                               mask_image=Image.fromarray(mask, "L").resize((gw, gh), Image.Resampling.NEAREST),
                               strength=strength, **common).images[0]
        else:
            out = self.img2img(image=Image.fromarray(init, "RGB"), strength=strength, **common).images[0]
        rgb = _resize((np.clip(out, 0, 1) * 255).round().astype(np.uint8), h, w)
        if parts.regions:
            rgb = paste_regions(rgb, parts.regions)
        return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float().div(255)

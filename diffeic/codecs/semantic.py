"""The semantic family (Rethinking Image Compression on the Web with Generative AI): a picture is sent as what a
text-to-image model needs to redraw it — a prompt, Canny edges, a colour palette, kept regions — and a generative
decoder redraws it.

Stream: the shared container (family ``semantic``; the decode ``steps``/``seed`` in its header when the encoder
chose them) around a parts stream (:mod:`diffeic.semantic.parts`; made by :func:`diffeic.semantic.encode_parts`,
with the never-larger rule: a *fallback* stream holds a plain WebP of the image instead, and decodes to it).

Decoders (:mod:`diffeic.semantic.config`): ``semantic_tiny``, a control module over the shipped tiny backbone
(:mod:`diffeic.semantic.tiny_decoder`; it has no text encoder, so **the prompt has no effect on it**), and
``semantic_sd15``, SD1.5 with a Canny ControlNet (:mod:`diffeic.semantic.sd15`).  A checkpoint folder holds
``config.yaml`` + ``decoder.safetensors`` (the tiny decoder's trainable weights; empty for SD1.5, whose weights
come from its own folders or the hub).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import yaml
from torch import nn

from ..bitstream import NON_FINITE_STREAM, BitstreamError, StreamHeader, describe, pack, unpack
from ..semantic.api import SemanticParts, decode_parts, encode_parts, inspect_parts
from ..semantic.config import PRESETS, TINY_BACKBONE, SemanticConfig
from ..semantic.prompt import caption_image
from ..sizes import size_text
from .base import Bits, Codec, config_from_dict, load_config_file
from .folder import Checkpoint, CheckpointError
from .registry import PRETRAINED_DIR
from .settings import StepSeedSettings

DECODER_FILE = "decoder.safetensors"
#: What the codec says about prompts when the decoder cannot read them.
NO_TEXT_NOTE = "the tiny decoder has no text encoder: the prompt is sent but has no effect on its reconstruction"


def tiny_backbone(where: str = TINY_BACKBONE):
    """The frozen tiny prior the tiny decoder runs over: ``where`` is a folder, or the name of one shipped in
    ``diffeic/data/pretrained`` (default ``tiny-backbone``).  ``FileNotFoundError`` naming both when neither."""
    from ..config import get_config
    from ..diffusion.backbone import FrozenBackbone

    folder = Path(where).expanduser()
    if not folder.is_dir():
        folder = PRETRAINED_DIR / where
    if not (folder / "unet").is_dir():
        raise FileNotFoundError(f"backbone = {where!r}: neither a folder nor a backbone shipped in {PRETRAINED_DIR} "
                                f"(a diffusers folder with vae/, unet/ and empty_prompt.safetensors)")
    return FrozenBackbone.from_pretrained(get_config("tiny").backbone, str(folder))


def to_rgb8(x: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` float in [0, 1] → ``(H, W, 3)`` uint8, rounded as when saved to PNG."""
    return x.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def from_rgb8(rgb: np.ndarray, device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    """``(H, W, 3)`` uint8 → ``(3, H, W)`` float32 in [0, 1]."""
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float().div(255).to(device)


class SemanticCodec(StepSeedSettings, Codec):
    """``SemanticCodec.from_config("semantic_tiny")`` (random decoder weights, offline) or ``from_pretrained(folder)``
    (any name through :func:`diffeic.load_codec`); family id ``semantic`` in the container.

    ``compress(x, prompt=..., edges=True, palette=32, keep=[(x0, y0, x1, y1), ...])`` → bytes;
    ``decompress(bits, steps=None, seed=None)`` → the redrawn image at the original size; ``inspect(bits)`` → the
    parts and their bytes (no model needed).
    """

    family = "semantic"
    presets = PRESETS
    weight_files = (DECODER_FILE,)

    def __init__(self, config: SemanticConfig, decoder: nn.Module, trained: bool = False) -> None:
        super().__init__(config, trained)
        self.decoder = decoder

    def __repr__(self) -> str:
        return (f"SemanticCodec(preset={self.config.name!r}, decoder={self.config.decoder!r}, "
                f"is_trained={self.is_trained}, fingerprint={self.fingerprint()[:8]!r})")

    # ------------------------------------------------------------------ construction (plug-in)
    @classmethod
    def get_config(cls, config: Union[str, Path, SemanticConfig]) -> SemanticConfig:
        """A fresh config from a preset name, a YAML file (a checkpoint's ``config.yaml`` too) or a config."""
        if isinstance(config, SemanticConfig):
            return dataclasses.replace(config)
        return load_config_file(SemanticConfig, str(config), PRESETS, cls.family)

    @classmethod
    def config_from_meta(cls, model: Any, meta: Dict[str, Any]) -> SemanticConfig:
        return config_from_dict(SemanticConfig, {} if model is None else model, "model")

    @classmethod
    def _decoder(cls, cfg: SemanticConfig) -> Tuple[SemanticConfig, nn.Module]:
        """The config with its decoder's architecture filled in, and the decoder (random deterministic weights)."""
        if cfg.decoder == "sd15":
            from ..semantic.sd15 import SD15Decoder

            return cfg, SD15Decoder.from_config(cfg)
        from ..semantic.tiny_decoder import TinySemanticDecoder

        cfg = dataclasses.replace(cfg, arch=dict(cfg.arch or TinySemanticDecoder.default_arch()))
        return cfg, TinySemanticDecoder(tiny_backbone(cfg.backbone), cfg.arch)     # seeded by its arch's init_seed

    @classmethod
    def from_config(cls, config: Union[str, Path, SemanticConfig] = "semantic_tiny") -> "SemanticCodec":
        """Random, deterministic decoder weights (its arch's ``init_seed``) from a preset name, a YAML file or a config
        (``semantic_sd15``: the pretrained SD1.5 + ControlNet weights, local or from the hub)."""
        cfg, decoder = cls._decoder(cls.get_config(config))
        return cls(cfg, decoder, trained=cfg.decoder == "sd15").eval()

    @classmethod
    def build(cls, ckpt: Checkpoint, **options: Any) -> "SemanticCodec":
        if options:
            raise TypeError(f"{cls.__name__}.from_pretrained() got unexpected keyword(s): {', '.join(options)}")
        cfg, decoder = cls._decoder(ckpt.config)
        try:
            decoder.load_trainable_state(ckpt.tensors[DECODER_FILE])
        except (ValueError, RuntimeError, KeyError) as err:
            raise CheckpointError(f"{ckpt.folder / DECODER_FILE}: {err}") from None
        return cls(cfg, decoder, trained=ckpt.trained)

    def weights(self) -> Dict[str, Dict[str, torch.Tensor]]:
        return {DECODER_FILE: {k: v.detach().contiguous() for k, v in self.decoder.trainable_state().items()}}

    def model_config(self) -> Dict[str, Any]:
        return dataclasses.asdict(self.config)

    # ------------------------------------------------------------------ identity
    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    def describe_model(self) -> List[bytes]:
        config = dataclasses.asdict(self.config)
        for where in ("backbone", "sd15_path", "controlnet_path"):     # where weights lie is not what they are
            config.pop(where)
        # the frozen weights the decoder runs over: the tiny backbone's fingerprint, or SD1.5's and the ControlNet's
        frozen = self.decoder.backbone_fingerprint() if self.config.decoder == "sd15" else \
            self.decoder.backbone.fingerprint()
        return [self.family.encode(), yaml.safe_dump(config, sort_keys=True).encode(), frozen.encode()]

    def fingerprinted_tensors(self) -> List[Tuple[str, torch.Tensor]]:
        return sorted(self.decoder.trainable_state().items())

    # ------------------------------------------------------------------ encoding
    def _prompt(self, rgb: np.ndarray, prompt: Optional[str]) -> Optional[str]:
        """The prompt part: ``""`` none (the caller's explicit choice), a text as is, ``None`` a caption by the
        local captioning model (:func:`diffeic.semantic.caption_image`) or :class:`CaptionUnavailable`."""
        if prompt == "":
            return None
        if prompt is not None:
            return prompt
        return caption_image(rgb)

    def compress(self, x: torch.Tensor, prompt: Optional[str] = None, edges: bool = True,
                 palette: Optional[int] = 32, keep: Sequence[Sequence[int]] = (), *, fallback: bool = True,
                 sampler: Optional[str] = None, steps: Optional[int] = None, seed: Optional[int] = None,
                 max_steps: Optional[int] = None) -> Union[bytes, List[bytes]]:
        """Compress ``(3,H,W)`` in [0,1] → bytes, or ``(B,3,H,W)`` → list of bytes (the same parts chosen for each).

        * ``prompt``: the text to send; ``""`` sends none; ``None`` (default) asks the local captioning model
          (:func:`diffeic.semantic.caption_image`: ``$DIFFEIC_CAPTION_MODEL``, nothing downloaded) and raises
          :class:`~diffeic.semantic.CaptionUnavailable` when there is none — never a silent empty prompt.
          (The ``semantic_tiny`` decoder ignores text.)
        * ``edges`` (Canny), ``palette`` (grid long side, ``None`` for none), ``keep`` (boxes kept as pixels):
          :func:`diffeic.semantic.encode_parts`; ``fallback``: the never-larger rule (a plain WebP of the image is
          stored when it is no larger than the parts; a :class:`~diffeic.semantic.FallbackUsed` warning says so).
        * ``steps``/``seed``: stored in the stream as its decode settings (when they differ from the model's);
          ``sampler`` must be ``None`` (it exists so that every family is called alike).
        """
        self._no_sampler(sampler)
        batch, single = self.check_images(x)
        settings = self._header_settings(steps, seed, max_steps)
        h, w = batch.shape[-2:]
        fp = self.fingerprint()[:8]
        streams = []
        for image in batch:
            rgb = to_rgb8(image)
            data = encode_parts(rgb, self._prompt(rgb, prompt), edges=edges, palette=palette, keep=keep,
                                fallback=fallback)
            streams.append(pack(StreamHeader(fingerprint=fp, height=h, width=w, family=self.family, **settings),
                                data))
        return streams[0] if single else streams

    # ------------------------------------------------------------------ decoding
    def decode_defaults(self) -> Dict[str, int]:
        return {"steps": self.config.steps, "seed": self.config.seed}

    @staticmethod
    def inspect(bits: Bits) -> Dict[str, Any]:
        """A stream's header (:func:`diffeic.bitstream.describe`) and its parts, no model needed: ``parts`` (names),
        ``prompt``, ``boxes``, ``fallback`` and ``bytes`` per part, ``framing`` (the parts' lengths and sizes) and
        ``container`` (header and checksum) included, so that ``bytes`` adds up to ``total_bytes``."""
        info = describe(bits)
        if info["family"] != SemanticCodec.family:
            raise BitstreamError(f"stream was made by a {info['family']!r} codec, not by a 'semantic' one (its header: "
                                 f"diffeic.bitstream.describe)")
        parts = inspect_parts(unpack(bits)[1])
        _same_size(parts["height"], parts["width"], info["height"], info["width"])
        return {**info, "parts": parts["parts"], "prompt": parts["prompt"], "boxes": parts["boxes"],
                "fallback": parts["fallback"], "bytes": {**parts["bytes"], "container": info["container_bytes"]}}

    @torch.no_grad()
    def decompress_latents(self, bits: Bits) -> Dict[str, Any]:
        """The stream's parts without redrawing: ``{header, parts}`` (:class:`~diffeic.semantic.SemanticParts`)."""
        header, payload = self._open(bits)
        return {"header": header, "parts": self._parts(header, payload)}

    @staticmethod
    def _parts(header: StreamHeader, payload: bytes) -> SemanticParts:
        parts = decode_parts(payload)
        _same_size(parts.height, parts.width, header.height, header.width)
        return parts

    def decompress(self, bits: Union[Bits, Sequence[Bits]], steps: Optional[int] = None,
                   seed: Optional[int] = None, sampler: Optional[str] = None,
                   progress: bool = False, max_steps: Optional[int] = None) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Decode a stream → ``(3,H,W)`` in [0,1] at the original size; a list of streams → list of images.

        A fallback stream decodes to its WebP; any other is redrawn by the decoder from its parts, with ``steps``
        and ``seed`` (override, else the stream's, else the model's; ``max_steps`` bounds what a stream may ask
        for: :mod:`diffeic.decode_cost`).  ``sampler`` must be ``None``; ``progress`` is ignored.
        """
        return self._decode_streams(bits, self._decode_one, steps, seed, sampler, max_steps)

    def _decode_one(self, header: StreamHeader, payload: bytes, settings: Dict[str, int]) -> torch.Tensor:
        parts = self._parts(header, payload)
        if parts.is_fallback:
            return from_rgb8(parts.fallback, self.device)
        image = self.decoder.decode(parts, self.decoder_settings(settings["steps"]), settings["seed"])
        if not torch.isfinite(image).all():
            raise BitstreamError(NON_FINITE_STREAM)
        if tuple(image.shape) != (3, header.height, header.width):
            raise RuntimeError(f"the {self.config.decoder} decoder returned shape {tuple(image.shape)} for a "
                               f"{size_text(header.height, header.width)} stream")
        return image.clamp(0, 1)

    def decoder_settings(self, steps: int) -> Any:
        """The decoder's own settings object for ``steps`` denoising calls (the rest from the config)."""
        c = self.config
        if c.decoder == "sd15":
            from ..semantic.sd15 import SD15Settings

            return SD15Settings(steps=steps, strength=c.strength, guidance=c.guidance, control_scale=c.control_scale)
        from ..semantic.tiny_decoder import TinyDecoderSettings

        return TinyDecoderSettings(steps=steps, start=c.start, colour_fix=c.colour_fix)


def _same_size(h: int, w: int, height: int, width: int) -> None:
    if (h, w) != (height, width):
        raise BitstreamError(f"corrupt stream: its parts are of a {size_text(h, w)} image, its header says "
                             f"{size_text(height, width)}")


__all__ = ["DECODER_FILE", "NO_TEXT_NOTE", "SemanticCodec", "from_rgb8", "tiny_backbone", "to_rgb8"]

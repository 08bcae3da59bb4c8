"""The codec around a transform codec whose latent is coded by a mean-scale hyperprior (HiFiC, refinement).

The family's model has ``encoder`` (image → y), ``hyperprior`` (:class:`~diffeic.entropy.hyperprior.MeanScaleHyperprior`)
and ``reconstruct(y_hat, **settings)`` (ŷ → padded image in [0, 1]); its checkpoint folder holds ``config.yaml``
+ ``model.safetensors`` (weights and the coder's CDF tables).  A family built this way declares its config class,
presets and model class, and ``decode_defaults`` (:class:`~diffeic.codecs.settings.StepSeedSettings`) when
decoding takes settings.
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import torch
import yaml
from torch import nn

from ..bitstream import NON_FINITE_STREAM, BitstreamError, StreamHeader, pack
from ..lfgcm import Y_STRIDE
from .base import Bits, Codec, config_from_dict, load_config_file, padded_size
from .folder import Checkpoint
from .settings import StepSeedSettings

MODEL_FILE = "model.safetensors"


class TransformCodec(StepSeedSettings, Codec):
    """Base of the HiFiC and refinement codecs (see the module docstring)."""

    config_class: ClassVar[type]
    model_class: ClassVar[type]
    weight_files = (MODEL_FILE,)

    def __init__(self, config: Any, model: nn.Module, trained: bool = False) -> None:
        super().__init__(config, trained)
        self.model = model

    # ------------------------------------------------------------------ the plug-in's declarations
    @classmethod
    def get_config(cls, config: Union[str, Path, Any]) -> Any:
        """A fresh config from a preset name, a YAML file (a checkpoint's ``config.yaml`` too) or a config."""
        if isinstance(config, cls.config_class):
            return dataclasses.replace(config)
        return load_config_file(cls.config_class, str(config), cls.presets, cls.family)

    @classmethod
    def config_from_meta(cls, model: Any, meta: Dict[str, Any]) -> Any:
        return config_from_dict(cls.config_class, {} if model is None else model, "model")

    @classmethod
    def from_config(cls, config: Union[str, Path, Any]) -> "TransformCodec":
        """Random, deterministic initialisation (``config.init_seed``) from a preset name, YAML file or config."""
        cfg = cls.get_config(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.init_seed)
            model = cls.model_class(cfg)
        codec = cls(cfg, model, trained=False)
        codec.eval()
        codec.model.hyperprior.update(force=True)
        return codec

    @classmethod
    def build(cls, ckpt: Checkpoint, **options: Any) -> "TransformCodec":
        if options:
            raise TypeError(f"{cls.__name__}.from_pretrained() got unexpected keyword(s): {', '.join(options)}")
        model = ckpt.load(MODEL_FILE, lambda: cls.model_class(ckpt.config),
                          lambda shapes: ["hyperprior." + n for n in shapes.hyperprior.coding_table_names()])
        return cls(ckpt.config, model, trained=ckpt.trained)      # (empty coding tables are rebuilt when first used)

    def weights(self) -> Dict[str, Dict[str, torch.Tensor]]:
        return {MODEL_FILE: self.model.state_dict()}

    def model_config(self) -> Dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.config).items()}

    def refresh_tables(self) -> None:
        self.model.hyperprior.refresh_tables()

    def describe_model(self) -> List[bytes]:
        return [self.family.encode(), yaml.safe_dump(dataclasses.asdict(self.config), sort_keys=True).encode()]

    def fingerprinted_tensors(self) -> List[Tuple[str, torch.Tensor]]:
        # Everything the decoder depends on, as for DiffEIC's LFGCM: all parameters and all buffers (the CDF
        # and scale tables, the scale bound), so a model that would decode differently has another fingerprint.
        return [*self.model.named_parameters(), *self.model.named_buffers()]

    # ------------------------------------------------------------------ coding
    def compress(self, x: torch.Tensor, *, sampler: Optional[str] = None, steps: Optional[int] = None,
                 seed: Optional[int] = None, max_steps: Optional[int] = None) -> Union[bytes, List[bytes]]:
        """Compress ``(3,H,W)`` in [0,1] → bytes, or ``(B,3,H,W)`` → list of bytes.

        ``steps``/``seed`` (families with a sampling decoder only) are stored as the decoder's defaults; ``steps``
        above what decoders accept by default (:mod:`diffeic.decode_cost`) are refused unless ``max_steps`` allows
        them.  ``sampler`` must be ``None`` (it exists so that every family is called alike).
        """
        self._no_sampler(sampler)
        batch, single = self.check_images(x)
        settings = self._header_settings(steps, seed, max_steps)
        h, w = batch.shape[-2:]
        fp = self.fingerprint()[:8]
        with torch.no_grad():
            y = self.model.encoder(self.pad(batch))
        streams = [pack(StreamHeader(fingerprint=fp, height=h, width=w, family=self.family, **settings),
                        self.model.hyperprior.compress(y[i:i + 1])[0]) for i in range(batch.shape[0])]
        return streams[0] if single else streams

    @torch.no_grad()
    def estimate_bits(self, x: torch.Tensor) -> Union[float, List[float]]:
        """Entropy-model estimate of the payload bits for ``x`` (hard rounding, as coded)."""
        batch, single = self.check_images(x)
        values = self.model.hyperprior.estimate_bits(self.model.encoder(self.pad(batch)))
        return values[0] if single else values

    @torch.no_grad()
    def decompress_latents(self, bits: Bits) -> Dict[str, Any]:
        """Entropy-decode a stream without the synthesis: ``{header, y_hat}``."""
        header, payload = self._open(bits)
        return {"header": header, "y_hat": self._decode_latent(header, payload)}

    def decompress_latent(self, bits: Bits) -> Tuple[StreamHeader, torch.Tensor]:
        """Deprecated spelling: ``(header, y_hat)``; use :meth:`decompress_latents` (the name every family has)."""
        warnings.warn("decompress_latent is deprecated: use decompress_latents (a dict with header and y_hat)",
                      DeprecationWarning, stacklevel=2)
        latents = self.decompress_latents(bits)
        return latents["header"], latents["y_hat"]

    @torch.no_grad()
    def _decode_latent(self, header: StreamHeader, payload: bytes) -> torch.Tensor:
        hp, wp = padded_size(header.height, header.width)
        try:
            y_hat = self.model.hyperprior.decompress(payload, (hp // Y_STRIDE, wp // Y_STRIDE), self.device)
        except (RuntimeError, ValueError, OverflowError) as err:
            raise BitstreamError(f"corrupt payload: {err}") from err
        if not torch.isfinite(y_hat).all():
            raise BitstreamError(NON_FINITE_STREAM)
        return y_hat

    def decompress(self, bits: Union[Bits, Sequence[Bits]], steps: Optional[int] = None,
                   seed: Optional[int] = None, sampler: Optional[str] = None,
                   progress: bool = False, max_steps: Optional[int] = None) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Decode a stream → ``(3,H,W)`` in [0,1] at the original size; a list of streams → list of images.

        ``steps``/``seed`` (sampling decoders) override the stream's header, which overrides the model's
        defaults; ``max_steps`` bounds the work a stream may ask for (:mod:`diffeic.decode_cost`: by default 4×
        the model's default steps), checked when the header is read.  ``sampler`` must be ``None`` and
        ``progress`` is ignored (both exist for uniform calls).
        """
        return self._decode_streams(bits, self._decode_one, steps, seed, sampler, max_steps)

    def _decode_one(self, header: StreamHeader, payload: bytes, settings: Dict[str, int]) -> torch.Tensor:
        y_hat = self._decode_latent(header, payload)
        with torch.no_grad():
            image = self.model.reconstruct(y_hat, **settings)
        if not torch.isfinite(image).all():
            raise BitstreamError(NON_FINITE_STREAM)
        return image[0, :, :header.height, :header.width].clamp(0, 1)


__all__ = ["MODEL_FILE", "TransformCodec"]

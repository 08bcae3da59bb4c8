"""What the non-DiffEIC codec families share: the user-facing codec around a transform codec whose
latent is coded by :class:`~diffeic.entropy.hyperprior.MeanScaleHyperprior`, and its checkpoint folder.  The
input checks and the padded size are DiffEICCodec's too.

A family provides a config dataclass and a model with ``encoder`` (image → y), ``hyperprior`` and
``reconstruct(y_hat, **settings)`` (ŷ → padded image in [0, 1]).  This class adds what every codec
of the library offers: ``compress``/``decompress``/``inspect``/``estimate_bits``, the container
header with the family's id (so each family refuses the others' streams by name), a model
fingerprint, input checks, and ``save_pretrained``/``from_pretrained`` for a folder holding
``config.yaml`` + ``model.safetensors`` (weights and the coder's CDF tables).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from .bitstream import (MAX_SIDE, MAX_STEPS, NON_FINITE_STREAM, BitstreamError, StreamHeader, describe, pack,
                        unpack_for)
from .checkpoint import Fingerprint
from .config import SEED_LIMIT, check_int, load_yaml
from .decode_cost import check_decode_cost, check_steps_to_write, resolve_max_steps
# The families share DiffEIC's padding and y stride (their transforms are built to them).
from .lfgcm import PAD_MULTIPLE, Y_STRIDE
from .sizes import size_text

Bits = Union[bytes, bytearray]
CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.safetensors"


def padded_size(height: int, width: int, multiple: int = PAD_MULTIPLE) -> Tuple[int, int]:
    """The size the codecs work at: H and W rounded up to a multiple of 64."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def pad_image(x: torch.Tensor) -> torch.Tensor:
    """Bottom/right replicate padding to multiples of 64 (edge pixels, not black bars the decoder must learn)."""
    h, w = x.shape[-2:]
    hp, wp = padded_size(h, w)
    return F.pad(x, (0, wp - w, 0, hp - h), mode="replicate") if (hp, wp) != (h, w) else x


def check_images(x: Any, device: torch.device, max_pixels: int, owner: str) -> Tuple[torch.Tensor, bool]:
    """Validate an image ``(3,H,W)`` or batch ``(B,3,H,W)`` in [0,1] → ``(batch float32 on device, was_single)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor image of shape (3,H,W) or (B,3,H,W) in [0,1], got {type(x).__name__}")
    if x.layout != torch.strided:
        raise TypeError(f"expected a dense image tensor, got layout {x.layout} (call x.to_dense() first)")
    if x.is_meta:
        raise ValueError("the image is a meta tensor: it has a shape but no values to compress")
    if not torch.is_floating_point(x):
        raise TypeError(f"expected a floating-point image in [0,1], got dtype {x.dtype} (for uint8 data use x.float() / 255)")
    if x.dim() not in (3, 4):
        raise ValueError(f"expected shape (3,H,W) or (B,3,H,W), got {tuple(x.shape)}")
    single = x.dim() == 3
    batch = x.unsqueeze(0) if single else x
    if batch.shape[1] != 3:
        raise ValueError(f"expected 3 colour channels (RGB) in dimension {0 if single else 1}, got shape {tuple(x.shape)}")
    if batch.numel() == 0:
        raise ValueError(f"empty image: shape {tuple(x.shape)}")
    h, w = batch.shape[-2:]
    if h > MAX_SIDE or w > MAX_SIDE or h * w > max_pixels:
        raise ValueError(f"image {size_text(h, w)} is larger than this codec accepts (sides ≤ {MAX_SIDE}, "
                         f"≤ {max_pixels} pixels; raise {owner}.max_pixels if you have the memory)")
    if not torch.isfinite(batch).all():
        raise ValueError("image contains NaN or Inf values")
    lo, hi = batch.min().item(), batch.max().item()
    if lo < 0 or hi > 1:
        raise ValueError(f"image values must be in [0,1], got min {lo:.4g}, max {hi:.4g}")
    return batch.to(device, torch.float32), single


def config_from_dict(cls: type, data: Dict[str, Any], where: str = "config") -> Any:
    """A flat config dataclass from a mapping: unknown keys are an error, YAML lists become tuples."""
    if not isinstance(data, dict):
        raise TypeError(f"a {cls.__name__} must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {', '.join(unknown)}; expected some of {', '.join(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def read_checkpoint_meta(folder: Union[str, Path]) -> Dict[str, Any]:
    """``config.yaml`` of a checkpoint folder as a dict (``{}`` contents allowed); clear error if absent,
    :class:`~diffeic.checkpoint.CheckpointError` naming the file if it is not a YAML mapping."""
    from .checkpoint import CheckpointError

    folder = Path(folder)
    meta_path = folder / CONFIG_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{folder}: not a diffeic checkpoint folder (no {CONFIG_FILE})")
    try:
        meta = load_yaml(meta_path)
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    meta = {} if meta is None else meta
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path}: expected a mapping, got {type(meta).__name__}")
    return meta


class HyperpriorImageCodec(nn.Module):
    """Base of the HiFiC and refinement codecs (see the module docstring).

    Subclasses set ``family`` (a name in :data:`diffeic.bitstream.FAMILY_IDS`), ``config_class``,
    ``model_class`` (built from a config), ``presets`` and, when decoding takes settings, :meth:`decode_defaults`.
    """

    family: ClassVar[str] = ""
    config_class: ClassVar[type]
    model_class: ClassVar[type]
    presets: ClassVar[Dict[str, Any]] = {}
    #: Largest image (pixels) compress/decompress accept; streams declaring more are refused before allocating.
    max_pixels: int = 64 * 1024 * 1024

    def __init__(self, config: Any, model: nn.Module, trained: bool = False) -> None:
        super().__init__()
        self.config = config
        self.model = model
        self.is_trained = bool(trained)
        self._fingerprint = Fingerprint()

    # ------------------------------------------------------------------ construction
    @classmethod
    def build_model(cls, config: Any) -> nn.Module:
        return cls.model_class(config)

    @classmethod
    def get_config(cls, config: Union[str, Path, Any]) -> Any:
        """A fresh config from a preset name, a YAML file (a checkpoint's ``config.yaml`` too) or a config."""
        if isinstance(config, cls.config_class):
            return dataclasses.replace(config)
        key = str(config)
        if key in cls.presets:
            return cls.presets[key]()
        path = Path(key)
        if path.is_dir():
            path = path / CONFIG_FILE
        if path.suffix in (".yaml", ".yml") and path.is_file():
            data = load_yaml(path) or {}
            if not isinstance(data, dict):
                raise ValueError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
            return config_from_dict(cls.config_class, data.get("model", data), str(path))
        raise ValueError(f"unknown {cls.family} preset or config file {key!r}; presets: {', '.join(cls.presets)}")

    @classmethod
    def from_config(cls, config: Union[str, Path, Any]) -> "HyperpriorImageCodec":
        """Random, deterministic initialisation (``config.init_seed``) from a preset name, YAML file or config."""
        cfg = cls.get_config(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.init_seed)
            model = cls.build_model(cfg)
        codec = cls(cfg, model, trained=False)
        codec.eval()
        codec.model.hyperprior.update(force=True)
        return codec

    @classmethod
    def from_pretrained(cls, path: Union[str, Path],
                        device: Union[str, torch.device, None] = None) -> "HyperpriorImageCodec":
        """Load a checkpoint folder written by :meth:`save_pretrained` (or the trainer's export).

        Checked as a DiffEIC folder is (:mod:`diffeic.checkpoint`): the config's values, the recorded
        SHA-256, every tensor (finite, the model's keys and shapes) and the coder's tables, before use; a
        broken or tampered folder raises :class:`~diffeic.checkpoint.CheckpointError` naming the file.
        """
        from . import checkpoint
        from .checkpoint import CheckpointError

        folder = Path(path)
        meta = read_checkpoint_meta(folder)
        family = meta.get("family", "diffeic")
        if family != cls.family:
            raise ValueError(f"{folder} holds a {family!r} model, not a {cls.family!r} one; load it with "
                             f"diffeic.load_codec({str(folder)!r})")
        if not (folder / MODEL_FILE).is_file():
            raise FileNotFoundError(f"{folder}: checkpoint folder lacks {MODEL_FILE}")
        try:
            checkpoint.check_meta_schema(meta, cls.family)
            checkpoint.check_common_meta(meta, (MODEL_FILE,), (MODEL_FILE,))
            cfg = config_from_dict(cls.config_class, meta.get("model", {}), "model")
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{folder / CONFIG_FILE}: {err}") from None
        checkpoint.check_hashes(folder, meta.get("files"))
        state = checkpoint.load_tensors(folder / MODEL_FILE)
        shapes = checkpoint.shapes_only(lambda: cls.build_model(cfg))
        checkpoint.check_keys(folder / MODEL_FILE, state, shapes,
                              resizable=["hyperprior." + n for n in shapes.hyperprior.coding_table_names()])
        codec = cls(cfg, cls.build_model(cfg), trained=meta.get("trained", True))
        try:
            codec.model.load_state_dict(state)
        except ValueError as err:               # corrupt coding tables or quantiles
            raise CheckpointError(f"{folder / MODEL_FILE}: {err}") from None
        codec.eval()                            # (empty coding tables are rebuilt when first used)
        checkpoint.check_fingerprint(folder / CONFIG_FILE, meta.get("fingerprint"), codec.fingerprint(),
                                     verified=bool(meta.get("files")))
        return codec.to(device) if device is not None else codec

    def save_pretrained(self, path: Union[str, Path], overwrite: bool = True, **metadata: Any) -> Path:
        """Write ``config.yaml`` + ``model.safetensors`` (weights and the coder's CDF tables) atomically
        (:func:`diffeic.checkpoint.write_folder`): readers see the previous folder or the new one."""
        from . import checkpoint

        self.model.hyperprior.refresh_tables()      # store tables that match the weights being saved
        meta = {"family": self.family, "trained": self.is_trained, "fingerprint": self.fingerprint(), **metadata}
        model = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.config).items()}
        return checkpoint.write_folder(path, {MODEL_FILE: self.model.state_dict()}, meta, model, overwrite)

    # ------------------------------------------------------------------ identity
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def fingerprint(self) -> str:
        """16 hex digits over family, config, weights and coding tables; streams carry the first 8."""
        self.model.hyperprior.refresh_tables()
        # Everything the decoder depends on, as for DiffEIC's LFGCM: all parameters and all buffers (the CDF
        # and scale tables, the scale bound), so a model that would decode differently has another fingerprint.
        return self._fingerprint(
            lambda: [self.family.encode(), yaml.safe_dump(dataclasses.asdict(self.config), sort_keys=True).encode()],
            [*self.model.named_parameters(), *self.model.named_buffers()])

    # ------------------------------------------------------------------ decode settings
    def decode_defaults(self) -> Dict[str, Optional[int]]:
        """The model's default ``steps`` and ``seed`` (``{}``: decoding takes no settings)."""
        return {}

    def _header_settings(self, steps: Any, seed: Any, max_steps: Any = None) -> Dict[str, Optional[int]]:
        """Validate encoder-chosen settings → the header fields (only those that differ from the defaults)."""
        defaults = self.decode_defaults()
        for name, value in (("steps", steps), ("seed", seed)):
            if value is not None and name not in defaults:
                raise ValueError(f"a {self.family} codec takes no {name!r} setting")
        given = self._check_settings(steps, seed, allow_zero_steps=False)
        check_steps_to_write(given["steps"], self._default_steps(), max_steps, self.config.name)
        return {k: (None if v is None or v == defaults.get(k) else v) for k, v in given.items()}

    @staticmethod
    def _check_settings(steps: Any, seed: Any, allow_zero_steps: bool) -> Dict[str, Optional[int]]:
        """``steps``/``seed`` as ints (:func:`~diffeic.config.check_int`: any integer scalar), None kept."""
        return {"steps": None if steps is None else check_int("steps", steps, 0 if allow_zero_steps else 1, MAX_STEPS),
                "seed": None if seed is None else check_int("seed", seed, 0, SEED_LIMIT - 1)}

    def _default_steps(self) -> int:
        """The model's default step count (1 for a decoder that does not sample)."""
        return self.decode_defaults().get("steps") or 1

    def resolve_settings(self, header: Optional[StreamHeader], steps: Any = None, seed: Any = None,
                         max_steps: Any = None) -> Dict[str, int]:
        """Override > header (if any) > model default, for the settings this family takes; steps that the stream
        (or the default) asks for are checked against the decode-cost limit (:mod:`diffeic.decode_cost`)."""
        defaults = self.decode_defaults()
        if not defaults:
            if steps is not None or seed is not None:
                raise ValueError(f"a {self.family} codec decodes deterministically and takes no steps or seed")
            resolved: Dict[str, int] = {}
        else:
            given = self._check_settings(steps, seed, allow_zero_steps=True)
            stored = {"steps": getattr(header, "steps", None), "seed": getattr(header, "seed", None)}
            resolved = {k: next(v for v in (given[k], stored[k], defaults[k]) if v is not None) for k in defaults}
        if header is not None and steps is None:           # the caller's own steps are its choice
            check_decode_cost(resolved.get("steps", 1), header.height, header.width, self.max_pixels,
                              self._default_steps(), max_steps, self.config.name)
        else:
            resolve_max_steps(max_steps, self._default_steps())         # a bad max_steps is refused all the same
        return resolved

    # ------------------------------------------------------------------ coding
    def _no_sampler(self, sampler: Optional[str]) -> None:
        # Accepted (as None) so callers can treat every family alike; these families have one decoder each.
        if sampler is not None:
            raise ValueError(f"a {self.family} codec has no sampler choice (got sampler={sampler!r})")

    def compress(self, x: torch.Tensor, *, sampler: Optional[str] = None, steps: Optional[int] = None,
                 seed: Optional[int] = None, max_steps: Optional[int] = None) -> Union[bytes, List[bytes]]:
        """Compress ``(3,H,W)`` in [0,1] → bytes, or ``(B,3,H,W)`` → list of bytes.

        ``steps``/``seed`` (families with a sampling decoder only) are stored as the decoder's defaults; ``steps``
        above what decoders accept by default (:mod:`diffeic.decode_cost`) are refused unless ``max_steps`` allows
        them.  ``sampler`` must be ``None`` (it exists so that every family is called alike).
        """
        self._no_sampler(sampler)
        batch, single = check_images(x, self.device, self.max_pixels, type(self).__name__)
        settings = self._header_settings(steps, seed, max_steps)
        h, w = batch.shape[-2:]
        fp = self.fingerprint()[:8]
        with torch.no_grad():
            y = self.model.encoder(pad_image(batch))
        streams = [pack(StreamHeader(fingerprint=fp, height=h, width=w, family=self.family, **settings),
                        self.model.hyperprior.compress(y[i:i + 1])[0]) for i in range(batch.shape[0])]
        return streams[0] if single else streams

    @torch.no_grad()
    def estimate_bits(self, x: torch.Tensor) -> Union[float, List[float]]:
        """Entropy-model estimate of the payload bits for ``x`` (hard rounding, as coded)."""
        batch, single = check_images(x, self.device, self.max_pixels, type(self).__name__)
        values = self.model.hyperprior.estimate_bits(self.model.encoder(pad_image(batch)))
        return values[0] if single else values

    inspect = staticmethod(describe)            # the stream's header as a dict (no model needed)

    def _open(self, bits: Bits) -> Tuple[StreamHeader, bytes]:
        header, payload = unpack_for(bits, self.family, self.fingerprint()[:8], self.config.name, self.max_pixels,
                                     type(self).__name__)
        if header.rate is not None or header.sampler is not None:
            raise BitstreamError(f"corrupt header: a {self.family} stream carries no rate or sampler field")
        if not self.decode_defaults() and (header.steps is not None or header.seed is not None):
            raise BitstreamError(f"corrupt header: a {self.family} stream carries no steps or seed")
        return header, payload

    @torch.no_grad()
    def decompress_latent(self, bits: Bits) -> Tuple[StreamHeader, torch.Tensor]:
        """Entropy-decode a stream → ``(header, y_hat)`` without the synthesis."""
        header, payload = self._open(bits)
        return header, self._decode_latent(header, payload)

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
        self._no_sampler(sampler)
        if isinstance(bits, (list, tuple)):
            return [self.decompress(b, steps=steps, seed=seed, max_steps=max_steps) for b in bits]
        if not isinstance(bits, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected bytes (or a list of bytes), got {type(bits).__name__}")
        header, payload = self._open(bits)
        settings = self.resolve_settings(header, steps, seed, max_steps)     # before any decoding work
        y_hat = self._decode_latent(header, payload)
        with torch.no_grad():
            image = self.model.reconstruct(y_hat, **settings)
        if not torch.isfinite(image).all():
            raise BitstreamError(NON_FINITE_STREAM)
        return image[0, :, :header.height, :header.width].clamp(0, 1)

    def decode_settings(self, bits: Bits, steps: Optional[int] = None, seed: Optional[int] = None,
                        max_steps: Optional[int] = None) -> Dict[str, int]:
        """What :meth:`decompress` would decode ``bits`` with (``{}`` for a deterministic decoder), after every
        header check including the decode-cost limit, without decoding anything."""
        return self.resolve_settings(self._open(bits)[0], steps, seed, max_steps)


__all__ = ["HyperpriorImageCodec", "check_images", "pad_image", "padded_size", "config_from_dict",
           "read_checkpoint_meta", "CONFIG_FILE", "MODEL_FILE",
           "PAD_MULTIPLE"]

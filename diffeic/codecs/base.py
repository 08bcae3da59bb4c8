"""The one base of every codec family: input checks, padding, the container, the fingerprint, the decode-cost
limit and the checkpoint folder's whole lifecycle (find, read and check, write).

A family is a plug-in module of this package (``diffeic.py``, ``hific.py``, ``refine.py``) holding one
subclass of :class:`Codec` that declares

* ``family`` — its id in the container (:data:`diffeic.bitstream.FAMILY_IDS`), so each family refuses the
  others' streams by name;
* its config schema: ``presets`` and :meth:`Codec.get_config` / :meth:`Codec.config_from_meta`;
* its checkpoint files: ``weight_files`` (always there) and ``optional_files``;
* :meth:`Codec.build` — the codec from a checked folder (:class:`~diffeic.codecs.folder.Checkpoint`), and
  :meth:`Codec.weights` — the tensors :meth:`Codec.save_pretrained` writes;
* ``compress`` / ``decompress`` / ``decompress_latents`` / ``resolve_settings`` (what its decoder does).

The name → family map (presets, shipped models, hub ids, folders) is :mod:`diffeic.codecs.registry`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Iterable, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..bitstream import MAX_SIDE, StreamHeader, describe, unpack_for
from ..config import load_yaml
from ..decode_cost import check_decode_cost, resolve_max_steps
from ..lfgcm import PAD_MULTIPLE          # every family shares DiffEIC's padding (their transforms are built to it)
from ..sizes import size_text
from . import folder as ckpt_folder
from .folder import CONFIG_FILE, Checkpoint, CheckpointError
from .registry import DEFAULT_FAMILY, is_shipped, resolve_folder

Bits = Union[bytes, bytearray]


def padded_size(height: int, width: int, multiple: int = PAD_MULTIPLE) -> Tuple[int, int]:
    """The size the codecs work at: H and W rounded up to a multiple of 64."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def pad_image(x: torch.Tensor, mode: str = "replicate") -> torch.Tensor:
    """Bottom/right padding to multiples of 64, undone by cropping after decoding: ``replicate`` (edge pixels, not
    black bars the decoder must learn) or ``constant`` (zeros, as the official DiffEIC ``utils/image/common.py``)."""
    h, w = x.shape[-2:]
    hp, wp = padded_size(h, w)
    return F.pad(x, (0, wp - w, 0, hp - h), mode=mode) if (hp, wp) != (h, w) else x


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
    import dataclasses

    if not isinstance(data, dict):
        raise TypeError(f"a {cls.__name__} must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {', '.join(unknown)}; expected some of {', '.join(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class Fingerprint:
    """A model's identity, 16 hex digits of SHA-256 over its description (family, config, backbone) and the
    named tensors its decoding depends on; recomputed only when a tensor was replaced or changed in place."""

    def __init__(self) -> None:
        self._key: Optional[tuple] = None
        self._value = ""

    def __call__(self, describe: Callable[[], Iterable[bytes]], tensors: List[Tuple[str, torch.Tensor]]) -> str:
        key = tuple((name, t.data_ptr(), t._version) for name, t in tensors)
        if key != self._key:
            h = hashlib.sha256()
            for part in describe():
                h.update(part)
            for name, t in tensors:
                h.update(name.encode())
                t = t.detach().cpu()
                h.update((t.float() if t.is_floating_point() else t).contiguous().numpy().tobytes())
            self._value, self._key = h.hexdigest()[:16], key
        return self._value


class Codec(nn.Module):
    """What every codec of the library offers (see the module docstring for what a family adds).

    Build one with ``from_config`` (random deterministic weights, offline) or :meth:`from_pretrained` (a checkpoint
    folder, a model shipped inside the package, a hub id); any of them by name with :func:`diffeic.load_codec`.
    """

    family: ClassVar[str] = ""
    #: Preset name → config factory.
    presets: ClassVar[Dict[str, Callable[[], Any]]] = {}
    #: The weights files of a checkpoint folder (beside ``config.yaml``), and those it may hold.
    weight_files: ClassVar[Tuple[str, ...]] = ()
    optional_files: ClassVar[Tuple[str, ...]] = ()
    #: How images are padded to multiples of 64 (:func:`pad_image`).
    pad_mode: ClassVar[str] = "replicate"
    #: Largest image (in pixels) that compress/decompress accept; streams declaring more are refused
    #: before any allocation.  Raise it on a machine with the memory for bigger images.
    max_pixels: int = 64 * 1024 * 1024

    def __init__(self, config: Any, trained: bool = False) -> None:
        super().__init__()
        self.config = config
        self.is_trained = bool(trained)
        self._fingerprint = Fingerprint()

    # ------------------------------------------------------------------ what a family declares
    @classmethod
    def get_config(cls, config: Any) -> Any:
        """A fresh config from a preset name, a YAML file or a config object."""
        raise NotImplementedError

    @classmethod
    def config_from_meta(cls, model: Any, meta: Dict[str, Any]) -> Any:
        """The config from a checkpoint's ``model`` mapping (``meta``: the rest of ``config.yaml``)."""
        raise NotImplementedError

    @classmethod
    def check_meta(cls, meta: Dict[str, Any], config: Any) -> None:
        """Family-specific checks of ``config.yaml`` beyond the shared schema (``ValueError`` naming the field)."""

    @classmethod
    def build(cls, ckpt: Checkpoint, **options: Any) -> "Codec":
        """The codec of a checked checkpoint folder (``options``: the family's ``from_pretrained`` keywords)."""
        raise NotImplementedError

    def weights(self) -> Dict[str, Dict[str, torch.Tensor]]:
        """Weights file name → state dict (what :meth:`save_pretrained` writes); :meth:`model_config` the
        ``model`` mapping of ``config.yaml``, :meth:`save_metadata` the family's own top-level fields."""
        raise NotImplementedError

    def model_config(self) -> Dict[str, Any]:
        raise NotImplementedError

    def save_metadata(self) -> Dict[str, Any]:
        return {}

    def describe_model(self) -> List[bytes]:
        """What the fingerprint covers besides :meth:`fingerprinted_tensors` (the tensors the decoder depends on,
        coding tables included); :meth:`refresh_tables` brings those tables up to date with the weights."""
        raise NotImplementedError

    def fingerprinted_tensors(self) -> List[Tuple[str, torch.Tensor]]:
        raise NotImplementedError

    def refresh_tables(self) -> None:
        pass

    # ------------------------------------------------------------------ identity
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def fingerprint(self) -> str:
        """16 hex digits identifying the model (config, weights, coding tables); streams carry the first 8.

        Cached, and recomputed whenever any fingerprinted tensor is modified (training, loading).
        """
        self.refresh_tables()           # a stream's fingerprint must cover the tables that coded it
        return self._fingerprint(self.describe_model, self.fingerprinted_tensors())

    # ------------------------------------------------------------------ the checkpoint folder
    @classmethod
    def files(cls) -> Tuple[str, ...]:
        """Every file a checkpoint folder of this family must hold."""
        return (CONFIG_FILE, *cls.weight_files)

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], device: Union[str, torch.device, None] = None,
                        **options: Any) -> "Codec":
        """Load a checkpoint folder written by :meth:`save_pretrained` (or the trainer's export), a model shipped
        inside the package by name (:func:`diffeic.pretrained_models`), or a Hugging Face hub repository
        (``"user/repo"``, optionally ``"user/repo@revision"``; downloaded once into the hub cache,
        ``HF_HUB_OFFLINE=1``: cache only).

        Everything in the folder is checked first (:meth:`read_checkpoint`): a broken or tampered folder raises
        :class:`~diffeic.codecs.folder.CheckpointError` naming the file and the problem.
        """
        ckpt = cls.read_checkpoint(resolve_folder(path, cls.files(), cls.optional_files))
        codec = cls.build(ckpt, **options)
        codec.eval()
        if cls.fingerprint_checked(options):
            ckpt_folder.check_fingerprint(ckpt.folder / CONFIG_FILE, ckpt.meta.get("fingerprint"),
                                          codec.fingerprint(), verified=bool(ckpt.meta.get("files")))
        return codec.to(device) if device is not None else codec

    @classmethod
    def fingerprint_checked(cls, options: Dict[str, Any]) -> bool:
        """Whether :meth:`from_pretrained` with ``options`` must reproduce the recorded fingerprint."""
        return True

    @classmethod
    def read_checkpoint(cls, path: Union[str, Path]) -> Checkpoint:
        """Read and check a checkpoint folder of this family — the one checkpoint reader of the library: its
        ``config.yaml`` (the shared schema, the family's config and checks), the recorded SHA-256 of each file and
        every tensor (finite).  ``FileNotFoundError`` or :class:`~diffeic.codecs.folder.CheckpointError`."""
        folder = Path(path)
        if not (folder / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{folder}: not a diffeic checkpoint folder (no {CONFIG_FILE}); "
                                    f"expected {', '.join(cls.files())}")
        meta = ckpt_folder.read_meta(folder)
        family = meta.get("family", DEFAULT_FAMILY)
        if family != cls.family:
            raise ValueError(f"{folder} holds a {family!r} model, not a {cls.family!r} one; load it with "
                             f"diffeic.load_codec({str(folder)!r})")
        for name in cls.weight_files:
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder}: checkpoint folder lacks {name}")
        model = meta.pop("model", None)
        try:
            ckpt_folder.check_meta_schema(meta, cls.family)
            ckpt_folder.check_common_meta(meta, cls.weight_files + cls.optional_files, cls.weight_files)
            config = cls.config_from_meta(model, meta)
            cls.check_meta(meta, config)
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{folder / CONFIG_FILE}: {err}") from None
        ckpt_folder.check_hashes(folder, meta.get("files"), shipped=is_shipped(folder))
        present = [n for n in cls.weight_files + cls.optional_files if (folder / n).is_file()]
        return Checkpoint(folder, config, meta, {n: ckpt_folder.load_tensors(folder / n) for n in present})

    def save_pretrained(self, path: Union[str, Path], overwrite: bool = True, **metadata: Any) -> Path:
        """Write the checkpoint folder (``config.yaml`` + the weights files, coding tables included) atomically
        (:func:`~diffeic.codecs.folder.write_folder`): readers see the previous folder or the new one, never a mix.
        ``metadata``: extra fields of ``config.yaml``."""
        self.refresh_tables()                 # store tables that match the weights being saved
        meta = {**({"family": self.family} if self.family != DEFAULT_FAMILY else {}), "trained": self.is_trained,
                "fingerprint": self.fingerprint(), **self.save_metadata(), **metadata}
        return ckpt_folder.write_folder(path, self.weights(), meta, self.model_config(), overwrite,
                                        also=self.weight_files + self.optional_files)

    def push_to_hub(self, repo_id: str, *, private: Optional[bool] = None, token: Optional[str] = None,
                    commit_message: str = "Upload diffeic checkpoint", **metadata: Any) -> str:
        """Upload this codec as a checkpoint folder to the Hugging Face hub (a model repository, created if
        missing); returns the commit URL.  Load it back with ``from_pretrained(repo_id)``."""
        from .registry import push_folder

        return push_folder(lambda target: self.save_pretrained(target, **metadata), repo_id, private=private,
                           token=token, commit_message=commit_message)

    # ------------------------------------------------------------------ streams
    inspect = staticmethod(describe)            # the stream's header as a dict (no model needed)

    def check_images(self, x: Any) -> Tuple[torch.Tensor, bool]:
        """:func:`check_images` for this codec: ``(batch float32 on its device, was_single)``."""
        return check_images(x, self.device, self.max_pixels, type(self).__name__)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` padded to multiples of 64 the way this family was trained (:attr:`pad_mode`)."""
        return pad_image(x, self.pad_mode)

    def unpack(self, bits: Bits) -> Tuple[StreamHeader, bytes]:
        """The container's header (this family's id, this model's fingerprint, a size within ``max_pixels``) and
        payload; :class:`~diffeic.BitstreamError` naming what does not match."""
        return unpack_for(bits, self.family, self.fingerprint()[:8], self.config.name, self.max_pixels,
                          type(self).__name__)

    def check_decode_cost(self, header: Optional[StreamHeader], steps_override: Any, steps: int,
                          default_steps: int, max_steps: Any) -> None:
        """The decode-cost limit (:mod:`diffeic.decode_cost`) on the ``steps`` a stream (or the default) asks
        for; the caller's own ``steps_override`` is its choice, but a bad ``max_steps`` is refused all the same."""
        if header is not None and steps_override is None:
            check_decode_cost(steps, header.height, header.width, self.max_pixels, default_steps, max_steps,
                              self.config.name)
        else:
            resolve_max_steps(max_steps, default_steps)

    def decode_settings(self, bits: Bits, steps: Optional[int] = None, seed: Optional[int] = None,
                        sampler: Optional[str] = None, max_steps: Optional[int] = None) -> Any:
        """What ``decompress`` would decode ``bits`` with (the family's ``resolve_settings``: override, else the
        stream's header, else the model's default), after every header check including the decode-cost limit,
        without decoding anything."""
        return self.resolve_settings(self._open(bits)[0], steps, seed, sampler, max_steps)

    def _open(self, bits: Bits) -> Tuple[StreamHeader, bytes]:
        return self.unpack(bits)


def load_config_file(cls: type, key: str, presets: Dict[str, Callable[[], Any]], family: str) -> Any:
    """A flat family config from a preset name, a YAML file or a checkpoint folder's ``config.yaml``."""
    if key in presets:
        return presets[key]()
    path = Path(key)
    if path.is_dir():
        path = path / CONFIG_FILE
    if path.suffix in (".yaml", ".yml") and path.is_file():
        data = load_yaml(path) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
        return config_from_dict(cls, data.get("model", data), str(path))
    raise ValueError(f"unknown {family} preset or config file {key!r}; presets: {', '.join(presets)}")


__all__ = ["Codec", "Fingerprint", "PAD_MULTIPLE", "check_images", "config_from_dict", "load_config_file",
           "pad_image", "padded_size"]

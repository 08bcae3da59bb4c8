"""The checkpoint folder of every codec family: its schema, its checks, and an atomic write.

A checkpoint folder (written by a codec's ``save_pretrained``, the trainer's export and ``diffeic convert``)::

    config.yaml          metadata (family, trained, fingerprint, ...), the model config (``model``) and the
                         SHA-256 of each weights file (``files``)
    *.safetensors        the weights files the family declares (``Codec.weight_files``); large tensors may be
                         stored int8-packed (:mod:`diffeic.weight_packing`), which loading undoes

It is written into a hidden sibling folder and renamed into place, so no reader ever sees a half-written
or mixed folder.  Reading (:meth:`diffeic.codecs.base.Codec.read_checkpoint`, the one reader) checks the
config, the recorded hashes, every tensor (finite, the keys and shapes the model has) and the coding tables
before any of it is used: safetensors runs no code when loaded, and the C++ entropy coder must not be handed
tables or values that crash or hang it.
"""
from __future__ import annotations

import os
import secrets
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch
import yaml
from torch import nn

from ..config import check_bool, check_float, check_int, check_str, load_yaml, show
from ..util import file_sha256, first_line

CONFIG_FILE = "config.yaml"

PathLike = Union[str, Path]


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message names the file and what is wrong."""


# --------------------------------------------------------------------------- the metadata schema
# Every top-level field of a checkpoint's config.yaml, for every codec family: its type, range and whether it may
# be absent or null, checked by one function each.  Keys not declared here are the caller's own metadata
# (save_pretrained(**metadata)) and are kept as written.

def _hex(length: int) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        if not (isinstance(value, str) and len(value) == length and all(c in "0123456789abcdef" for c in value)):
            raise ValueError(f"{name} = {show(value)}: must be {length} lowercase hex digits")
        return value
    return check


def _mapping(name: str, value: Any) -> Any:
    if not isinstance(value, dict):
        raise ValueError(f"{name} = {show(value)}: must be a mapping")
    return value


def _digests(name: str, files: Dict[Any, Any]) -> Dict[Any, Any]:
    for key, digest in files.items():
        if not isinstance(key, str) or not key or Path(key).is_absolute() or ".." in Path(key).parts:
            raise ValueError(f"{name}: {show(key)} is not a relative file name inside the folder")
        _hex(64)(f"{name}.{key}", digest)
    return files


def _lmbda(name: str, value: Any) -> Any:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError(f"{name} = []: must be a positive number or a list of them")
    for i, v in enumerate(values):
        check_float(name if not isinstance(value, list) else f"{name}[{i}]", v, 0.0)
    return value


def _format_version(name: str, value: Any) -> Any:
    from ..bitstream import FORMAT_VERSION

    return check_int(name, value, 1, FORMAT_VERSION)


def _family(name: str, value: Any) -> Any:
    from ..bitstream import FAMILY_IDS

    if value not in FAMILY_IDS:
        raise ValueError(f"{name} = {show(value)}: must be one of {', '.join(FAMILY_IDS)}")
    return value


@dataclass(frozen=True)
class MetaField:
    """One declared top-level field of ``config.yaml``: its check (raises ``ValueError`` naming the field), whether
    ``null`` is allowed, and which families have it (None: all)."""

    check: Callable[[str, Any], Any]
    nullable: bool = True
    families: Optional[Tuple[str, ...]] = None


#: The schema of a checkpoint's ``config.yaml`` (top level; ``model`` is the family's config, checked by it).
META_SCHEMA: Dict[str, MetaField] = {
    "diffeic_version": MetaField(check_str, nullable=False),
    "format_version": MetaField(_format_version, nullable=False),   # the stream format of the writer
    "family": MetaField(_family, nullable=False),
    "trained": MetaField(check_bool, nullable=False),
    "fingerprint": MetaField(_hex(16)),
    "backbone_fingerprint": MetaField(_hex(16), families=("diffeic",)),
    "sd_path": MetaField(check_str, families=("diffeic",)),
    # SHA-256 of each file of a backbone shipped beside the checkpoint (sd_path relative): path in it → digest
    "backbone_files": MetaField(lambda n, v: _digests(n, _mapping(n, v)), families=("diffeic",)),
    "onestep": MetaField(_mapping, families=("diffeic",)),             # its fields: OneStepConfig's
    "files": MetaField(_mapping),                                      # names and SHA-256: check_common_meta
    "lmbda": MetaField(_lmbda),
    "lr": MetaField(lambda n, v: check_float(n, v, 0.0)),
    "step": MetaField(lambda n, v: check_int(n, v, 0)),
    "init_from": MetaField(check_str),
    "preset": MetaField(check_str),
    "training": MetaField(_mapping),
    "provenance": MetaField(_mapping),
    "model": MetaField(_mapping, nullable=False),
}


def check_meta_schema(meta: Dict[str, Any], family: str) -> None:
    """Check every declared field of ``meta`` (a ``config.yaml``) against :data:`META_SCHEMA`; ``ValueError``
    naming the field.  A field of another family (``sd_path`` in a HiFiC folder) is refused too."""
    for name, value in meta.items():
        spec = META_SCHEMA.get(name)
        if spec is None:
            continue
        if spec.families is not None and family not in spec.families:
            raise ValueError(f"{name}: a {family} checkpoint has no such field (it belongs to "
                             f"{', '.join(spec.families)} checkpoints)")
        if value is None:
            if not spec.nullable:
                raise ValueError(f"{name} = null: must be given")
            continue
        spec.check(name, value)


def check_common_meta(meta: Dict[str, Any], allowed: Iterable[str], required: Iterable[str]) -> None:
    """Checks of the metadata every checkpoint folder has (any codec family), beyond :data:`META_SCHEMA`'s:
    ``files`` must map each of ``required`` and only names in ``allowed`` to a SHA-256 (64 hex digits)."""
    files, allowed, required = meta.get("files"), set(allowed), set(required)
    if files is not None and (not isinstance(files, dict) or not required <= set(files) <= allowed):
        raise ValueError(f"files = {show(files)}: must map {', '.join(sorted(required))} (and optionally "
                         f"{', '.join(sorted(allowed - required)) or 'nothing else'}) to their SHA-256")
    _digests("files", files or {})


def check_hashes(folder: Path, files: Any, shipped: bool = False) -> None:
    """Each file's SHA-256 must equal the one recorded in ``config.yaml`` (``files``, checked by
    :func:`check_common_meta`); :class:`CheckpointError` naming the file otherwise.

    A folder without ``files`` was written by a diffeic older than the digests: a user's folder loads with a
    warning (its files cannot be verified; ``save_pretrained`` again records them), a ``shipped`` model (one
    inside the package) is refused.
    """
    if not files:
        if shipped:
            raise CheckpointError(f"{Path(folder) / CONFIG_FILE}: files: a shipped model must record the SHA-256 of "
                                  f"each of its files; the package is damaged, reinstall diffeic")
        warnings.warn(f"{Path(folder) / CONFIG_FILE} records no SHA-256 of its files (written by an older diffeic): "
                      f"they cannot be verified; load and save_pretrained it again to record them",
                      UserWarning, stacklevel=3)
        return
    for name, expected in files.items():
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder}: checkpoint folder lacks {name} (recorded in {CONFIG_FILE})")
        if file_sha256(folder / name) != expected:
            raise CheckpointError(f"{folder / name}: its SHA-256 differs from the one recorded in {CONFIG_FILE} "
                                  f"(files.{name}): the file was modified, or the folder mixes files of different "
                                  f"saves")


def check_backbone_files(meta_path: Path, backbone: Path, files: Any, shipped: bool = False) -> None:
    """The files of a backbone folder shipped beside a checkpoint against ``backbone_files`` (its SHA-256s);
    :class:`CheckpointError` naming the file.  A shipped model must record them."""
    if not files:
        if shipped:
            raise CheckpointError(f"{meta_path}: backbone_files: a shipped model must record the SHA-256 of each "
                                  f"file of its backbone {backbone}; the package is damaged, reinstall diffeic")
        return
    for name, expected in files.items():
        path = backbone / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing from the backbone (recorded in {meta_path}, backbone_files)")
        if file_sha256(path) != expected:
            raise CheckpointError(f"{path}: its SHA-256 differs from the one recorded in {meta_path} "
                                  f"(backbone_files.{name}): the backbone was modified")


def file_digests(folder: Path) -> Dict[str, str]:
    """The SHA-256 of every file under ``folder``, by its relative path (POSIX), for ``backbone_files``."""
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def check_fingerprint(meta_path: Path, recorded: Any, computed: str, verified: bool) -> None:
    """The model fingerprint computed from the loaded weights must equal the one ``config.yaml`` records.

    ``verified``: the folder's files matched their recorded SHA-256, so the fingerprint must match too
    (:class:`CheckpointError` naming the file and the field); a folder without digests (an older diffeic, whose
    fingerprint may have been defined otherwise) only warns.
    """
    if recorded is None or recorded == computed:
        return
    message = (f"{meta_path}: fingerprint = {recorded}, but the model loaded from this folder has fingerprint "
               f"{computed}")
    if verified:
        raise CheckpointError(message + ": the folder's config or weights were changed after it was written")
    warnings.warn(message + " (an older diffeic, or a modified folder); streams carry the computed one",
                  UserWarning, stacklevel=3)


def load_tensors(path: Path) -> Dict[str, torch.Tensor]:
    """A safetensors file's tensors, int8-packed ones unpacked to float32 (:mod:`diffeic.weight_packing`);
    :class:`CheckpointError` for an unreadable file, a malformed packed tensor or NaN/Inf values."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..weight_packing import unpack

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({first_line(err, type(err).__name__)}); "
                              f"official DiffEIC .ckpt files are converted with `diffeic convert`") from None
    try:
        state = unpack(state)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: tensor {name} holds NaN or Inf values: the weights are broken")
    return state


def shapes_only(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` without allocating its tensors, to compare its state-dict shapes with a file's: a config
    that disagrees with the file (asking for huge widths, say) then costs nothing."""
    try:
        with torch.device("meta"):
            return build()
    except RuntimeError:
        # Modules that combine their tensors with CPU constants while being built (compressai's GDN adds
        # its CPU `pedestal`) fail on the meta device; fake tensors accept that and allocate nothing either.
        from torch._subclasses.fake_tensor import FakeTensorMode

        with FakeTensorMode(allow_non_fake_inputs=True):
            return build()


def check_keys(path: PathLike, state: Mapping[str, torch.Tensor], module: nn.Module,
               resizable: Iterable[str] = ()) -> None:
    """Refuse a state dict whose keys or shapes differ from ``module``'s, naming them in one line.

    ``resizable``: keys whose shape the loader adapts (the CDF tables).
    """
    expected = module.state_dict()
    skip = set(resizable)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} (model {tuple(expected[k].shape)})" for k in expected
              if k in state and k not in skip and state[k].shape != expected[k].shape]
    problems = [f"{what} {_brief(keys)}" for what, keys in (("missing key(s)", missing),
                                                            ("unexpected key(s)", unexpected),
                                                            ("wrong shape(s)", shapes)) if keys]
    if problems:
        raise CheckpointError(f"{path}: {'; '.join(problems)} — not a checkpoint of this model config")


@dataclass
class Checkpoint:
    """A checked checkpoint folder: its family's config, its metadata and its tensors (not yet in modules)."""

    folder: Path
    config: Any                          # the family's config (DiffEICConfig, HiFiCConfig, ...)
    meta: Dict[str, Any]                 # config.yaml without the model config
    tensors: Dict[str, Dict[str, torch.Tensor]]     # weights file name → its state dict (files present only)

    @property
    def trained(self) -> bool:
        return self.meta.get("trained", True)

    def load(self, name: str, build: Union[nn.Module, Callable[[], nn.Module]],
             resizable: Union[Iterable[str], Callable[[nn.Module], Iterable[str]]] = ()) -> nn.Module:
        """``build()`` (or the module ``build``) with the weights of file ``name``, after checking their keys and
        shapes against a model built without allocating (:func:`shapes_only`; a module: itself); ``resizable``:
        keys the model adapts (coding tables), or a function of that model giving them.  Corrupt coding tables are
        a :class:`CheckpointError` naming the file."""
        path = self.folder / name
        shapes = build if isinstance(build, nn.Module) else shapes_only(build)
        check_keys(path, self.tensors[name], shapes, resizable(shapes) if callable(resizable) else resizable)
        module = build if isinstance(build, nn.Module) else build()
        try:
            module.load_state_dict(self.tensors[name])
        except ValueError as err:                 # corrupt coding tables or quantiles
            raise CheckpointError(f"{path}: {err}") from None
        return module


def read_meta(folder: PathLike) -> Dict[str, Any]:
    """``config.yaml`` of a checkpoint folder as a dict (empty contents allowed); ``FileNotFoundError`` if absent,
    :class:`CheckpointError` naming the file if it is not YAML or not a mapping."""
    meta_path = Path(folder) / CONFIG_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{folder}: not a diffeic checkpoint folder (no {CONFIG_FILE})")
    try:
        meta = load_yaml(meta_path)
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    meta = {} if meta is None else meta
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path}: must be a mapping of metadata and the model config, got "
                              f"{type(meta).__name__}")
    return dict(meta)


def _brief(items: List[str], shown: int = 3) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


# --------------------------------------------------------------------------- writing

def check_target(path: PathLike, overwrite: bool, files: Iterable[str]) -> None:
    """Refuse to write a checkpoint at ``path`` if that would lose something.

    An existing checkpoint is replaced only with ``overwrite``; a file, or a folder holding anything but
    checkpoint ``files``, is never replaced (the folder is swapped as a whole).
    """
    folder = Path(path)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder")
    present = {p.name for p in folder.iterdir()}
    foreign = sorted(present - set(files))
    if foreign:
        raise FileExistsError(f"{folder} holds files that are not part of a checkpoint ({_brief(foreign)}); a "
                              f"checkpoint is written as a whole folder: choose a new or empty folder")
    if present and not overwrite:
        raise FileExistsError(f"{folder} already holds {', '.join(sorted(present))}; choose another folder or "
                              f"overwrite it (--force / overwrite=True)")


def write_folder(path: PathLike, weights: Mapping[str, Mapping[str, torch.Tensor]], metadata: Mapping[str, Any],
                 model_config: Mapping[str, Any], overwrite: bool = True, also: Iterable[str] = ()) -> Path:
    """Write a checkpoint folder of any codec family atomically: ``weights`` (file name → state dict) as
    safetensors files and ``config.yaml`` (``metadata``, the files' SHA-256, ``model_config``), into a hidden
    sibling folder that is then renamed to ``path``.

    An existing checkpoint at ``path`` is replaced (``overwrite``) by a rename too, so readers see the old
    folder or the new one, never a mix; a write that fails leaves ``path`` as it was.  ``also``: other file
    names of this family's checkpoints (optional weights), which an existing folder may hold and lose.
    """
    from safetensors.torch import save

    from .. import __version__
    from ..bitstream import FORMAT_VERSION

    folder = Path(path)
    check_target(folder, overwrite, (CONFIG_FILE, *weights, *also))
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name[:64]}.{secrets.token_hex(4)}.tmp")
    tmp.mkdir()
    try:
        for name, state in weights.items():
            # Bytes, not safetensors' save_file (which creates files mode 0600): checkpoints get the user's umask.
            (tmp / name).write_bytes(save({k: v.detach().to("cpu").contiguous() for k, v in state.items()}))
        meta = {"diffeic_version": __version__, "format_version": FORMAT_VERSION, **metadata,
                "files": {name: file_sha256(tmp / name) for name in weights}, "model": dict(model_config)}
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(meta, sort_keys=False))
        for name in (*weights, CONFIG_FILE):
            _fsync(tmp / name)
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def replace_folder(tmp: Path, folder: Path) -> None:
    """Put the finished folder ``tmp`` at ``folder`` by renames: readers see the old folder or the new one, never a
    mix, and a failed rename puts the old one back."""
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name[:64]}.{secrets.token_hex(4)}.old")
        folder.rename(old)
    try:
        tmp.rename(folder)
    except BaseException:
        if old is not None:
            old.rename(folder)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    _fsync(folder.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:          # some file systems cannot fsync a directory; the rename is what matters
        pass
    finally:
        os.close(fd)


__all__ = ["CONFIG_FILE", "CheckpointError", "META_SCHEMA", "MetaField", "check_backbone_files", "check_common_meta",
           "check_fingerprint", "check_hashes", "check_keys", "check_meta_schema", "check_target", "file_digests",
           "load_tensors", "read_meta", "shapes_only", "write_folder"]

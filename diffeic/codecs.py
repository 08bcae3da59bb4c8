"""One loader for every codec family: ``diffeic.load_codec(name_or_folder)``.

A preset name (``tiny``, ``sd21``, ``hific_tiny``, ``hific``, ``refine_tiny``, ``refine``, …) or a DiffEIC
config ``.yaml`` gives that family's codec with deterministic random weights; a checkpoint folder, the name of
a model shipped inside the package (:func:`diffeic.pretrained_models`) or a hub id gives the family its
``config.yaml`` names (``family``; absent means DiffEIC, as written before there were families).
Each family's codec refuses the others' streams by name (the container's family id).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Dict, Union



#: Codec class per family, imported on first use (the DiffEIC codec pulls in diffusers).
FAMILY_CODECS = {"diffeic": ("diffeic.codec", "DiffEICCodec"),
                 "hific": ("diffeic.hific.codec", "HiFiCCodec"),
                 "refine": ("diffeic.refine.codec", "RefineCodec")}


def _preset_names() -> Dict[str, str]:
    from .config import PRESETS as DIFFEIC
    from .hific.config import PRESETS as HIFIC
    from .refine.config import PRESETS as REFINE

    return {**{n: "diffeic" for n in DIFFEIC}, **{n: "hific" for n in HIFIC}, **{n: "refine" for n in REFINE}}


def preset_names() -> Dict[str, str]:
    """Every preset name → its family."""
    return dict(_preset_names())


def codec_class(family: str) -> type:
    """The codec class of a family name (``diffeic``, ``hific``, ``refine``)."""
    if family not in FAMILY_CODECS:
        raise ValueError(f"unknown codec family {family!r}; known: {', '.join(FAMILY_CODECS)}")
    module, name = FAMILY_CODECS[family]
    return getattr(importlib.import_module(module), name)


def shipped_or_path(key: str) -> Path:
    """``key`` as a path, or the folder of the model of that name shipped inside the package."""
    from .pretrained import pretrained_folder

    path = Path(key)
    return pretrained_folder(key) if not path.exists() and pretrained_folder(key) is not None else path


def family_of(name_or_folder: Union[str, Path]) -> str:
    """The family of a preset name, a checkpoint folder or a shipped model's name (DiffEIC unless its
    ``config.yaml`` says otherwise)."""
    key = str(name_or_folder)
    presets = _preset_names()
    if key in presets:
        return presets[key]
    path = shipped_or_path(key)
    if (path / "config.yaml").is_file():
        from .image_codec import read_checkpoint_meta

        return str(read_checkpoint_meta(path).get("family", "diffeic"))
    return "diffeic"


def model_kind(spec: Union[str, Path]) -> str:
    """What a model spec names, decided before anything is loaded or any input read: ``"preset"`` or
    ``"config"`` (a DiffEIC YAML file) — random weights — or ``"checkpoint"`` (a folder, a shipped model's
    name, a hub id ``user/repo``).  Anything else is a ``ValueError`` that lists the choices."""
    from .hub import is_hub_id
    from .pretrained import pretrained_models

    key, path = str(spec), Path(str(spec))
    if key in _preset_names():
        return "preset"
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return "config"
    if path.is_dir() or shipped_or_path(key) != path or is_hub_id(key):
        return "checkpoint"
    raise ValueError(f"{key!r}: neither a preset ({', '.join(_preset_names())}), a shipped model "
                     f"({', '.join(pretrained_models()) or 'none installed'}), a checkpoint folder, a hub id "
                     f"(user/repo) nor a config .yaml file")


def load_codec(name_or_folder: Union[str, Path], device: Union[str, Any, None] = None,
               **kwargs: Any):
    """The codec for a preset name or a DiffEIC config ``.yaml`` (random weights), or for a checkpoint folder,
    a shipped model's name or a hub id (trained weights), on ``device`` — the one loader of the CLI, eval
    and scripts.

    ``kwargs`` go to the family's ``from_pretrained`` for checkpoints (e.g. ``sd_path`` for DiffEIC).
    """
    key = str(name_or_folder)
    cls = codec_class(family_of(key))
    if model_kind(key) == "checkpoint":
        codec = cls.from_pretrained(shipped_or_path(key), **kwargs)
    else:
        codec = cls.from_config(key)
    return codec.to(device) if device is not None else codec


__all__ = ["load_codec", "codec_class", "family_of", "model_kind", "preset_names", "FAMILY_CODECS"]

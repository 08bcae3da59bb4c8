"""One loader for every codec family: ``diffeic.load_codec(name_or_folder)``.

A preset name (``tiny``, ``sd21``, ``hific_tiny``, ``hific``, ``refine_tiny``, ``refine``, …) gives that
family's codec with deterministic random weights; a checkpoint folder — or the name of a model shipped
inside the package (:func:`diffeic.pretrained_models`) — gives the family its ``config.yaml`` names
(``family``; absent means DiffEIC, as written before there were families).
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


def family_of(name_or_folder: Union[str, Path]) -> str:
    """The family of a preset name or a checkpoint folder (DiffEIC unless its ``config.yaml`` says otherwise)."""
    key = str(name_or_folder)
    presets = _preset_names()
    if key in presets:
        return presets[key]
    path = Path(key)
    if (path / "config.yaml").is_file():
        from .image_codec import read_checkpoint_meta

        return str(read_checkpoint_meta(path).get("family", "diffeic"))
    return "diffeic"


def load_codec(name_or_folder: Union[str, Path], device: Union[str, Any, None] = None,
               **kwargs: Any):
    """The codec for a preset name (random weights) or a checkpoint folder (trained weights), on ``device``.

    ``kwargs`` go to the family's ``from_pretrained`` for folders (e.g. ``sd_path`` for DiffEIC).
    """
    from .pretrained import pretrained_folder, pretrained_models

    key = str(name_or_folder)
    path = Path(key)
    presets = _preset_names()
    if not path.exists() and pretrained_folder(key) is not None:
        path = pretrained_folder(key)               # a model shipped inside the package
    if key in presets:
        codec = codec_class(presets[key]).from_config(key)
    elif path.is_dir() and (path / "config.yaml").is_file():
        codec = codec_class(family_of(path)).from_pretrained(path, **kwargs)
    else:
        shipped = ", ".join(pretrained_models()) or "none installed"
        raise ValueError(f"{key!r} is neither a preset ({', '.join(presets)}), a shipped model ({shipped}) nor a "
                         f"checkpoint folder (a folder with config.yaml)")
    return codec.to(device) if device is not None else codec


__all__ = ["load_codec", "codec_class", "family_of", "preset_names", "FAMILY_CODECS"]

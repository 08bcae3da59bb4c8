"""The one function that turns a ``--model`` value into a codec (the default lives in :mod:`.cli`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Tuple


def resolve_model(spec: str) -> Tuple[Any, str, str]:
    """``--model`` value → ``(codec, name, source)``: a checkpoint folder, a shipped model's name
    (``diffeic.pretrained``), else a preset name (random init: untrained)."""
    from diffeic import DiffEICCodec
    from diffeic.codecs import family_of, load_codec
    from diffeic.pretrained import pretrained_folder

    path = Path(spec)
    if family_of(spec) != "diffeic":                 # a HiFiC / refine preset or checkpoint folder
        return load_codec(spec), (path.name if path.is_dir() else spec), (str(path) if path.is_dir()
                                                                           else f"from_config({spec!r})")
    if path.is_dir():
        return DiffEICCodec.from_pretrained(path), path.name, str(path)
    shipped = pretrained_folder(spec)
    if shipped is not None:
        return DiffEICCodec.from_pretrained(spec), spec, str(shipped)
    return DiffEICCodec.from_config(spec), spec, f"from_config({spec!r})"

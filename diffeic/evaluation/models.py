"""The one function that turns a ``--model`` value into a codec (the default lives in :mod:`.cli`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Tuple


def resolve_model(spec: str) -> Tuple[Any, str, str]:
    """``--model`` value → ``(codec, name, source)`` through :func:`diffeic.load_codec`; ``source`` says where
    the weights came from: the checkpoint folder or hub id, else ``from_config(...)`` (random init: untrained)."""
    from diffeic.codecs.diffeic import CLI_ADVICE, warn_if_untrained
    from diffeic.codecs.registry import family_of, shipped_or_path, load_codec, model_kind

    codec = load_codec(spec)
    if family_of(spec) == "diffeic":
        warn_if_untrained(codec, name=spec, advice=CLI_ADVICE)     # a command's advice, before compress gives the API's
    if model_kind(spec) != "checkpoint":
        return codec, spec, f"from_config({spec!r})"
    path = Path(spec)
    return codec, (path.name if path.is_dir() else spec), str(shipped_or_path(spec))

"""Small helpers every layer of the library uses, defined once: a file's SHA-256, an error's first line, and
whether the Hugging Face hub is offline.

Imports nothing from diffeic (the lowest level of the package), so any module may use it.
"""
from __future__ import annotations

import hashlib
import os
from typing import Union


def file_sha256(path: Union[str, os.PathLike]) -> str:
    """The SHA-256 of a file's bytes as 64 lowercase hex digits, read in 1 MiB blocks (any size, little memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def first_line(err: BaseException, default: str = "") -> str:
    """The first line of ``str(err)`` (an exception quoted inside a one-line message), or ``default`` when the
    message is empty (pass ``type(err).__name__`` to name it instead)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else default


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (huggingface_hub reads it once at import, so read it again here)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").upper() in ("1", "ON", "YES", "TRUE"):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


__all__ = ["file_sha256", "first_line", "hub_offline"]

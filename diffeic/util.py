"""Small helpers every layer of the library uses, defined once: a file's SHA-256, an error's first line, and
whether the Hugging Face hub is offline.

Imports nothing from diffeic (the lowest level of the package), so any module may use it.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import sys
from typing import Any, Callable, Mapping, Tuple, Union


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


def lazy_exports(package: str, exports: Mapping[str, Union[str, Tuple[str, str]]]) -> Callable[[str], Any]:
    """A package's PEP 562 ``__getattr__`` that imports each public name on first use (so ``import diffeic`` and the
    CLI's ``--help`` do not pay for torch): ``exports`` maps a name to its submodule, or to ``(submodule, attribute)``
    when the attribute is named otherwise there.  The value is cached in the package once imported."""
    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = exports[name]
        module, attr = target if isinstance(target, tuple) else (target, name)
        value = getattr(importlib.import_module(f".{module}", package), attr)
        setattr(sys.modules[package], name, value)
        return value
    return __getattr__

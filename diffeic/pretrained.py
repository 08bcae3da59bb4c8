"""Deprecated import path: ``diffeic.pretrained`` is now :mod:`diffeic.codecs.registry` (``pretrained_models`` is
also ``diffeic.pretrained_models``).  A re-export kept for old code; see the README's changelog."""
import warnings

from .codecs.registry import DEMO_MODEL, DEMO_NOTE, PRETRAINED_DIR, pretrained_folder, pretrained_models  # noqa: F401

warnings.warn("diffeic.pretrained is deprecated: import from diffeic.codecs.registry", DeprecationWarning,
              stacklevel=2)

__all__ = ["pretrained_models", "pretrained_folder", "PRETRAINED_DIR", "DEMO_MODEL", "DEMO_NOTE"]

"""Deprecated import path: ``diffeic.refine.codec`` is now :mod:`diffeic.codecs.refine` (``RefineCodec`` is also
``diffeic.RefineCodec``).  A re-export kept for old code; see the README's changelog."""
import warnings

from ..codecs.refine import RefineCodec  # noqa: F401

warnings.warn("diffeic.refine.codec is deprecated: import from diffeic.codecs.refine (or diffeic.RefineCodec)",
              DeprecationWarning, stacklevel=2)

__all__ = ["RefineCodec"]

"""Deprecated import path: ``diffeic.hific.codec`` is now :mod:`diffeic.codecs.hific` (``HiFiCCodec`` is also
``diffeic.HiFiCCodec``).  A re-export kept for old code; see the README's changelog."""
import warnings

from ..codecs.hific import HiFiCCodec  # noqa: F401

warnings.warn("diffeic.hific.codec is deprecated: import from diffeic.codecs.hific (or diffeic.HiFiCCodec)",
              DeprecationWarning, stacklevel=2)

__all__ = ["HiFiCCodec"]

"""Deprecated import path: ``diffeic.codec`` is now :mod:`diffeic.codecs.diffeic` (``DiffEICCodec`` is also
``diffeic.DiffEICCodec``).  A re-export kept for old code; see the README's changelog."""
import warnings

from .codecs.base import pad_image, padded_size
from .codecs.diffeic import (CLI_ADVICE, MAX_TARGET_BPP, MAX_TARGET_BYTES, NON_FINITE_STREAM, ONESTEP,  # noqa: F401
                             PYTHON_ADVICE, DiffEICCodec, warn_if_untrained)

warnings.warn("diffeic.codec is deprecated: import from diffeic.codecs.diffeic (or diffeic.DiffEICCodec)",
              DeprecationWarning, stacklevel=2)


def _pad(x):
    """DiffEIC's zero padding to multiples of 64 (``DiffEICCodec.pad``)."""
    return pad_image(x, "constant")


__all__ = ["CLI_ADVICE", "DiffEICCodec", "NON_FINITE_STREAM", "ONESTEP", "PYTHON_ADVICE", "padded_size",
           "warn_if_untrained"]

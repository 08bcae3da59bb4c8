"""Deprecated import path: ``diffeic.hub`` is now :mod:`diffeic.codecs.registry` (``hub_offline``:
:mod:`diffeic.util`).  A re-export kept for old code; see the README's changelog."""
import warnings

from .codecs.registry import HUB_ID, is_hub_id, push_folder, resolve_checkpoint  # noqa: F401
from .util import hub_offline  # noqa: F401

warnings.warn("diffeic.hub is deprecated: import from diffeic.codecs.registry", DeprecationWarning, stacklevel=2)

__all__ = ["HUB_ID", "hub_offline", "is_hub_id", "push_folder", "resolve_checkpoint"]

"""The codecs: one base (:mod:`.base`), one plug-in module per family (:mod:`.diffeic`, :mod:`.hific`,
:mod:`.refine`), the checkpoint folder (:mod:`.folder`) and the name → family registry (:mod:`.registry`).

Adding a family is adding one module here with a :class:`~diffeic.codecs.base.Codec` subclass (see the smallest,
:mod:`.hific`) and its line in :data:`.registry.FAMILY_CODECS`.  Names are imported on first use (PEP 562), so the
CLI can ask the registry what a name is before it loads torch.
"""
from __future__ import annotations

from ..util import lazy_exports

_EXPORTS = {
    "Codec": "base", "load_codec": "registry", "codec_class": "registry", "family_of": "registry",
    "model_kind": "registry", "preset_names": "registry", "shipped_or_path": "registry",
    "pretrained_models": "registry", "FAMILY_CODECS": "registry",
    "DiffEICCodec": "diffeic", "HiFiCCodec": "hific", "RefineCodec": "refine", "SemanticCodec": "semantic",
    "TransformCodec": "transform",
}

__all__ = list(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
del lazy_exports


def __dir__():
    return sorted(__all__)

"""HiFiCCodec: the HiFiC transform codec with real bitstreams (family id ``hific`` in the container)."""
from __future__ import annotations

from ..image_codec import HyperpriorImageCodec
from .config import PRESETS, HiFiCConfig
from .model import HiFiCModel


class HiFiCCodec(HyperpriorImageCodec):
    """Mentzer et al. 2020: E → ŷ (mean-scale hyperprior, one rANS string) → G.  Decoding is deterministic.

    ``HiFiCCodec.from_config("hific_tiny")`` (random init, offline), ``from_pretrained(folder)``;
    ``compress``/``decompress``/``inspect``/``estimate_bits``/``save_pretrained`` as every diffeic codec.
    """

    family = "hific"
    config_class = HiFiCConfig
    presets = PRESETS
    model_class = HiFiCModel


__all__ = ["HiFiCCodec"]

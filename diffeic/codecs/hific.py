"""The HiFiC family (Mentzer et al. 2020): E → ŷ (mean-scale hyperprior, one rANS string) → G, deterministic."""
from ..hific.config import PRESETS, HiFiCConfig
from ..hific.model import HiFiCModel
from .transform import TransformCodec


class HiFiCCodec(TransformCodec):
    """``HiFiCCodec.from_config("hific_tiny")`` (random init, offline) or ``from_pretrained(folder)``; family id
    ``hific`` in the container."""

    family = "hific"
    config_class = HiFiCConfig
    presets = PRESETS
    model_class = HiFiCModel


__all__ = ["HiFiCCodec"]

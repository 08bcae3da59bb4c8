"""The HiFiC codec family (Mentzer et al., "High-Fidelity Generative Image Compression", NeurIPS 2020).

Layout: ``config.py`` (presets ``hific``, ``hific_tiny``), ``model.py`` (E, G, ChannelNorm; the
mean-scale hyperprior is the shared :mod:`diffeic.entropy.hyperprior`), ``discriminator.py`` (conditional
patch D, training only), ``losses.py`` (rate-target schedule, MSE and GAN terms; the perceptual term is
:func:`diffeic.netweights.perceptual_loss`); the codec (:class:`HiFiCCodec`) is the plug-in :mod:`diffeic.codecs.hific`.
Training: :mod:`diffeic.training.hific`.
"""
from .config import PRESETS, HiFiCConfig

__all__ = ["HiFiCCodec", "HiFiCConfig", "PRESETS"]


def __getattr__(name: str):
    # The codec lives in diffeic.codecs.hific (it imports this package's model); imported on first use.
    if name == "HiFiCCodec":
        from ..codecs.hific import HiFiCCodec

        return HiFiCCodec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

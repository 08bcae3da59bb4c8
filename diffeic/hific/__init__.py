"""The HiFiC codec family (Mentzer et al., "High-Fidelity Generative Image Compression", NeurIPS 2020).

Layout: ``config.py`` (presets ``hific``, ``hific_tiny``), ``model.py`` (E, G, ChannelNorm; the
mean-scale hyperprior is the shared :mod:`diffeic.entropy.hyperprior`), ``discriminator.py`` (conditional
patch D, training only), ``losses.py`` (rate-target schedule, MSE and GAN terms; the perceptual term is
:func:`diffeic.netweights.perceptual_loss`), ``codec.py`` (:class:`HiFiCCodec`).
Training: :mod:`diffeic.training.hific`.
"""
from .codec import HiFiCCodec
from .config import PRESETS, HiFiCConfig

__all__ = ["HiFiCCodec", "HiFiCConfig", "PRESETS"]

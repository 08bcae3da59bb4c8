"""The refinement codec family (Hoogeboom et al., "High-Fidelity Image Compression with Score-based
Generative Models", 2023): an MSE transform codec whose reconstruction a conditional diffusion model
(or a rectified flow) refines.

Layout: ``config.py`` (presets ``refine``, ``refine_flow``, ``refine_tiny``, ``refine_flow_tiny``),
``model.py`` (g_a/g_s with GDN, the shared :mod:`diffeic.entropy.hyperprior`, the UNet refiner),
``sampling.py`` (shifted-cosine diffusion, rectified flow); the codec (:class:`RefineCodec`) is the plug-in
:mod:`diffeic.codecs.refine`.  Training: :mod:`diffeic.training.refine`.
"""
from .config import PRESETS, RefineConfig

__all__ = ["RefineCodec", "RefineConfig", "PRESETS"]


def __getattr__(name: str):
    # The codec lives in diffeic.codecs.refine (it imports this package's model); imported on first use.
    if name == "RefineCodec":
        from ..codecs.refine import RefineCodec

        return RefineCodec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

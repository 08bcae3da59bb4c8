"""The refinement codec family (Hoogeboom et al., "High-Fidelity Image Compression with Score-based
Generative Models", 2023): an MSE transform codec whose reconstruction a conditional diffusion model
(or a rectified flow) refines.

Layout: ``config.py`` (presets ``refine``, ``refine_flow``, ``refine_tiny``, ``refine_flow_tiny``),
``model.py`` (g_a/g_s with GDN, the shared :mod:`diffeic.entropy.hyperprior`, the UNet refiner),
``sampling.py`` (shifted-cosine diffusion, rectified flow), ``codec.py`` (:class:`RefineCodec`).
Training: :mod:`diffeic.training.refine`.
"""
from .codec import RefineCodec
from .config import PRESETS, RefineConfig

__all__ = ["RefineCodec", "RefineConfig", "PRESETS"]

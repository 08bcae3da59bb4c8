"""Moved to :mod:`diffeic.entropy.hyperprior`; this old import path still works and warns."""
import warnings

from .entropy.hyperprior import Z_STRIDE, MeanScaleHyperprior, hyper_analysis, hyper_synthesis

warnings.warn("diffeic.hyperprior moved to diffeic.entropy.hyperprior", DeprecationWarning, stacklevel=2)

__all__ = ["MeanScaleHyperprior", "hyper_analysis", "hyper_synthesis", "Z_STRIDE"]

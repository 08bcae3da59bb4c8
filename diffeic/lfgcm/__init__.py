"""The latent-feature-guided compression module (LFGCM)."""
from .model import LFGCM, PAD_MULTIPLE, Y_STRIDE

__all__ = ["LFGCM", "PAD_MULTIPLE", "Y_STRIDE"]

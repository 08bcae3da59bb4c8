"""RefineCodec: MSE transform codec + score-based refiner with real bitstreams (family id ``refine``)."""
from __future__ import annotations

from typing import Dict

from ..image_codec import HyperpriorImageCodec
from .config import PRESETS, RefineConfig
from .model import RefineModel


class RefineCodec(HyperpriorImageCodec):
    """Hoogeboom et al. 2023: the stream holds the MSE autoencoder's latent only; decoding runs the refiner.

    ``decompress(bits, steps=None, seed=None)``: ``steps`` sampling steps (``0``: the MSE reconstruction
    itself) and the sampling seed; the encoder may store its choice in the stream
    (``compress(x, steps=..., seed=...)``), the model's config gives the defaults.
    """

    family = "refine"
    config_class = RefineConfig
    presets = PRESETS
    model_class = RefineModel

    def decode_defaults(self) -> Dict[str, int]:
        return {"steps": self.config.steps, "seed": self.config.seed}


__all__ = ["RefineCodec"]

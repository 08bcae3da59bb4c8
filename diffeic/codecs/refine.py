"""The refinement family (Hoogeboom et al. 2023): the stream holds an MSE autoencoder's latent only; decoding
runs a score-based refiner on its reconstruction."""
from typing import Dict

from ..refine.config import PRESETS, RefineConfig
from ..refine.model import RefineModel
from .transform import TransformCodec


class RefineCodec(TransformCodec):
    """``decompress(bits, steps=None, seed=None)``: ``steps`` sampling steps (``0``: the MSE reconstruction
    itself) and the sampling seed; the encoder may store its choice in the stream
    (``compress(x, steps=..., seed=...)``), the model's config gives the defaults.  Family id ``refine``.
    """

    family = "refine"
    config_class = RefineConfig
    presets = PRESETS
    model_class = RefineModel

    def decode_defaults(self) -> Dict[str, int]:
        return {"steps": self.config.steps, "seed": self.config.seed}


__all__ = ["RefineCodec"]

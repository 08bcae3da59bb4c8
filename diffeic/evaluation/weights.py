"""The perceptual networks' weights as the evaluation layer uses them: re-exported from :mod:`diffeic.netweights`,
the lower module the families' training losses share (this name stays importable)."""
from ..netweights import (DOWNLOAD_TIMEOUT_S, WeightFile, WeightsUnavailable, alexnet_weights, ensure_weights,
                          hub_checkpoint_dir, inception_weights, vgg16_weights)

__all__ = ["DOWNLOAD_TIMEOUT_S", "WeightFile", "WeightsUnavailable", "alexnet_weights", "ensure_weights",
           "hub_checkpoint_dir", "inception_weights", "vgg16_weights"]

"""Deprecated import path: ``diffeic.image_codec`` is now :mod:`diffeic.codecs.transform` (the HiFiC and refinement
codecs' base, ``TransformCodec``) and :mod:`diffeic.codecs.base`.  A re-export kept for old code; see the README's
changelog."""
import warnings

from .codecs.base import PAD_MULTIPLE, check_images, config_from_dict, pad_image, padded_size  # noqa: F401
from .codecs.folder import CONFIG_FILE, read_meta as read_checkpoint_meta  # noqa: F401
from .codecs.transform import MODEL_FILE, TransformCodec as HyperpriorImageCodec  # noqa: F401

warnings.warn("diffeic.image_codec is deprecated: import from diffeic.codecs.transform and diffeic.codecs.base",
              DeprecationWarning, stacklevel=2)

__all__ = ["HyperpriorImageCodec", "check_images", "pad_image", "padded_size", "config_from_dict",
           "read_checkpoint_meta", "CONFIG_FILE", "MODEL_FILE", "PAD_MULTIPLE"]

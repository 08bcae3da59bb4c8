"""diffeic: extreme image compression with latent feature guidance and a diffusion prior (DiffEIC).

Public names::

    from diffeic import DiffEICCodec, BitstreamError
    codec = DiffEICCodec.from_config("tiny")
    bits = codec.compress(x)            # x: (3,H,W) float in [0,1]
    x_hat = codec.decompress(bits)
"""
__version__ = "0.1.0"

from .bitstream import BitstreamError  # noqa: E402
from .codec import DiffEICCodec  # noqa: E402
from .config import DiffEICConfig, get_config  # noqa: E402

__all__ = ["DiffEICCodec", "BitstreamError", "DiffEICConfig", "get_config", "__version__"]

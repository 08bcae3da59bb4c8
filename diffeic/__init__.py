"""diffeic: extreme image compression with latent feature guidance and a diffusion prior (DiffEIC).

Public names::

    from diffeic import DiffEICCodec, BitstreamError
    codec = DiffEICCodec.from_config("tiny")
    bits = codec.compress(x)            # x: (3,H,W) float in [0,1]
    x_hat = codec.decompress(bits)

The names are imported on first use (PEP 562), so ``import diffeic`` and ``diffeic --version``
do not pay for torch and diffusers.
"""
__version__ = "0.1.0"

from .util import lazy_exports  # noqa: E402  (light: no torch)

_EXPORTS = {
    "DiffEICCodec": ("codecs.diffeic", "DiffEICCodec"),
    "Codec": ("codecs.base", "Codec"),
    "BitstreamError": ("bitstream", "BitstreamError"),
    "Decoder": ("diffusion.decoder", "Decoder"),
    "DecodeOptions": ("diffusion.decoder", "DecodeOptions"),
    "DiffEICConfig": ("config", "DiffEICConfig"),
    "get_config": ("config", "get_config"),
    "pretrained_models": ("codecs.registry", "pretrained_models"),
    "load_codec": ("codecs.registry", "load_codec"),
    "HiFiCCodec": ("codecs.hific", "HiFiCCodec"),
    "RefineCodec": ("codecs.refine", "RefineCodec"),
    "SemanticCodec": ("codecs.semantic", "SemanticCodec"),
    "TargetTooSmall": ("target_size", "TargetTooSmall"),
}

__all__ = [*_EXPORTS, "__version__"]


__getattr__ = lazy_exports(__name__, _EXPORTS)
del lazy_exports


def __dir__():
    return sorted(__all__)

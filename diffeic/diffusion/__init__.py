"""The CDDM side of DiffEIC: frozen SD2.1-base, the control module, samplers ([Li2024] Sec. III-C, Sec. IV-A)."""
from .backbone import FrozenBackbone
from .control import ControlModule, controlled_unet_forward
from .decoder import DecodeOptions, Decoder, controlled_eps_fn, decode_latent, denoise
from .sampling import SAMPLERS, add_noise, sample, sample_timesteps, sampler_timesteps, training_scheduler
from .sd_source import BackboneUnavailableError

__all__ = [
    "FrozenBackbone", "BackboneUnavailableError", "ControlModule", "controlled_unet_forward",
    "SAMPLERS", "sample", "sampler_timesteps", "training_scheduler", "add_noise", "sample_timesteps",
    "Decoder", "DecodeOptions", "controlled_eps_fn", "denoise", "decode_latent",
]

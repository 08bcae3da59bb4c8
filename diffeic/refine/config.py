"""Configurations of the refinement codec (Hoogeboom et al., "High-Fidelity Image Compression with
Score-based Generative Models", 2023 — "HFD"): an MSE-optimised transform codec plus a conditional
score-based refiner that adds the detail the MSE reconstruction lost.

The transform codec is the mean-scale hyperprior model of Minnen et al. 2018 in compressai's
``mbt2018-mean`` layout (N = 192, M = 320: four 5×5 stride-2 convs with GDN, mirrored with IGDN),
with the shared :mod:`diffeic.entropy.hyperprior` coder.  The refiner is a diffusers ``UNet2DModel`` that
sees the noisy image and the MSE reconstruction (6 input channels).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from ..config import MAX_WIDTH, SEED_LIMIT, FamilyConfig, check_bool, check_float, check_int, check_ints

VARIANTS = ("diffusion", "flow")


@dataclass
class RefineConfig(FamilyConfig):
    """A refinement codec: MSE autoencoder widths, refiner UNet, and its noise process."""

    N: int = 192                        # transform widths (compressai mbt2018-mean, quality ≥ 5)
    M: int = 320                        # latent channels
    hyper_channels: int = 192
    refiner_channels: Tuple[int, ...] = (128, 256, 256, 512)
    refiner_attention: Tuple[bool, ...] = (False, False, True, True)
    refiner_layers: int = 2             # ResNet blocks per UNet level
    refiner_groups: int = 32            # GroupNorm groups
    variant: str = "diffusion"          # "diffusion" (shifted-schedule v-prediction) or "flow" (rectified flow)
    logsnr_min: float = -10.0           # unshifted cosine schedule spans [logsnr_min, logsnr_max] ...
    logsnr_max: float = 10.0
    logsnr_shift: float = 2.0           # ... then shifted up by this: less noise at every t (details, not layout)
    flow_noise: float = 0.1             # rectified flow: σ of the noise added to the MSE image at t = 0 ([-1,1] units)
    steps: int = 32                     # default sampling steps (a stream may ask for others)
    seed: int = 0                       # default sampling seed

    def __post_init__(self) -> None:
        from ..bitstream import MAX_STEPS

        super().__post_init__()

        for key in ("N", "M", "hyper_channels", "refiner_groups"):
            setattr(self, key, check_int(key, getattr(self, key), 1, MAX_WIDTH))
        self.refiner_layers = check_int("refiner_layers", self.refiner_layers, 1, 64)
        self.refiner_channels = check_ints("refiner_channels", self.refiner_channels)
        if not isinstance(self.refiner_attention, (list, tuple)):
            raise ValueError(f"refiner_attention = {self.refiner_attention!r}: must be a list of true/false")
        self.refiner_attention = tuple(check_bool(f"refiner_attention[{i}]", a)
                                       for i, a in enumerate(self.refiner_attention))
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if len(self.refiner_channels) != len(self.refiner_attention) or not self.refiner_channels:
            raise ValueError("refiner_channels and refiner_attention need one entry per UNet level")
        if any(c % self.refiner_groups for c in self.refiner_channels):
            raise ValueError(f"refiner_channels {self.refiner_channels} must be multiples of refiner_groups "
                             f"{self.refiner_groups}")
        if len(self.refiner_channels) > 7:
            raise ValueError("at most 7 UNet levels (the padded image is a multiple of 64)")
        for key in ("logsnr_min", "logsnr_max", "logsnr_shift"):
            setattr(self, key, check_float(key, getattr(self, key), -100.0, 100.0, lo_open=False))
        if not self.logsnr_min < self.logsnr_max:
            raise ValueError(f"need logsnr_min < logsnr_max, got {self.logsnr_min}, {self.logsnr_max}")
        self.flow_noise = check_float("flow_noise", self.flow_noise, 0.0, 10.0, lo_open=False)
        self.steps = check_int("steps", self.steps, 1, MAX_STEPS)
        self.seed = check_int("seed", self.seed, 0, SEED_LIMIT - 1)


def _refine() -> RefineConfig:
    return RefineConfig(name="refine")


def _refine_flow() -> RefineConfig:
    return RefineConfig(name="refine_flow", variant="flow", steps=4)


def _refine_tiny() -> RefineConfig:
    # Every part present and wired as in the paper, at toy widths: CPU-fast for tests and demos.
    return RefineConfig(name="refine_tiny", N=16, M=24, hyper_channels=16, refiner_channels=(16, 32),
                        refiner_attention=(False, False), refiner_layers=1, refiner_groups=8, steps=4)


def _refine_flow_tiny() -> RefineConfig:
    return RefineConfig(name="refine_flow_tiny", N=16, M=24, hyper_channels=16, refiner_channels=(16, 32),
                        refiner_attention=(False, False), refiner_layers=1, refiner_groups=8, variant="flow",
                        steps=2)


PRESETS = {"refine": _refine, "refine_flow": _refine_flow, "refine_tiny": _refine_tiny,
           "refine_flow_tiny": _refine_flow_tiny}

__all__ = ["RefineConfig", "PRESETS", "VARIANTS"]

"""Configurations and presets of the ``semantic`` codec family (Rethinking Image Compression on the Web with
Generative AI): which generative decoder redraws the picture from its parts, and its decode settings.

* ``semantic_tiny``: the tiny control module (:mod:`diffeic.semantic.tiny_decoder`) over the shipped tiny
  backbone (``diffeic/data/pretrained/tiny-backbone``), random deterministic weights (its arch's ``init_seed``);
  offline.
  It has no text encoder: **the prompt has no effect on its reconstructions**.
* ``semantic_sd15``: Stable Diffusion 1.5 with a Canny ControlNet through diffusers, as in the paper
  (:mod:`diffeic.semantic.sd15`); weights from local folders or the hub (``sd15_path``, ``controlnet_path``, or
  the environment variables :data:`SD15_ENV`, :data:`CONTROLNET_ENV`).

The encoder's choices (prompt, edges, palette grid, kept regions) are per call of ``compress``, not config.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..bitstream import MAX_STEPS
from ..config import SEED_LIMIT, check_bool, check_float, check_int, check_str

DECODERS = ("tiny", "sd15")
#: The shipped frozen prior the tiny decoder is trained on (a folder name in ``diffeic/data/pretrained``, or a path).
TINY_BACKBONE = "tiny-backbone"
#: SD1.5 base weights (diffusers layout) and the Canny ControlNet, as hub ids by default.
DEFAULT_SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"      # the maintained copy of runwayml/stable-diffusion-v1-5
DEFAULT_CONTROLNET = "lllyasviel/sd-controlnet-canny"
SD15_ENV = "DIFFEIC_SD15_PATH"
CONTROLNET_ENV = "DIFFEIC_CONTROLNET_PATH"
#: Diffusion timesteps of both decoders' noise schedules (DDPM, 1000 steps).
NUM_TIMESTEPS = 1000


@dataclass
class SemanticConfig:
    """A semantic codec: its decoder and the decode defaults a stream may override (``steps``, ``seed``)."""

    name: str = "custom"
    decoder: str = "tiny"              # "tiny" or "sd15"
    steps: int = 8                     # default denoising calls (a stream may store others)
    seed: int = 0                      # default decode seed (a stream may store another)
    start: int = 600                   # tiny: img2img start timestep when there is a palette (999: pure noise)
    colour_fix: bool = True            # tiny: low frequencies taken from the upsampled palette
    strength: float = 0.8              # sd15: img2img strength from the upsampled palette (1: pure noise)
    guidance: float = 7.5              # sd15: classifier-free guidance scale
    control_scale: float = 1.0         # sd15: ControlNet conditioning scale
    arch: Optional[Dict[str, Any]] = None    # tiny: the decoder's architecture and init seed (None: default_arch())
    backbone: str = TINY_BACKBONE      # tiny: the frozen prior (shipped name or folder)
    sd15_path: Optional[str] = None    # sd15: base weights (None: $DIFFEIC_SD15_PATH, else DEFAULT_SD15)
    controlnet_path: Optional[str] = None    # sd15: Canny ControlNet (None: $DIFFEIC_CONTROLNET_PATH, else default)

    def __post_init__(self) -> None:
        self.name = check_str("name", self.name)
        self.decoder = check_str("decoder", self.decoder, DECODERS)
        self.steps = check_int("steps", self.steps, 1, MAX_STEPS)
        self.seed = check_int("seed", self.seed, 0, SEED_LIMIT - 1)
        self.start = check_int("start", self.start, 1, NUM_TIMESTEPS - 1)
        self.colour_fix = check_bool("colour_fix", self.colour_fix)
        self.strength = check_float("strength", self.strength, 0.0, 1.0)
        self.guidance = check_float("guidance", self.guidance, 0.0, 100.0, lo_open=False)
        self.control_scale = check_float("control_scale", self.control_scale, 0.0, 10.0, lo_open=False)
        if self.arch is not None and not isinstance(self.arch, dict):
            raise ValueError(f"arch = {self.arch!r}: must be a mapping (the tiny decoder's architecture) or null")
        self.backbone = check_str("backbone", self.backbone)
        self.sd15_path = check_str("sd15_path", self.sd15_path, optional=True)
        self.controlnet_path = check_str("controlnet_path", self.controlnet_path, optional=True)

    def resolved_sd15(self) -> str:
        """Where the SD1.5 base weights come from: ``sd15_path``, else ``$DIFFEIC_SD15_PATH``, else the hub id."""
        return self.sd15_path or os.environ.get(SD15_ENV) or DEFAULT_SD15

    def resolved_controlnet(self) -> str:
        """Where the Canny ControlNet comes from: ``controlnet_path``, else ``$DIFFEIC_CONTROLNET_PATH``, else the
        hub id."""
        return self.controlnet_path or os.environ.get(CONTROLNET_ENV) or DEFAULT_CONTROLNET


def _semantic_tiny() -> SemanticConfig:
    return SemanticConfig(name="semantic_tiny")


def _semantic_sd15() -> SemanticConfig:
    # The paper's decoder (SD1.5 + Canny ControlNet); 20 steps, the count of diffusers' ControlNet examples.
    return SemanticConfig(name="semantic_sd15", decoder="sd15", steps=20)


PRESETS = {"semantic_tiny": _semantic_tiny, "semantic_sd15": _semantic_sd15}

__all__ = ["CONTROLNET_ENV", "DECODERS", "DEFAULT_CONTROLNET", "DEFAULT_SD15", "PRESETS", "SD15_ENV",
           "SemanticConfig", "TINY_BACKBONE"]

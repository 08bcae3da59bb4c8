"""HiFiC configurations and presets (Mentzer et al., "High-Fidelity Generative Image Compression", NeurIPS 2020).

Architecture numbers follow the paper (Fig. 2, Appendix A) and the authors' released code
(tensorflow/compression ``models/hific``): encoder base width 60 doubling over 4 stride-2 convs,
C_y = 220 latent channels, a generator with 9 residual blocks at 960 channels, hyperprior with 320
channels, a conditional patch discriminator (64→512 filters, 4×4 kernels, ŷ fused through a 12-channel
3×3 conv and nearest-neighbour upsampling).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import MAX_WIDTH, FamilyConfig, check_int


@dataclass
class HiFiCConfig(FamilyConfig):
    """A HiFiC architecture (codec + discriminator). Defaults are the paper's."""

    latent_channels: int = 220          # C_y
    enc_base: int = 60                  # encoder/generator base width (×2 per stride-2 stage)
    num_down: int = 4                   # stride-2 stages: y has stride 16
    res_blocks: int = 9                 # generator residual blocks
    hyper_channels: int = 320
    disc_base: int = 64                 # first discriminator conv; doubles per layer up to 512
    disc_layers: int = 3                # stride-2 4×4 convs of the discriminator
    disc_latent_channels: int = 12      # ŷ → this many channels before upsampling
    disc_norm: str = "spectral"         # "spectral" (the authors' release) or "instance" (pix2pixHD / GC style)
    disc_scales: int = 1                # 1: single scale (HiFiC); >1: pix2pixHD-style multi-scale

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("latent_channels", "enc_base", "hyper_channels", "disc_base", "disc_layers", "disc_latent_channels"):
            setattr(self, key, check_int(key, getattr(self, key), 1, MAX_WIDTH))
        self.res_blocks = check_int("res_blocks", self.res_blocks, 0, 1024)
        # y at stride 16, as the container's padding assumes
        self.num_down = check_int("num_down", self.num_down, 4, 4)
        if self.disc_norm not in ("spectral", "instance"):
            raise ValueError(f"disc_norm must be 'spectral' or 'instance', got {self.disc_norm!r}")
        self.disc_scales = check_int("disc_scales", self.disc_scales, 1, 3)


def _hific() -> HiFiCConfig:
    return HiFiCConfig(name="hific")


def _hific_tiny() -> HiFiCConfig:
    # Every part present and wired as in the paper, at toy widths: CPU-fast for tests and demos.
    return HiFiCConfig(name="hific_tiny", latent_channels=16, enc_base=6, res_blocks=2, hyper_channels=16,
                       disc_base=16, disc_layers=3, disc_latent_channels=4)


PRESETS = {"hific": _hific, "hific_tiny": _hific_tiny}

__all__ = ["HiFiCConfig", "PRESETS"]

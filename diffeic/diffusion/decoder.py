"""Content latent → image: the CDDM decoding path ([Li2024] Fig. 2, Sec. III-C; official ``inference_partition.py``).

``decode_latent(backbone, control, z_c, ...)`` is what the codec calls after ``LFGCM.decompress``:
it samples ``z_0`` with the controlled frozen UNet (empty-prompt context, no CFG) and decodes it
with the frozen VAE.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from ..config import SamplerConfig, ScheduleConfig
from .backbone import FrozenBackbone
from .control import ControlModule
from .sampling import EpsFn, Generators, sample

if TYPE_CHECKING:
    from .fast import FastOptions

Tensor = torch.Tensor


def controlled_eps_fn(backbone: FrozenBackbone, control: ControlModule, z_c: Tensor) -> EpsFn:
    """``eps_fn(z_t, t)`` of the controlled UNet for a batch of content latents (official ``CDDM.forward``).

    The cached empty-prompt embedding is expanded to the batch (no CFG, empty prompt, as the official code).
    """
    context = backbone.text_embedding.to(z_c.device, z_c.dtype).expand(z_c.shape[0], -1, -1)

    def eps_fn(z_t: Tensor, t: Tensor) -> Tensor:
        return control(backbone.unet, z_t, t, context, z_c)

    return eps_fn


def denoise(backbone: FrozenBackbone, control: ControlModule, z_c: Tensor, sampler: str = "ddpm",
            steps: int = 50, generator: Generators = None,
            schedule: Optional[ScheduleConfig] = None, fewstep_start: int = 299,
            progress: bool = False) -> Tensor:
    """Sample the latent ``z_0`` (B,4,h,w) conditioned on ``z_c``; differentiable (no ``no_grad`` here)."""
    eps_fn = controlled_eps_fn(backbone, control, z_c)
    return sample(eps_fn, z_c, sampler=sampler, steps=steps, generator=generator, schedule=schedule,
                  fewstep_start=fewstep_start, progress=progress)


def check_content_latent(backbone: FrozenBackbone, z_c: Tensor) -> None:
    """Raise ``ValueError`` unless ``z_c`` is a finite ``(B, C_latent, h, w)`` tensor."""
    if z_c.ndim != 4 or z_c.shape[1] != backbone.unet.config.in_channels:
        raise ValueError(f"z_c must be (B, {backbone.unet.config.in_channels}, h, w), got {tuple(z_c.shape)}")
    if not torch.isfinite(z_c).all():
        raise ValueError("z_c contains NaN or Inf")


@torch.no_grad()
def decode_latent(backbone: FrozenBackbone, control: ControlModule, z_c: Tensor, sampler: str = "ddpm",
                  steps: int = 50, generator: Generators = None,
                  schedule: Optional[ScheduleConfig] = None, fewstep_start: int = 299,
                  progress: bool = False, options: Optional["FastOptions"] = None) -> Tensor:
    """Decode content latents to images in [0, 1] ([Li2024] Fig. 2: sample ``z_0``, then ``VAE.decode(z_0/0.18215)``).

    Args:
        backbone: frozen VAE + UNet + cached empty-prompt embedding.
        control: the trained control module (same device/dtype as the backbone).
        z_c: content latents ``(B, 4, H/8, W/8)`` from ``LFGCM.decompress``; a batch decodes at once.
        sampler, steps, fewstep_start: see :func:`diffeic.diffusion.sampling.sample` (paper: ``ddpm``, 50).
        generator: CPU generator for the start and per-step noise; e.g.
            ``torch.Generator().manual_seed(seed)``.  ``None`` uses the global RNG.
        schedule: the diffusion schedule (default SD2.1-base).
        progress: show a progress bar.
        options: :class:`~diffeic.diffusion.fast.FastOptions` (half precision, tiling, CUDA graphs, …);
            ``None`` runs the plain eager float32 path below.

    Returns:
        ``(B, 3, H, W)`` float images in [0, 1] on ``z_c``'s device.  ``steps=0`` is not a sampler
        setting; the paper's "0 steps" ablation is ``backbone.decode(z_c)``.
    """
    if options is not None:
        from .fast import FastDecoder

        # Module-level options (attention processors, memory format, VAE flags) are applied to the
        # modules and persist; keep a FastDecoder (or use DiffEICCodec.optimize) to reuse CUDA graphs.
        decoder = FastDecoder(backbone, control, options).configure()
        return decoder.decode(z_c, sampler, steps, generator, schedule, fewstep_start, progress)
    check_content_latent(backbone, z_c)
    z0 = denoise(backbone, control, z_c, sampler, steps, generator, schedule, fewstep_start, progress)
    return backbone.decode(z0)


def decode_with_config(backbone: FrozenBackbone, control: ControlModule, z_c: Tensor,
                       sampler_cfg: SamplerConfig, schedule: Optional[ScheduleConfig] = None,
                       seed: Optional[int] = None, progress: bool = False) -> Tensor:
    """:func:`decode_latent` with a :class:`SamplerConfig` (name, steps, fewstep_start; ``seed`` overrides its seed)."""
    generator = torch.Generator().manual_seed(sampler_cfg.seed if seed is None else int(seed))
    return decode_latent(backbone, control, z_c, sampler=sampler_cfg.name, steps=sampler_cfg.steps,
                         generator=generator, schedule=schedule, fewstep_start=sampler_cfg.fewstep_start,
                         progress=progress)

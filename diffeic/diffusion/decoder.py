"""Content latent → image: the CDDM decoding path ([Li2024] Fig. 2, Sec. III-C; official ``inference_partition.py``).

:class:`Decoder` is what the codec calls after ``LFGCM.decompress``: it samples ``z_0`` with the
controlled frozen UNet (empty-prompt context, no CFG) and decodes it with the frozen VAE.
:class:`DecodeOptions` selects, independently, how it runs:

``dtype``        ``None`` (float32) or ``"bf16"``/``"fp16"``: ``torch.autocast`` around the UNet, the
                 control module and the VAE decoder.  The sampler's own arithmetic (z_t, scheduler
                 updates, drawn noise) stays float32.
``sdpa``         PyTorch ``scaled_dot_product_attention`` (diffusers ``AttnProcessor2_0``, which the
                 models already use by default) vs. the classic ``AttnProcessor`` (explicit softmax).
``channels_last`` NHWC memory format for the conv-heavy UNet/control/VAE (faster convs on tensor cores).
``cuda_graphs``  the fused control + UNet step captured once per input shape and replayed
                 (:class:`~diffeic.diffusion.fast.CUDAGraphStep`); on CPU it falls back to the eager call.
``compile``      ``torch.compile`` of the fused step.
``vae_slicing``  diffusers' ``AutoencoderKL.enable_slicing``.
``tiles``        always tile the latent (:mod:`.tiling`, MultiDiffusion blending);
``auto_tile_pixels``  above this many (padded) image pixels the latent *and* the VAE decode are tiled
                 automatically (default 1024×1024); ``None`` never tiles automatically.

``DecodeOptions()`` is the plain eager float32 path (bit-identical to :func:`decode_latent` for
images up to the auto-tiling threshold).  The speed pieces themselves live in :mod:`.fast`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Optional, Union

import torch

from ..config import ScheduleConfig, check_int
from .backbone import FrozenBackbone
from .colour import colour_fix as fix_colours
from .control import ControlModule
from .fast import autocast, fast_step, set_attention, vae_tiling
from .sampling import EpsFn, Generators, sample
from .tiling import StepFn, TileOptions, tiled_step

if TYPE_CHECKING:
    from .onestep import OneStepDecoder

Tensor = torch.Tensor

_DTYPES = {None: None, "fp32": None, "float32": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "fp16": torch.float16, "float16": torch.float16}

#: Default threshold of automatic tiling, in padded image pixels (1 MP; 4000×3000 is 12 MP).
AUTO_TILE_PIXELS = 1024 * 1024


@dataclass(frozen=True)
class DecodeOptions:
    """How the decoder runs; see the module docstring.  ``DecodeOptions()`` is the plain path."""

    dtype: Optional[str] = None
    channels_last: bool = False
    sdpa: bool = True
    cuda_graphs: bool = False
    compile: bool = False
    vae_slicing: bool = False
    tiles: Optional[TileOptions] = None
    auto_tile_pixels: Optional[int] = AUTO_TILE_PIXELS
    auto_tiles: TileOptions = field(default_factory=TileOptions)
    vae_tile_pixels: int = 512              # VAE tile side (image pixels) when tiling
    #: The most sampling steps a stream may ask for (None: 4x the model's default; :mod:`diffeic.decode_cost`).
    max_steps: Optional[int] = None

    def __post_init__(self) -> None:
        if isinstance(self.dtype, torch.dtype):
            object.__setattr__(self, "dtype", {torch.bfloat16: "bf16", torch.float16: "fp16",
                                               torch.float32: None}.get(self.dtype, str(self.dtype)))
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be None, 'bf16' or 'fp16', got {self.dtype!r}")
        if self.vae_tile_pixels < 64 or self.vae_tile_pixels % 64:
            raise ValueError(f"vae_tile_pixels must be a positive multiple of 64, got {self.vae_tile_pixels}")
        if self.max_steps is not None:
            from ..bitstream import MAX_STEPS

            object.__setattr__(self, "max_steps", check_int("max_steps", self.max_steps, 1, MAX_STEPS))

    @property
    def torch_dtype(self) -> Optional[torch.dtype]:
        return _DTYPES[self.dtype]

    def exceeds_auto_tile(self, pixels: int) -> bool:
        """Whether an image of ``pixels`` padded pixels is above the automatic tiling threshold."""
        return self.auto_tile_pixels is not None and pixels > self.auto_tile_pixels

    @classmethod
    def for_device(cls, device: Union[str, torch.device], **overrides) -> "DecodeOptions":
        """Recommended settings: CUDA → bf16 + channels_last + CUDA graphs; CPU → the plain path
        (CPU bf16 is only faster on AMX/AVX512-BF16 hardware, and graphs do not exist there)."""
        if torch.device(device).type == "cuda":
            return replace(cls(dtype="bf16", channels_last=True, cuda_graphs=True), **overrides)
        return replace(cls(), **overrides)


def controlled_eps_fn(backbone: FrozenBackbone, control: ControlModule, z_c: Tensor,
                      step: Optional[StepFn] = None) -> EpsFn:
    """``eps_fn(z_t, t)`` of the controlled UNet for a batch of content latents (official ``CDDM.forward``).

    The cached empty-prompt embedding is expanded to the batch (no CFG, empty prompt, as the official code).
    The one definition for training and decoding: ``step(z_t, t, context, z_c)`` is the control module
    around the frozen UNet, by default plain, in the :class:`Decoder` fused, tiled or graphed.
    """
    context = backbone.text_embedding.to(z_c.device, z_c.dtype).expand(z_c.shape[0], -1, -1)
    step = step or functools.partial(control, backbone.unet)

    def eps_fn(z_t: Tensor, t: Tensor) -> Tensor:
        return step(z_t, t, context, z_c)

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


class _CountedStep:
    """Counts network evaluations (calls of the fused step; a batch of tiles is one call)."""

    def __init__(self, step: StepFn) -> None:
        self.step, self.calls, self.items = step, 0, 0

    def __call__(self, z_t: Tensor, t: Tensor, context: Tensor, z_c: Tensor) -> Tensor:
        self.calls += 1
        self.items += z_t.shape[0]
        return self.step(z_t, t, context, z_c)


class Decoder:
    """Content latents → images with :class:`DecodeOptions`; keeps its fused step (and CUDA graphs) across calls.

    ``Decoder(backbone, control).decode(...)`` with default options equals :func:`decode_latent`
    bit for bit below the auto-tiling threshold.  Call :meth:`configure` once to apply the
    module-level options (attention, memory format, VAE slicing) to the shared modules.
    """

    def __init__(self, backbone: FrozenBackbone, control: ControlModule,
                 options: Optional[DecodeOptions] = None) -> None:
        self.backbone, self.control = backbone, control
        self.options = o = options or DecodeOptions()
        self._step = _CountedStep(fast_step(functools.partial(control, backbone.unet), o.torch_dtype,
                                            o.channels_last, o.compile, o.cuda_graphs))

    def configure(self) -> "Decoder":
        """Apply the persistent (module-level) options: attention processors, memory format, VAE slicing.

        Never touches the LFGCM.  Memory format changes the storage of conv weights, not their values,
        so checkpoints and fingerprints are unaffected.
        """
        nets = [self.backbone.unet, self.control, self.backbone.vae]
        set_attention(nets, self.options.sdpa)
        fmt = torch.channels_last if self.options.channels_last else torch.contiguous_format
        for net in nets:
            net.to(memory_format=fmt)
        vae = self.backbone.vae
        vae.enable_slicing() if self.options.vae_slicing else vae.disable_slicing()
        return self

    @property
    def evaluations(self) -> int:
        """Network evaluations (fused control+UNet calls) since construction."""
        return self._step.calls

    def tiles_for(self, z_c: Tensor) -> Optional[TileOptions]:
        """The latent tiling used for ``z_c``: forced ``tiles``, automatic above the threshold, else none."""
        o = self.options
        if o.tiles is not None:
            return o.tiles
        return o.auto_tiles if o.exceeds_auto_tile(z_c.shape[-2] * z_c.shape[-1] * 64) else None

    def eps_fn(self, z_c: Tensor, tiles: Optional[TileOptions] = None) -> EpsFn:
        """:func:`controlled_eps_fn` through this decoder's step, tiled when ``tiles`` is given."""
        return controlled_eps_fn(self.backbone, self.control, z_c,
                                 tiled_step(self._step, tiles) if tiles is not None else self._step)

    @torch.no_grad()
    def denoise(self, z_c: Tensor, sampler: str = "ddpm", steps: int = 50, generator: Generators = None,
                schedule: Optional[ScheduleConfig] = None, fewstep_start: int = 299,
                progress: bool = False) -> Tensor:
        """Sample ``z_0`` (float32) conditioned on ``z_c``."""
        return sample(self.eps_fn(z_c, self.tiles_for(z_c)), z_c, sampler=sampler, steps=steps, generator=generator,
                      schedule=schedule, fewstep_start=fewstep_start, progress=progress)

    @torch.no_grad()
    def vae_decode(self, z0: Tensor, tiled: bool = False) -> Tensor:
        """``backbone.decode`` under the options' autocast, VAE-tiled when ``tiled`` (float32 output)."""
        with vae_tiling(self.backbone.vae, self.options.vae_tile_pixels, enabled=tiled), \
                autocast(z0.device, self.options.torch_dtype):
            x = self.backbone.decode(z0)
        return x.float()

    @torch.no_grad()
    def decode(self, z_c: Tensor, sampler: str = "ddpm", steps: int = 50, generator: Generators = None,
               schedule: Optional[ScheduleConfig] = None, fewstep_start: int = 299,
               progress: bool = False, colour_fix: bool = False) -> Tensor:
        """Content latents ``(B,4,h,w)`` → images ``(B,3,8h,8w)`` in [0,1] (see :func:`decode_latent`).

        ``colour_fix``: the sample keeps ``z_c``'s low frequencies (:func:`~diffeic.diffusion.colour.colour_fix`).
        """
        check_content_latent(self.backbone, z_c)
        z0 = self.denoise(z_c, sampler, steps, generator, schedule, fewstep_start, progress)
        if colour_fix:
            z0 = fix_colours(z0, z_c)
        return self.vae_decode(z0, tiled=self.tiles_for(z_c) is not None)

    @torch.no_grad()
    def decode_one_step(self, z_c: Tensor, one_step: "OneStepDecoder", generator: Generators = None,
                        colour_fix: bool = False) -> Tensor:
        """One-step decoding (:mod:`.onestep`) with these options; build this decoder on ``one_step.control``."""
        if one_step.control is not self.control:
            raise ValueError("decode_one_step needs a Decoder built on the one-step decoder's control module")
        check_content_latent(self.backbone, z_c)
        tiles = self.tiles_for(z_c)
        z0 = one_step.predict(self.eps_fn(z_c, tiles), z_c, generator)
        if colour_fix:
            z0 = fix_colours(z0, z_c)
        return self.vae_decode(z0, tiled=tiles is not None)


@torch.no_grad()
def decode_latent(backbone: FrozenBackbone, control: ControlModule, z_c: Tensor, sampler: str = "ddpm",
                  steps: int = 50, generator: Generators = None,
                  schedule: Optional[ScheduleConfig] = None, fewstep_start: int = 299,
                  progress: bool = False, options: Optional[DecodeOptions] = None) -> Tensor:
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
        options: :class:`DecodeOptions` (half precision, tiling, CUDA graphs, …), applied to the modules
            (they persist; keep a :class:`Decoder` to reuse CUDA graphs); ``None`` runs the plain eager
            float32 path, never tiled.

    Returns:
        ``(B, 3, H, W)`` float images in [0, 1] on ``z_c``'s device.  ``steps=0`` is not a sampler
        setting; the paper's "0 steps" ablation is ``backbone.decode(z_c)``.
    """
    decoder = Decoder(backbone, control, options or DecodeOptions(auto_tile_pixels=None))
    if options is not None:
        decoder.configure()
    return decoder.decode(z_c, sampler, steps, generator, schedule, fewstep_start, progress)


#: Deprecated names of :class:`Decoder` and :class:`DecodeOptions` (they were in ``diffusion/fast.py``).
FastDecoder, FastOptions = Decoder, DecodeOptions

"""Switchable fast paths for decoding: one options object, each path testable against plain.

:class:`FastOptions` selects, independently:

``dtype``        ``None`` (float32) or ``"bf16"``/``"fp16"``: ``torch.autocast`` around the UNet, the
                 control module and the VAE decoder.  Never around the LFGCM: its entropy path is an
                 exact integer computation that must stay bit-identical across devices.  The sampler's
                 own arithmetic (z_t, scheduler updates, drawn noise) stays float32.
``sdpa``         PyTorch ``scaled_dot_product_attention`` (diffusers ``AttnProcessor2_0``, which the
                 models already use by default) vs. the classic ``AttnProcessor`` (explicit softmax).
``channels_last`` NHWC memory format for the conv-heavy UNet/control/VAE (faster convs on tensor cores).
``cuda_graphs``  the fused control + UNet step captured once per input shape and replayed
                 (:class:`CUDAGraphStep`); on CPU it falls back to the eager call.
``compile``      ``torch.compile`` of the fused step.
``vae_tiling`` / ``vae_slicing``  diffusers' ``AutoencoderKL.enable_tiling/enable_slicing``
                 (tiling also affects encoding of images larger than the VAE tile).
``tiles``        always tile the latent (:mod:`.tiling`, MultiDiffusion blending);
``auto_tile_pixels``  above this many (padded) image pixels the latent *and* the VAE decode are tiled
                 automatically (default 1024×1024); ``None`` never tiles automatically.

The default ``FastOptions()`` is the plain eager float32 path, bit-identical to
:func:`diffeic.diffusion.decoder.decode_latent` for images up to the auto-tiling threshold.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0
from torch import nn

from ..config import ScheduleConfig
from .backbone import FrozenBackbone
from .control import ControlModule
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
class FastOptions:
    """Decode-speed options; see the module docstring.  ``FastOptions()`` is the plain path."""

    dtype: Optional[str] = None
    channels_last: bool = False
    sdpa: bool = True
    cuda_graphs: bool = False
    compile: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    tiles: Optional[TileOptions] = None
    auto_tile_pixels: Optional[int] = AUTO_TILE_PIXELS
    auto_tiles: TileOptions = field(default_factory=TileOptions)
    vae_tile_pixels: int = 512              # VAE decode tile side (image pixels) when tiling

    def __post_init__(self) -> None:
        if isinstance(self.dtype, torch.dtype):
            object.__setattr__(self, "dtype", {torch.bfloat16: "bf16", torch.float16: "fp16",
                                               torch.float32: None}.get(self.dtype, str(self.dtype)))
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be None, 'bf16' or 'fp16', got {self.dtype!r}")
        if self.vae_tile_pixels < 64 or self.vae_tile_pixels % 64:
            raise ValueError(f"vae_tile_pixels must be a positive multiple of 64, got {self.vae_tile_pixels}")

    @property
    def torch_dtype(self) -> Optional[torch.dtype]:
        return _DTYPES[self.dtype]

    def exceeds_auto_tile(self, pixels: int) -> bool:
        """Whether an image of ``pixels`` padded pixels is above the automatic tiling threshold."""
        return self.auto_tile_pixels is not None and pixels > self.auto_tile_pixels

    @classmethod
    def for_device(cls, device: Union[str, torch.device], **overrides) -> "FastOptions":
        """Recommended settings: CUDA → bf16 + channels_last + CUDA graphs; CPU → the plain path
        (CPU bf16 is only faster on AMX/AVX512-BF16 hardware, and graphs do not exist there)."""
        if torch.device(device).type == "cuda":
            return replace(cls(dtype="bf16", channels_last=True, cuda_graphs=True), **overrides)
        return replace(cls(), **overrides)


# --------------------------------------------------------------------------- module-level settings

def set_attention(modules: Sequence[nn.Module], sdpa: bool) -> int:
    """Give every diffusers ``Attention`` in ``modules`` the SDPA or the classic processor; returns the count."""
    n = 0
    for module in modules:
        for m in module.modules():
            if isinstance(m, Attention):
                m.set_processor(AttnProcessor2_0() if sdpa else AttnProcessor())
                n += 1
    return n


def configure_modules(backbone: FrozenBackbone, control: ControlModule, opts: FastOptions) -> None:
    """Apply the persistent (module-level) options: attention processors, memory format, VAE tiling/slicing.

    Never touches the LFGCM.  Memory format changes the storage of conv weights, not their values,
    so checkpoints and fingerprints are unaffected.
    """
    nets = [backbone.unet, control, backbone.vae]
    set_attention(nets, opts.sdpa)
    fmt = torch.channels_last if opts.channels_last else torch.contiguous_format
    for net in nets:
        net.to(memory_format=fmt)
    vae = backbone.vae
    vae.enable_tiling() if opts.vae_tiling else vae.disable_tiling()
    vae.enable_slicing() if opts.vae_slicing else vae.disable_slicing()


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for half precision, or a no-op context for float32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def vae_tiling(vae: nn.Module, tile_pixels: int, enabled: bool = True) -> Iterator[None]:
    """Temporarily switch on diffusers' VAE tiling with ``tile_pixels``-sided tiles (restored afterwards)."""
    names = ("use_tiling", "tile_sample_min_size", "tile_latent_min_size")
    saved = {n: getattr(vae, n) for n in names}
    if enabled:
        down = 2 ** (len(vae.config.block_out_channels) - 1)
        vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size = True, tile_pixels, tile_pixels // down
    try:
        yield
    finally:
        for n, v in saved.items():
            setattr(vae, n, v)


# --------------------------------------------------------------------------- the fused step

class CUDAGraphStep:
    """``step(z_t, t, context, z_c)`` captured as a CUDA graph per input signature, then replayed.

    Static input buffers are allocated at capture; every call copies its inputs into them, replays
    and returns a copy of the static output.  Capture happens once per (shapes, dtypes, device);
    all graphs share one memory pool.  Off CUDA, or with gradients enabled, the eager ``step`` runs.
    """

    def __init__(self, step: StepFn, warmup: int = 3) -> None:
        self.step = step
        self.warmup = warmup
        self.graphs: Dict[tuple, Tuple[torch.cuda.CUDAGraph, List[Tensor], Tensor]] = {}
        self._pool = None

    def __call__(self, z_t: Tensor, t: Tensor, context: Tensor, z_c: Tensor) -> Tensor:
        args = (z_t, t, context, z_c)
        if z_t.device.type != "cuda" or torch.is_grad_enabled():
            return self.step(*args)
        key = tuple((tuple(a.shape), a.dtype, a.device) for a in args)
        if key not in self.graphs:
            self.graphs[key] = self._capture(args)
        graph, inputs, output = self.graphs[key]
        for buf, a in zip(inputs, args):
            buf.copy_(a)
        graph.replay()
        return output.clone()

    def _capture(self, args: Tuple[Tensor, ...]):
        inputs = [a.clone().contiguous() for a in args]
        # Warm-up on a side stream (cuDNN autotuning, lazy inits) must not be part of the capture.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.step(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            output = self.step(*inputs)
        return graph, inputs, output


class _CountedStep:
    """Counts network evaluations (calls of the fused step; a batch of tiles is one call)."""

    def __init__(self, step: StepFn) -> None:
        self.step, self.calls, self.items = step, 0, 0

    def __call__(self, z_t: Tensor, t: Tensor, context: Tensor, z_c: Tensor) -> Tensor:
        self.calls += 1
        self.items += z_t.shape[0]
        return self.step(z_t, t, context, z_c)


def make_step(backbone: FrozenBackbone, control: ControlModule, opts: FastOptions) -> StepFn:
    """The control module + frozen UNet as one callable, with autocast / channels_last / compile / graphs.

    Returns float32 eps in the standard memory format whatever the internal precision and layout,
    so the sampler's arithmetic (and its noise draws) is the same on every path.
    """
    dtype = opts.torch_dtype
    unet = backbone.unet

    def step(z_t: Tensor, t: Tensor, context: Tensor, z_c: Tensor) -> Tensor:
        if opts.channels_last:
            z_t, z_c = z_t.contiguous(memory_format=torch.channels_last), z_c.contiguous(
                memory_format=torch.channels_last)
        with autocast(z_t.device, dtype):
            eps = control(unet, z_t, t, context, z_c)
        return eps.float().contiguous()

    if opts.compile:
        step = torch.compile(step, dynamic=False)
    if opts.cuda_graphs:
        step = CUDAGraphStep(step)
    return step


# --------------------------------------------------------------------------- decoding

class FastDecoder:
    """Content latents → images with :class:`FastOptions`; keeps its fused step (and CUDA graphs) across calls.

    ``FastDecoder(backbone, control).decode(...)`` with default options equals ``decode_latent``
    bit for bit below the auto-tiling threshold.  Call :meth:`configure` once to apply the
    module-level options (attention, memory format, VAE flags) to the shared modules.
    """

    def __init__(self, backbone: FrozenBackbone, control: ControlModule,
                 options: Optional[FastOptions] = None) -> None:
        self.backbone, self.control = backbone, control
        self.options = options or FastOptions()
        self._step = _CountedStep(make_step(backbone, control, self.options))

    def configure(self) -> "FastDecoder":
        configure_modules(self.backbone, self.control, self.options)
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
        """``eps_fn(z_t, t)`` for :func:`sample`, tiled when ``tiles`` is given."""
        context = self.backbone.text_embedding.to(z_c.device, z_c.dtype).expand(z_c.shape[0], -1, -1)
        step = tiled_step(self._step, tiles) if tiles is not None else self._step

        def eps_fn(z_t: Tensor, t: Tensor) -> Tensor:
            return step(z_t, t, context, z_c)

        return eps_fn

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
               progress: bool = False) -> Tensor:
        """Content latents ``(B,4,h,w)`` → images ``(B,3,8h,8w)`` in [0,1] (see ``decode_latent``)."""
        from .decoder import check_content_latent

        check_content_latent(self.backbone, z_c)
        z0 = self.denoise(z_c, sampler, steps, generator, schedule, fewstep_start, progress)
        return self.vae_decode(z0, tiled=self.tiles_for(z_c) is not None)

    @torch.no_grad()
    def decode_one_step(self, z_c: Tensor, one_step: "OneStepDecoder", generator: Generators = None) -> Tensor:
        """One-step decoding (:mod:`.onestep`) with these options; build this decoder on ``one_step.control``."""
        from .decoder import check_content_latent

        if one_step.control is not self.control:
            raise ValueError("decode_one_step needs a FastDecoder built on the one-step decoder's control module")
        check_content_latent(self.backbone, z_c)
        tiles = self.tiles_for(z_c)
        z0 = one_step.predict(self.eps_fn(z_c, tiles), z_c, generator)
        return self.vae_decode(z0, tiled=tiles is not None)

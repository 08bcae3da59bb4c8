"""Low-level decode-speed pieces: attention processors, autocast, VAE tiling, the fused step and its CUDA graphs.

:class:`~diffeic.diffusion.decoder.Decoder` switches them with its
:class:`~diffeic.diffusion.decoder.DecodeOptions`; nothing here imports the decoder back.  None of them is
ever applied to the LFGCM: its entropy path is an exact integer computation that must stay bit-identical
across devices.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0
from torch import nn

from .tiling import StepFn

Tensor = torch.Tensor


def set_attention(modules: Sequence[nn.Module], sdpa: bool) -> int:
    """Give every diffusers ``Attention`` in ``modules`` the SDPA or the classic processor; returns the count."""
    n = 0
    for module in modules:
        for m in module.modules():
            if isinstance(m, Attention):
                m.set_processor(AttnProcessor2_0() if sdpa else AttnProcessor())
                n += 1
    return n


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for half precision, or a no-op context for float32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def vae_tiling(vae: nn.Module, tile_pixels: int, enabled: bool = True) -> Iterator[None]:
    """Temporarily switch on diffusers' VAE tiling with ``tile_pixels``-sided tiles (restored afterwards)."""
    names = ("use_tiling", "tile_sample_min_size", "tile_latent_min_size")
    if not hasattr(vae, "use_tiling"):        # an autoencoder without diffusers' tiling (PatchAutoencoder) needs none
        yield
        return
    saved = {n: getattr(vae, n) for n in names}
    if enabled:
        down = 2 ** (len(vae.config.block_out_channels) - 1)
        vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size = True, tile_pixels, tile_pixels // down
    try:
        yield
    finally:
        for n, v in saved.items():
            setattr(vae, n, v)


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


def fast_step(step: StepFn, dtype: Optional[torch.dtype] = None, channels_last: bool = False,
              compile: bool = False, cuda_graphs: bool = False) -> StepFn:
    """``step`` (the control module + frozen UNet) with autocast / channels_last / compile / CUDA graphs.

    Returns float32 eps in the standard memory format whatever the internal precision and layout,
    so the sampler's arithmetic (and its noise draws) is the same on every path.
    """
    def fused(z_t: Tensor, t: Tensor, context: Tensor, z_c: Tensor) -> Tensor:
        if channels_last:
            z_t, z_c = z_t.contiguous(memory_format=torch.channels_last), z_c.contiguous(
                memory_format=torch.channels_last)
        with autocast(z_t.device, dtype):
            eps = step(z_t, t, context, z_c)
        return eps.float().contiguous()

    if compile:
        fused = torch.compile(fused, dynamic=False)
    if cuda_graphs:
        fused = CUDAGraphStep(fused)
    return fused

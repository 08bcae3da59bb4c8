"""Latent tiling for large images: MultiDiffusion-style blended noise prediction.

At every sampler step the noise prediction is computed on overlapping latent tiles of the
``(z_t, z_c)`` pair and blended with smooth weights (Bar-Tal et al. 2023, "MultiDiffusion").
Because the blend happens at *every* step, neighbouring tiles are pulled towards one shared
``z_t`` and no seam forms; the raised-cosine ramps additionally make each tile's contribution
fade out before its border, where its (truncated) context is least reliable.

Memory then scales with the tile, not the image: attention in the UNet's first level is
quadratic in the number of latent positions, so a 4000×3000 image (≈190k positions) cannot
be denoised in one piece on any GPU, while 96×96-latent tiles (768 px) take the memory of one
SD2.1 image at its native resolution.

With one tile covering the whole latent the tiled path *is* the untiled path (bit-identical).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Tuple

import torch

Tensor = torch.Tensor
#: ``step(z_t, t, context, z_c) -> eps`` for a batch; the controlled UNet (maybe graphed/autocast).
StepFn = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]

#: Latent tile sides must be multiples of this: the SD UNet downsamples 3× by 2, and a multiple of
#: 8 keeps every level an integer size (no explicit upsample sizes, same code path as untiled).
TILE_MULTIPLE = 8


@dataclass(frozen=True)
class TileOptions:
    """Latent tiling settings (sizes in latent pixels: one latent pixel = 8 image pixels).

    Attributes:
        size: tile side (multiple of 8).  96 = 768 px, SD2.1's native resolution.
        overlap: width of the blended band between neighbouring tiles (multiple of 8, < size).
        batch: how many tiles go through the UNet in one call (bigger: faster on a GPU, more memory).
    """

    size: int = 96
    overlap: int = 16
    batch: int = 1

    def __post_init__(self) -> None:
        if self.size < TILE_MULTIPLE or self.size % TILE_MULTIPLE:
            raise ValueError(f"tile size must be a positive multiple of {TILE_MULTIPLE}, got {self.size}")
        if self.overlap < 0 or self.overlap % TILE_MULTIPLE or self.overlap >= self.size:
            raise ValueError(f"tile overlap must be a multiple of {TILE_MULTIPLE} in [0, size), got {self.overlap}")
        if self.batch < 1:
            raise ValueError(f"tile batch must be >= 1, got {self.batch}")


def tile_starts(length: int, size: int, overlap: int) -> List[int]:
    """Start offsets of tiles of ``size`` covering ``[0, length)`` with at least ``overlap`` shared.

    The stride is ``size - overlap``; the last tile is aligned to the end (so every tile has the
    same shape and a CUDA graph captured for one serves all).  ``length <= size``: one tile.
    """
    if length <= size:
        return [0]
    stride = size - overlap
    n = math.ceil((length - size) / stride) + 1
    starts = [min(i * stride, length - size) for i in range(n)]
    return sorted(set(starts))


def _ramp(length: int, overlap: int, lead: bool, trail: bool) -> Tensor:
    """1-D weights: 1 inside, raised-cosine ramps of ``overlap`` samples on sides that border a tile.

    Values are strictly positive (the first sample is sin²(π/4/overlap) > 0), so every latent
    position has a non-zero total weight even where only one tile reaches it.
    """
    w = torch.ones(length, dtype=torch.float64)
    if overlap > 0:
        k = torch.arange(overlap, dtype=torch.float64)
        ramp = torch.sin(0.5 * math.pi * (k + 0.5) / overlap) ** 2
        if lead:
            w[:overlap] = ramp
        if trail:
            w[length - overlap:] = torch.minimum(w[length - overlap:], ramp.flip(0))
    return w


def tile_layout(h: int, w: int, opts: TileOptions) -> List[Tuple[slice, slice, Tensor]]:
    """``(row slice, column slice, weight (th, tw) float64)`` for each tile of an ``h × w`` latent."""
    size_h, size_w = min(opts.size, h), min(opts.size, w)
    rows, cols = tile_starts(h, size_h, opts.overlap), tile_starts(w, size_w, opts.overlap)
    layout = []
    for i, r in enumerate(rows):
        wr = _ramp(size_h, opts.overlap, lead=i > 0, trail=i < len(rows) - 1)
        for j, c in enumerate(cols):
            wc = _ramp(size_w, opts.overlap, lead=j > 0, trail=j < len(cols) - 1)
            layout.append((slice(r, r + size_h), slice(c, c + size_w), wr[:, None] * wc[None, :]))
    return layout


def tiled_step(step: StepFn, opts: TileOptions) -> StepFn:
    """Wrap ``step`` so it predicts eps tile by tile and blends the tiles (MultiDiffusion).

    The layout is computed once per latent size.  A single tile calls ``step`` on the whole input
    unchanged, so results are then bit-identical to the untiled path.
    """
    cache = {}

    def run(z_t: Tensor, t: Tensor, context: Tensor, z_c: Tensor) -> Tensor:
        h, w = z_t.shape[-2:]
        if (h, w) not in cache:
            cache[(h, w)] = tile_layout(h, w, opts)
        layout = cache[(h, w)]
        if len(layout) == 1:
            return step(z_t, t, context, z_c)
        b = z_t.shape[0]
        acc = torch.zeros(z_t.shape, dtype=torch.float32, device=z_t.device)
        norm = torch.zeros((h, w), dtype=torch.float32, device=z_t.device)
        for k in range(0, len(layout), opts.batch):
            group = layout[k:k + opts.batch]
            # Tiles of one group are stacked along the batch dimension: one UNet call per group.
            zt = torch.cat([z_t[..., rs, cs] for rs, cs, _ in group])
            zc = torch.cat([z_c[..., rs, cs] for rs, cs, _ in group])
            eps = step(zt, t.repeat(len(group)), context.repeat(len(group), 1, 1), zc).float()
            for g, (rs, cs, wt) in enumerate(group):
                wt = wt.to(acc.device, torch.float32)
                acc[..., rs, cs] += eps[g * b:(g + 1) * b] * wt
                norm[rs, cs] += wt
        return (acc / norm).to(z_t.dtype)

    return run

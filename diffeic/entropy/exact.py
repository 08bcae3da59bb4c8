"""Device-independent evaluation of the networks that choose the entropy coder's CDFs (every family's).

Learned codecs fail silently when encoder and decoder compute the Gaussian parameters (σ, μ)
with slightly different floating-point results — another GPU, another thread count, another
convolution algorithm — because σ selects a CDF by thresholds and one flipped index desynchronises
the arithmetic decoder.  Rounding the float outputs does not help (rounding has boundaries too).

So the coding path (hyper-decoder ψ, channel and spatial contexts, entropy-parameter nets) runs
in **fixed-point integer arithmetic** (Ballé et al., "Integer networks for data compression with
latent-variable models", ICLR 2019): weights on a 2^-14 grid, activations on a 2^-8 grid, every
convolution an integer dot product evaluated as ``unfold`` + ``matmul`` in float64.  All products
and partial sums are integers below 2^53, so float64 represents every intermediate exactly and
the result is the same in any summation order, on any device, with any thread count.  GELU is a
lookup table on the activation grid.  Training keeps the float networks; this is their
quantised twin, compiled from the same weights whenever they change; the training forward uses
its σ and μ (straight-through) so that training, rate estimate and coding see the same symbols.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

ACT_BITS = 8                       # activations: integer a means a / 2^8
WEIGHT_BITS = 14                   # weights: integer w means w / 2^14
ACT_CLIP = 1 << 18                 # |a| ≤ 2^18 grid steps (±1024 in real units)
LATENT_LIMIT = ACT_CLIP / (1 << ACT_BITS)   # ±1024: the latents the coder can represent exactly
_EXACT_LIMIT = 1 << 53             # float64 holds every integer below this exactly
GELU_RANGE = 8 << ACT_BITS         # beyond ±8, GELU(x) rounds to x (x>0) or 0 (x<0) on the grid
ACT_SCALE = float(1 << ACT_BITS)


def _gelu_table() -> torch.Tensor:
    # math.erf on exact grid points; the table is data, identical wherever it is used.
    values = [round(i / ACT_SCALE * 0.5 * (1.0 + math.erf(i / ACT_SCALE / math.sqrt(2.0))) * ACT_SCALE)
              for i in range(-GELU_RANGE, GELU_RANGE + 1)]
    return torch.tensor(values, dtype=torch.float64)


_GELU = _gelu_table()


def to_grid(x: torch.Tensor) -> torch.Tensor:
    """Real values → integers on the activation grid (float64 tensor holding integers)."""
    return torch.round(x.double() * ACT_SCALE).clamp_(-ACT_CLIP, ACT_CLIP)


def from_grid(a: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Grid integers → real values (exact in float32 for |a| < 2^24)."""
    return (a / ACT_SCALE).to(dtype)


class _Conv:
    """An integer convolution (or transposed convolution, rewritten as one) on grid activations."""

    def __init__(self, layer: nn.Module) -> None:
        w = layer.weight.detach().double()   # on the weights' device: training recompiles every step
        if isinstance(layer, nn.ConvTranspose2d):
            # conv_transpose(k, s, p, op) == zero-insertion by s, pad (k-1-p, k-1-p+op), conv with the
            # flipped kernel and swapped in/out channels.
            self.upsample = layer.stride[0]
            k, p, op = layer.kernel_size[0], layer.padding[0], layer.output_padding[0]
            self.pad = (k - 1 - p, k - 1 - p + op, k - 1 - p, k - 1 - p + op)
            w = w.transpose(0, 1).flip(-1, -2)
            self.stride = 1
        else:
            self.upsample = 1
            p = layer.padding[0]
            self.pad = (p, p, p, p)
            self.stride = layer.stride[0]
        self.kernel = w.shape[-1]
        w_int = torch.round(w * (1 << WEIGHT_BITS))
        fan_in = w_int[0].numel()
        bound = fan_in * w_int.abs().max().item() * ACT_CLIP
        if bound >= _EXACT_LIMIT:
            raise ValueError(f"weights of {layer} are too large for exact integer coding (bound 2^{math.log2(bound):.1f})")
        self.weight = w_int.reshape(w_int.shape[0], -1)
        bias = layer.bias.detach().double() if layer.bias is not None else w.new_zeros(w.shape[0])
        self.bias = torch.round(bias * (1 << (ACT_BITS + WEIGHT_BITS)))[:, None]

    def to(self, device: torch.device) -> "_Conv":
        self.weight, self.bias = self.weight.to(device), self.bias.to(device)
        return self

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        if self.upsample > 1:
            s = self.upsample
            b, c, h, w = a.shape
            up = a.new_zeros(b, c, (h - 1) * s + 1, (w - 1) * s + 1)
            up[:, :, ::s, ::s] = a
            a = up
        a = F.pad(a, self.pad)
        b, _, h, w = a.shape
        ho, wo = (h - self.kernel) // self.stride + 1, (w - self.kernel) // self.stride + 1
        cols = F.unfold(a, self.kernel, stride=self.stride)          # pure data movement
        acc = torch.matmul(self.weight, cols) + self.bias              # exact integer sums
        out = torch.floor(acc / (1 << WEIGHT_BITS) + 0.5)              # back to the activation grid
        return out.clamp_(-ACT_CLIP, ACT_CLIP).view(b, -1, ho, wo)


class _Relu:
    """ReLU on grid integers: exact by construction."""

    def to(self, device: torch.device) -> "_Relu":
        return self

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        return a.clamp(min=0)


class _Gelu:
    def __init__(self) -> None:
        self.table = _GELU

    def to(self, device: torch.device) -> "_Gelu":
        self.table = self.table.to(device)
        return self

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        out = self.table[(a.clamp(-GELU_RANGE, GELU_RANGE) + GELU_RANGE).long()]
        out = torch.where(a > GELU_RANGE, a, out)
        return torch.where(a < -GELU_RANGE, torch.zeros_like(a), out)


class ExactNet:
    """A stack of Conv2d / ConvTranspose2d / GELU / ReLU layers compiled to exact integer arithmetic."""

    def __init__(self, module: nn.Module) -> None:
        self.ops = [self._compile(layer) for layer in _leaves(module)]

    @staticmethod
    def _compile(layer: nn.Module):
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            return _Conv(layer)
        if isinstance(layer, nn.GELU) and layer.approximate == "none":
            return _Gelu()
        if isinstance(layer, nn.ReLU):
            return _Relu()
        raise TypeError(f"no exact integer form for layer {layer!r}")

    def to(self, device: torch.device) -> "ExactNet":
        self.ops = [op.to(device) for op in self.ops]
        return self

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            a = op(a)
        return a


def _leaves(module: nn.Module) -> Iterable[nn.Module]:
    children = list(module.children())
    if not children:
        yield module
    for child in children:
        yield from _leaves(child)

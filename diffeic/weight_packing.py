"""Int8 weights on disk: the storage format of the shipped models' large weight tensors, and its exact inverse.

A weights file (safetensors) may hold, beside ordinary tensors, *packed* ones.  A packed float tensor ``W`` of shape
``(C, ...)`` is stored as two tensors (symmetric linear quantisation per output channel, dim 0, with a zero point of
0: B. Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference",
CVPR 2018, Sec. 2.1):

* ``W.__int8__``: ``q = round(W / s)`` (int8, in [-127, 127], ties to even), same shape as ``W``;
* ``W.__scale__``: ``s`` (float32, shape ``(C,)``), ``s[c] = max|W[c]| / 127`` with its significand rounded to
  :data:`SCALE_BITS` bits; a row of zeros (or one whose largest magnitude is below :data:`TINY`) gets ``s = 1``
  and ``q = 0``.

Loading gives ``q.float() * s[c]`` (float32) in place of ``W`` (:func:`unpack`); the error is at most ``s[c] / 2``.
Because ``|q| <= 127`` (7 bits) and ``s`` has at most ``SCALE_BITS = 16`` significant bits, every product is exact in
float32: unpacking is bit-identical on every machine, whatever the order or fusion of its arithmetic, and packing an
unpacked tensor again gives the same ``q`` and ``s`` (packing is idempotent), so a model rounded in memory with
:func:`quantise_roundtrip` and then saved and packed loads back with exactly its weights (and fingerprint).

The suffixes start and end with a double underscore, a form Python reserves for its own names, so no parameter
name of a ``torch.nn.Module`` (attribute names joined by dots) ends with them.  Only floating tensors with at least
two dimensions and :data:`MIN_NUMEL` elements are packed (convolution and linear weights); biases, norms and coding
tables are stored as given.  A file without packed keys is an ordinary state dict and :func:`unpack` returns it
unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Union

import torch
from torch import Tensor

INT8_SUFFIX = ".__int8__"
SCALE_SUFFIX = ".__scale__"
#: Tensors with fewer elements are stored as given (their int8 saving would be a few hundred bytes).
MIN_NUMEL = 1024
#: Significant bits of a stored scale: 7 bits of ``q`` times these fit float32's 24, so ``q * s`` is exact.
SCALE_BITS = 16
#: A row whose largest magnitude is below this is stored as zeros: far below any trained weight, it keeps every
#: scale and every product ``q * s`` a normal float32 (subnormal products would not be exact).
TINY = 2.0 ** -100
QMAX = 127


def is_packable(tensor: Tensor, min_numel: int = MIN_NUMEL) -> bool:
    """Whether :func:`pack_int8` stores ``tensor`` as int8: floating, at least 2-D, ``min_numel`` elements or more."""
    return tensor.is_floating_point() and tensor.ndim >= 2 and tensor.numel() >= min_numel


def _scales(w: Tensor) -> Tensor:
    """Per-row scales of a float32 tensor ``w`` (see the module docstring)."""
    absmax = w.abs().reshape(w.shape[0], -1).amax(dim=1)
    mantissa, exponent = torch.frexp(absmax / QMAX)               # absmax / 127 = mantissa · 2^exponent
    scale = torch.ldexp(torch.round(mantissa * 2.0 ** SCALE_BITS) / 2.0 ** SCALE_BITS, exponent)
    return torch.where(absmax >= TINY, scale, torch.ones_like(scale)).to(torch.float32)


def _quantise(w: Tensor, scale: Tensor) -> Tensor:
    s = scale.view(-1, *([1] * (w.ndim - 1)))
    return torch.round(w / s).clamp_(-QMAX, QMAX).to(torch.int8)     # a row below TINY has s = 1: q = 0


def pack_int8(tensors: Mapping[str, Tensor], min_numel: int = MIN_NUMEL) -> Dict[str, Tensor]:
    """``tensors`` with each packable one (:func:`is_packable`) replaced by its ``.__int8__`` / ``.__scale__`` pair;
    every other tensor is kept as it is (dtype included).  ``ValueError`` for a name that already ends with a
    packed suffix (it could not be told apart when loading)."""
    out: Dict[str, Tensor] = {}
    for name, tensor in tensors.items():
        if name.endswith((INT8_SUFFIX, SCALE_SUFFIX)):
            raise ValueError(f"{name}: a tensor name may not end with {INT8_SUFFIX} or {SCALE_SUFFIX} (the int8 "
                             f"format's suffixes)")
        if not is_packable(tensor, min_numel):
            out[name] = tensor
            continue
        w = tensor.detach().to("cpu", torch.float32)
        if not torch.isfinite(w).all():
            raise ValueError(f"{name}: holds NaN or Inf values, which int8 cannot store")
        scale = _scales(w)
        out[name + INT8_SUFFIX] = _quantise(w, scale).contiguous()
        out[name + SCALE_SUFFIX] = scale.contiguous()
    return out


def unpack(tensors: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """The state dict ``tensors`` stands for: each ``.__int8__`` / ``.__scale__`` pair becomes one float32 tensor
    ``q.float() * s`` (exact, see the module docstring), every other tensor is returned as it is (so a dict without
    packed keys passes through unchanged).  ``ValueError`` naming the key for a malformed pair: an int8 part
    without its scale or the reverse, a wrong dtype, a scale of the wrong shape or not finite and positive, or a
    name that is also stored unpacked."""
    out: Dict[str, Tensor] = {}
    for key, tensor in tensors.items():
        if key.endswith(SCALE_SUFFIX):
            if key[:-len(SCALE_SUFFIX)] + INT8_SUFFIX not in tensors:
                raise ValueError(f"{key}: int8 scale without its values {key[:-len(SCALE_SUFFIX)] + INT8_SUFFIX}")
            continue
        if not key.endswith(INT8_SUFFIX):
            out[key] = tensor
            continue
        name = key[:-len(INT8_SUFFIX)]
        scale = tensors.get(name + SCALE_SUFFIX)
        if scale is None:
            raise ValueError(f"{key}: int8 values without their scale {name + SCALE_SUFFIX}")
        if tensor.dtype != torch.int8 or tensor.ndim < 1:
            raise ValueError(f"{key}: must be an int8 tensor of at least 1 dimension, got {tensor.dtype} of shape "
                             f"{tuple(tensor.shape)}")
        if scale.dtype != torch.float32 or tuple(scale.shape) != tuple(tensor.shape[:1]):
            raise ValueError(f"{name + SCALE_SUFFIX}: must be float32 of shape ({tensor.shape[0]},) (one scale per "
                             f"row of {key}), got {scale.dtype} of shape {tuple(scale.shape)}")
        if not (torch.isfinite(scale) & (scale > 0)).all():
            raise ValueError(f"{name + SCALE_SUFFIX}: scales must be finite and positive")
        if name in tensors:
            raise ValueError(f"{key}: {name} is stored both packed and unpacked")
        out[name] = tensor.to(torch.float32) * scale.view(-1, *([1] * (tensor.ndim - 1)))
    return out


def quantise_roundtrip(tensor: Tensor, min_numel: int = MIN_NUMEL) -> Tensor:
    """What ``tensor`` becomes when packed and loaded back: ``unpack(pack_int8({name: tensor}))[name]`` (float32 for a
    packable tensor, ``tensor`` itself otherwise).  Rounding a live model with it before saving makes the saved
    model load back bit-identical."""
    return unpack(pack_int8({"w": tensor}, min_numel))["w"]


def is_packed(tensors: Mapping[str, Tensor]) -> bool:
    """Whether a state dict holds packed tensors."""
    return any(k.endswith((INT8_SUFFIX, SCALE_SUFFIX)) for k in tensors)


def file_is_packed(path: Union[str, Path]) -> bool:
    """Whether a safetensors file holds packed tensors (reads only its header)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return any(k.endswith((INT8_SUFFIX, SCALE_SUFFIX)) for k in f.keys())


__all__ = ["INT8_SUFFIX", "MIN_NUMEL", "SCALE_BITS", "SCALE_SUFFIX", "file_is_packed", "is_packable", "is_packed",
           "pack_int8", "quantise_roundtrip", "unpack"]

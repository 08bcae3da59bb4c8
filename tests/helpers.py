"""Shared test helpers: hand-written 16-bit PNGs, exact photo crops, golden reference values.

Golden values live in ``tests/data/*.json`` beside this file.  They pin what the code computes today
from fixed weights and inputs; when a change is *meant* to alter them, regenerate with
``DIFFEIC_REGEN_GOLDEN=1 python -m pytest <test file>`` and say why in the commit message.
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import Dict

import numpy as np
import torch

DATA = Path(__file__).resolve().parent / "data"
REGENERATE = os.environ.get("DIFFEIC_REGEN_GOLDEN", "") not in ("", "0")


# ---------------------------------------------------------------------------------------------- images
def write_png16(path, array: np.ndarray) -> None:
    """A 16-bit PNG (gray, RGB or RGBA) written by hand — Pillow cannot write 16-bit colour.

    Rows cycle through the None, Sub and Up filters so the decoder's unfiltering is exercised.
    """
    h, w, c = array.shape
    rows = array.astype(">u2").reshape(h, w * c).view(np.uint8).reshape(h, w * c * 2)
    bpp = 2 * c
    raw = b""
    for i in range(h):
        kind = i % 3
        row = rows[i].astype(np.int32)
        if kind == 1:                              # Sub: minus the byte one pixel to the left
            row = row - np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        elif kind == 2:                            # Up: minus the byte above
            row = row - rows[i - 1].astype(np.int32)
        raw += bytes([kind]) + (row % 256).astype(np.uint8).tobytes()

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    colour_type = {1: 0, 3: 2, 4: 6}[c]
    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def rgb16_values(h=5, w=7) -> np.ndarray:
    # Spread over the full 16-bit range with non-zero low bytes, so 8-bit reading or /255 scaling fails.
    return ((np.arange(h * w * 3).reshape(h, w, 3) * 6151 + 257 * 3 + 1) % 65536).astype(np.uint16)


def photo_crop(name: str, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """An exact crop (no resampling, so no float rounding that could differ between CPUs) of a
    scikit-image photo as a float ``(3,H,W)`` tensor in [0,1]."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    crop = np.ascontiguousarray(img[top:top + height, left:left + width, :3])
    assert crop.shape == (height, width, 3), f"{name} is too small for that crop"
    return torch.from_numpy(crop).permute(2, 0, 1).float() / 255.0


# ---------------------------------------------------------------------------------------------- codec
def lfgcm_forward(codec, x: torch.Tensor, rate=None) -> dict:
    """The LFGCM's eval-mode forward pass on a ``(3,H,W)`` image, padded and guided as ``codec.compress``
    does it: ``{"y_hat", "z_hat", "z_c", "likelihoods"}`` — ŷ and ẑ are the values the coder codes."""
    from diffeic.codecs.base import padded_size

    hp, wp = padded_size(*x.shape[-2:])
    x_pad = torch.nn.functional.pad(x[None], (0, wp - x.shape[-1], 0, hp - x.shape[-2]))
    with torch.no_grad():
        return codec.lfgcm.eval()(x_pad, codec.backbone.encode(x_pad), rate=rate)


# ---------------------------------------------------------------------------------------------- goldens
def check_golden_tensors(name: str, tensors: Dict[str, torch.Tensor], rel: float = 1e-4) -> None:
    """Compare tensors with those stored in ``tests/data/<name>`` (regenerated with ``DIFFEIC_REGEN_GOLDEN=1``).

    Same shape, and ``max |got − want| ≤ rel · max |want|`` per tensor: float32 kernels differ in the last
    bits between CPUs (so floats are never hashed), while a wiring error moves values by far more.
    """
    got = {k: {"shape": list(v.shape), "values": [round(float(a), 6) for a in v.detach().flatten()]}
           for k, v in tensors.items()}
    path = DATA / name
    if REGENERATE:
        path.write_text(json.dumps(got, separators=(",", ":")) + "\n")
    want = json.loads(path.read_text())
    assert sorted(got) == sorted(want), f"{name}: tensors {sorted(got)}, golden has {sorted(want)}"
    for key, ref in want.items():
        assert got[key]["shape"] == ref["shape"], f"{name}: {key} has shape {got[key]['shape']}, golden {ref['shape']}"
        w = torch.tensor(ref["values"], dtype=torch.float64)
        g = tensors[key].detach().double().flatten().cpu()
        scale = float(w.abs().max())
        err = float((g - w).abs().max())
        assert err <= rel * scale, f"{name}: {key} deviates by {err:.3g} from the golden values (scale {scale:.3g})"


def load_golden_tensor(name: str, key: str) -> torch.Tensor:
    ref = json.loads((DATA / name).read_text())[key]
    return torch.tensor(ref["values"]).reshape(ref["shape"])

"""bpp (bits per pixel) from real files, as the official code measures it: bits of the file on disk over the image's pixels."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple, Union

from ..sizes import size_text

#: The official DiffEIC file's header: latent h, w, string count, and one length per string (5 × uint32).
OFFICIAL_HEADER_BYTES = 20


def padded_hw(height: int, width: int) -> Tuple[int, int]:
    """H and W rounded up to the multiple the DiffEIC codec (and the official code) pads to before coding."""
    from ..lfgcm import PAD_MULTIPLE      # imported here: `eval.py --help` does not pay for torch

    return -(-height // PAD_MULTIPLE) * PAD_MULTIPLE, -(-width // PAD_MULTIPLE) * PAD_MULTIPLE


def bpp(n_bytes: int, height: int, width: int) -> float:
    """Bits per pixel of ``n_bytes`` over the original ``height × width`` (the honest figure)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {size_text(height, width)}")
    return 8.0 * n_bytes / (height * width)


def bpp_padded(n_bytes: int, height: int, width: int) -> float:
    """Paper-compatible bpp: the pixel count of the 64-padded tensor (official `apply_condition_compress`)."""
    return bpp(n_bytes, *padded_hw(height, width))


def official_file_bytes(y_string_bytes: int, z_string_bytes: int) -> int:
    """Size of the official DiffEIC file for the two strings (DiffEIC code, ``utils/utils.py`` ``write_body``)."""
    return OFFICIAL_HEADER_BYTES + y_string_bytes + z_string_bytes


def bpp_official(y_string_bytes: int, z_string_bytes: int, height: int, width: int) -> float:
    """The published tables' rate: the official file (20-byte header + separate y and z strings) over the
    64-padded pixels, as the official ``apply_condition_compress`` counts it."""
    return bpp(official_file_bytes(y_string_bytes, z_string_bytes), *padded_hw(height, width))


def official_string_sizes(codec, stream: bytes) -> Tuple[int, int]:
    """``(len(y_string), len(z_string))`` of ``stream``'s latents coded as the official file codes them.

    Entropy-decodes the stream (no diffusion) and recodes its ŷ, ẑ as two rANS strings; the symbols
    are the stream's own, so only the framing differs from our single-string container.
    """
    latents = codec.decompress_latents(stream)
    y_string, z_string = codec.lfgcm.official_strings(latents["y_hat"], latents["z_hat"])
    return len(y_string), len(z_string)


def write_and_measure(path: Union[str, Path], data: bytes) -> int:
    """Write ``data`` to ``path`` atomically and return the size of the file as written (not ``len(data)``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return os.path.getsize(path)

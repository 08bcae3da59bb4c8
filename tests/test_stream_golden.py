"""A golden ``tiny`` stream: container format 1, pinned byte for byte.

The untrained tiny preset (built with its fixed seed) compresses a fixed photo crop with the default
decode settings, which are left out of the header, so the stream is a format-1 container.  Entropy coding
is integer-exact (the exact entropy-parameter path), so the bytes are the same on every machine; a change
in the container, the model fingerprint, the latents or the coder changes them.  The stored stream
(``tests/data/tiny_v1.deic``) must also stay readable by the current code.
"""
import hashlib

import torch

from helpers import DATA, REGENERATE, photo_crop

from diffeic import DiffEICCodec

STREAM = DATA / "tiny_v1.deic"
SHA256 = "0bcc81e6f273e5f6724e9bc6ae86060422d5a286204a12cd642523a982a06bc9"


def golden_photo() -> torch.Tensor:
    """48×80 (not multiples of 64: the padding and the stored size take part)."""
    return photo_crop("astronaut", 20, 170, 48, 80)


def test_tiny_stream_bytes_are_pinned(tiny_codec):
    bits = tiny_codec.compress(golden_photo())
    if REGENERATE:
        STREAM.write_bytes(bits)                    # then update SHA256 above
    assert bits == STREAM.read_bytes()
    assert hashlib.sha256(bits).hexdigest() == SHA256


def test_the_pinned_stream_is_format_1_and_decodes(tiny_codec):
    bits = STREAM.read_bytes()
    info = DiffEICCodec.inspect(bits)
    assert info["version"] == 1 and info["family"] == "diffeic"
    assert (info["height"], info["width"]) == (48, 80)
    assert info["sampler"] is None and info["steps"] is None and info["seed"] is None and info["rate"] is None
    x = tiny_codec.decompress(bits, steps=1)
    assert x.shape == (3, 48, 80) and 0 <= float(x.min()) and float(x.max()) <= 1

"""Regenerate the shipped model's golden values (tests/test_pretrained.py) — only for a deliberate change.

    python tests/data/make_golden_pretrained.py    # prints the stream hash, writes golden_tiny_trained_chelsea.png
"""
import hashlib
import os
from pathlib import Path

import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)

from diffeic import DiffEICCodec  # noqa: E402
from diffeic.codecs.registry import DEMO_MODEL  # noqa: E402
from diffeic.samples import load_photo  # noqa: E402

codec = DiffEICCodec.from_pretrained(DEMO_MODEL)
x = torch.from_numpy(load_photo("chelsea")).permute(2, 0, 1).float() / 255
bits = codec.compress(x)
print("GOLDEN_STREAM_SHA256 =", repr(hashlib.sha256(bits).hexdigest()), f"({len(bits)} bytes)")
img = (codec.decompress(bits).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
out = Path(__file__).with_name("golden_tiny_trained_chelsea.png")
Image.fromarray(img).save(out)
print("wrote", out)

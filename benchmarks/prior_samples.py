"""Unconditional samples of a trained demo prior, to look at: does the UNet make photo-like latents?

    python benchmarks/prior_samples.py --backbone runs/demo2_unet/export --preset configs/demo2_model.yaml \\
        [--count 8] [--size 128] [--steps 50] [--out benchmarks/prior_samples.png]

Draws ``--count`` latents with DDPM (``--steps`` spaced steps from pure noise, the empty-prompt context) and decodes
them with the backbone's autoencoder; writes one row of samples above one row of autoencoded training-free photos
(scikit-image's, for scale) and prints each sample's mean colour and the latent's standard deviation against the
data's (a prior whose samples have the data's spread and varied colours is at least not collapsed).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import List

import numpy as np
import torch
from PIL import Image

from diffeic.config import get_config
from diffeic.diffusion.backbone import FrozenBackbone
from diffeic.diffusion.sampling import sample
from diffeic.samples import ALL_PHOTOS, load_photo


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", required=True, help="a backbone folder (vae/, unet/, empty_prompt.safetensors)")
    parser.add_argument("--preset", required=True, help="the model YAML whose backbone architecture it is")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (multiple of 8)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/prior_samples.png")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg = get_config(args.preset)
    backbone = FrozenBackbone.from_pretrained(cfg.backbone, sd_path=args.backbone)
    ch = backbone.unet.config.in_channels
    shape = (args.count, ch, args.size // 8, args.size // 8)
    context = backbone.text_embedding

    def eps_fn(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return backbone.unet(z_t, t, context.expand(z_t.shape[0], -1, -1)).sample

    with torch.no_grad():
        z = sample(eps_fn, torch.zeros(shape), "ddpm", args.steps, torch.Generator().manual_seed(args.seed),
                   cfg.schedule, progress=True)
        images = backbone.decode(z)
        photos = []
        for name in ALL_PHOTOS[: args.count]:
            a = load_photo(name)
            top, left = (a.shape[0] - args.size) // 2, (a.shape[1] - args.size) // 2
            photos.append(torch.from_numpy(a[top:top + args.size, left:left + args.size].copy()).permute(2, 0, 1))
        photos = torch.stack(photos).float() / 255
        data_std = float(backbone.encode(photos).std())
        recon = backbone.decode(backbone.encode(photos))
    print(f"latent std: samples {float(z.std()):.3f}, photos {data_std:.3f}")
    for i, img in enumerate(images):
        print(f"sample {i}: mean RGB " + " ".join(f"{v:.2f}" for v in img.mean((1, 2)).tolist()))
    rows = [torch.cat(list(images), 2), torch.cat(list(recon), 2)]
    grid = (torch.cat(rows, 1).clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    Image.fromarray(grid).save(tmp)
    tmp.replace(out)
    print(f"wrote {out} (top: samples, bottom: autoencoded photos)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

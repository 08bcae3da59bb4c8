"""Training the ``semantic_tiny`` decoder: the noise loss of a ControlNet over the frozen tiny backbone.

The decoder (:class:`~diffeic.semantic.tiny_decoder.TinySemanticDecoder`) learns, as ControlNet does (Zhang et al.,
"Adding Conditional Control to Text-to-Image Diffusion Models", ICCV 2023), to predict the noise of a noised VAE
latent given a condition made from the image itself.  The condition of each training crop is computed on the fly,
as the encoder of Rethinking Image Compression on the Web with Generative AI would make it:

* **edges**: :func:`diffeic.bilevel.canny_edges` at the codec's resolution rule
  (:func:`diffeic.semantic.parts.edge_shape`; a crop ≤ 512 pixels keeps its own size);
* **palette**: :func:`diffeic.semantic.palette.encode_palette` (WebP, as sent) decoded and upsampled, with a grid
  whose long side is drawn from ``palette_grid`` — the crop is a piece of a photo, so its grid is the part of the
  photo's 32-cell grid it covers (a 128-pixel crop of a 256–512-pixel photo: 8–16 cells);
* **a kept region** with probability ``p_region``: a random box, its pixels exact;

and each of edges and palette is dropped with probability ``p_drop``, so every subset of parts decodes.  The loss
is ``MSE(ε, ε̂)`` at ``t ~ U{0..999}``; the randomness of a step (parts, t, ε) comes from ``(seed, batch number)``,
so a resumed run repeats an uninterrupted one.  The export (:meth:`SemanticTinyModule.export`) is a folder with
``decoder.safetensors`` (the decoder's ``trainable_state``), ``arch.yaml`` and ``run.yaml``, written atomically.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import torch
import yaml
from lightning.pytorch import LightningModule
from safetensors.torch import save_file

from ..bilevel import canny_edges
from ..codecs.folder import replace_folder
from ..codecs.semantic import tiny_backbone
from ..diffusion.backbone import FrozenBackbone
from ..semantic.palette import decode_palette, encode_palette, upsample_palette
from ..semantic.parts import edge_shape
from ..semantic.regions import KeptRegion
from ..semantic.config import TINY_BACKBONE
from ..semantic.tiny_decoder import TinySemanticDecoder, build_condition
from .backbone import warmup_cosine
from .module import seeded

Tensor = torch.Tensor

__all__ = ["SemanticTinyModule", "crop_condition", "load_tiny_backbone", "load_export", "TINY_BACKBONE"]


def load_tiny_backbone(path: Union[str, Path, None] = None) -> FrozenBackbone:
    """The frozen tiny prior (default: the shipped ``tiny-backbone``), loaded as the codec loads it
    (:func:`diffeic.codecs.semantic.tiny_backbone`)."""
    return tiny_backbone(TINY_BACKBONE if path is None else str(path))


def load_export(folder: Union[str, Path], backbone: Optional[FrozenBackbone] = None) -> TinySemanticDecoder:
    """The decoder of an export folder (:meth:`SemanticTinyModule.export`) on ``backbone`` (default: the shipped
    tiny backbone); a folder trained on another backbone (``run.yaml``'s fingerprint) raises ``ValueError``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in ("decoder.safetensors", "arch.yaml"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} is not a semantic_tiny export: no {name}")
    backbone = backbone or load_tiny_backbone()
    run = yaml.safe_load((folder / "run.yaml").read_text()) if (folder / "run.yaml").is_file() else {}
    recorded = (run or {}).get("backbone_fingerprint")
    if recorded and recorded != backbone.fingerprint():
        raise ValueError(f"{folder} was trained on backbone {recorded}, not on this one ({backbone.fingerprint()})")
    decoder = TinySemanticDecoder(backbone, yaml.safe_load((folder / "arch.yaml").read_text()))
    decoder.load_trainable_state(load_file(str(folder / "decoder.safetensors")))
    return decoder


def crop_condition(x01: Tensor, rng: random.Random, p_drop: float = 0.15, p_region: float = 0.3,
                   palette_grid: tuple = (8, 16)) -> Tensor:
    """The ``(10, H, W)`` condition of one training crop ``x01`` (3, H, W) in [0, 1] (module docstring)."""
    rgb = (x01.detach().cpu().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    h, w = rgb.shape[:2]
    edges = None
    if rng.random() >= p_drop:
        edges = canny_edges(rgb, short_side=min(edge_shape(h, w)))
    palette = None
    if rng.random() >= p_drop:
        grid = rng.randint(int(palette_grid[0]), int(palette_grid[1]))
        palette = upsample_palette(decode_palette(encode_palette(rgb, grid), h, w), h, w)
    regions = ()
    if rng.random() < p_region:
        bw, bh = rng.randint(max(1, w // 8), max(1, w // 2)), rng.randint(max(1, h // 8), max(1, h // 2))
        x0, y0 = rng.randint(0, w - bw), rng.randint(0, h - bh)
        regions = (KeptRegion((x0, y0, x0 + bw, y0 + bh), rgb[y0:y0 + bh, x0:x0 + bw].copy()),)
    return build_condition(h, w, edges, palette, regions)


class SemanticTinyModule(LightningModule):
    """Trains the control module and hint encoder of a :class:`TinySemanticDecoder` with the noise loss.

    Args:
        backbone: the frozen prior's folder (default: the shipped ``tiny-backbone``).
        arch: the decoder's architecture (default :meth:`TinySemanticDecoder.default_arch`).
        lr: AdamW learning rate; weight_decay: its weight decay.
        warmup_steps: linear warm-up; cosine: then decay to 0 at ``trainer.max_steps``.
        p_drop: probability of dropping the edges, and (independently) the palette, of a crop.
        p_region: probability of a kept region in a crop.
        palette_grid: range of the palette grid's long side, in cells, for a training crop.
        seed: base of the per-step RNG (``None``: ``seed_everything``'s value).
    """

    def __init__(self, backbone: Optional[str] = None, arch: Optional[Dict[str, Any]] = None, lr: float = 3e-4,
                 weight_decay: float = 0.0, warmup_steps: int = 100, cosine: bool = True, p_drop: float = 0.15,
                 p_region: float = 0.3, palette_grid: tuple = (8, 16), seed: Optional[int] = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not (0.0 <= p_drop <= 1.0 and 0.0 <= p_region <= 1.0):
            raise ValueError(f"p_drop and p_region are probabilities in [0, 1], got {p_drop}, {p_region}")
        if not 1 <= int(palette_grid[0]) <= int(palette_grid[1]):
            raise ValueError(f"palette_grid must be (low, high) with 1 ≤ low ≤ high, got {palette_grid}")
        self.decoder = TinySemanticDecoder(load_tiny_backbone(backbone), arch or TinySemanticDecoder.default_arch())
        self.batches_seen = 0

    def configure_optimizers(self) -> Dict[str, Any]:
        return warmup_cosine(list(self.decoder.control.parameters()) + list(self.decoder.hint.parameters()),
                             self.hparams, self.trainer)

    def step_seed(self) -> int:
        """Seed of this batch's randomness: a function of (seed, batch number) only."""
        base = self.hparams.seed if self.hparams.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        return int(np.random.SeedSequence([int(base), self.batches_seen]).generate_state(1)[0])

    def batch_loss(self, batch: Tensor, seed: int) -> Tensor:
        """The noise loss of a batch of crops, all randomness from ``seed``."""
        hp = self.hparams
        rng = random.Random(f"diffeic-semantic-{seed}")
        cond = torch.stack([crop_condition(x, rng, hp.p_drop, hp.p_region, tuple(hp.palette_grid)) for x in batch])
        with seeded(seed, self.device):
            t = torch.randint(0, 1000, (batch.shape[0],))
            noise = torch.randn(batch.shape[0], self.decoder.backbone.unet.config.in_channels,
                                batch.shape[2] // self.decoder.vae_factor, batch.shape[3] // self.decoder.vae_factor)
        return self.decoder.noise_loss(batch, cond.to(batch), t.to(self.device), noise.to(batch))

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        loss = self.batch_loss(batch, self.step_seed())
        self.batches_seen += 1
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite noise loss at step {self.global_step}; resume from the last "
                                     f"checkpoint with a lower --model.lr")
        self.log("train/loss", loss.detach(), on_step=True, batch_size=batch.shape[0])
        self.log("loss", loss.detach(), prog_bar=True, logger=False, batch_size=batch.shape[0])
        return loss

    def setup(self, stage: str) -> None:
        import warnings
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch",
                                category=UserWarning)

    # ------------------------------------------------------------------ checkpoints without the frozen prior
    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("decoder.backbone.")]:
            del state[key]
        checkpoint["diffeic_semantic"] = {"batches_seen": self.batches_seen,
                                          "backbone_fingerprint": self.decoder.backbone.fingerprint()}

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        meta = checkpoint.get("diffeic_semantic", {})
        recorded = meta.get("backbone_fingerprint")
        if recorded and recorded != self.decoder.backbone.fingerprint():
            raise ValueError(f"this checkpoint was trained on backbone {recorded}, but the model now has "
                             f"{self.decoder.backbone.fingerprint()}; pass the same --model.backbone")
        state = checkpoint["state_dict"]
        for key, value in self.state_dict().items():
            if key.startswith("decoder.backbone.") and key not in state:
                state[key] = value
        self.batches_seen = int(meta.get("batches_seen", 0))

    # ------------------------------------------------------------------ export
    def export(self, path: Union[str, Path], **metadata: Any) -> Path:
        """Write ``decoder.safetensors`` (float32 ``trainable_state``), ``arch.yaml`` and ``run.yaml`` to ``path``,
        replacing it atomically."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        state = {k: v.detach().cpu().float().contiguous() for k, v in self.decoder.trainable_state().items()}
        save_file(state, str(tmp / "decoder.safetensors"))
        (tmp / "arch.yaml").write_text(yaml.safe_dump(self.decoder.arch, sort_keys=False))
        record = {"step": int(self.global_step), "backbone_fingerprint": self.decoder.backbone.fingerprint(),
                  "backbone": str(self.hparams.backbone or "tiny-backbone (shipped)"), **metadata}
        (tmp / "run.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
        replace_folder(tmp, path)
        return path

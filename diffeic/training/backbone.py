"""Pretraining a frozen prior for a preset that has no published weights (the shipped tiny demo model).

DiffEIC keeps Stable Diffusion frozen (Li et al. 2024, §III-C); at toy width no pretrained weights
exist, so the demo model gets a prior of its own, made by two Lightning jobs that are separate from
DiffEIC's training (which never changes these weights):

``stage="vae"``   the preset's ``AutoencoderKL`` as a KL-regularised autoencoder (Rombach et al.,
                  "High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022, §3 and
                  App. G): per-image sum of squared errors on [-1, 1] + ``kl_weight`` · KL, on the posterior
                  *sample*.  Its export rescales the latent so that ``scale_factor`` (0.18215, SD's) gives unit
                  variance, as the LDM paper's rescaling does — by folding the factor into ``quant_conv`` and
                  ``post_quant_conv``, an exact reparameterisation, so the preset's config stays unchanged.
``stage="unet"``  the preset's UNet as a latent diffusion model on that VAE's latents: ε-prediction, the
                  scaled-linear 1000-step schedule, ``t ~ U{0..999}``, the preset's fixed empty-prompt context.

Each export is a backbone folder (``vae/``, ``unet/``, ``empty_prompt.safetensors``; fp16 weights) that
the next stage (``init_from``) and DiffEIC training (``--model.sd_path``) load.  The UNet stage rounds
its weights to fp16 *before* writing, and DiffEIC trains on exactly those values.
"""
from __future__ import annotations

import copy
import math
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch import LightningModule

from ..codecs.folder import replace_folder
from ..config import get_config
from ..diffusion.backbone import FrozenBackbone
from ..diffusion.patch_vae import PatchAutoencoder
from ..diffusion.sampling import add_noise, sample_timesteps, training_scheduler
from .module import seeded

Tensor = torch.Tensor
STAGES = ("vae", "unet")


def opponent_colours(chroma_weight: float) -> Tensor:
    """RGB → (luma, ``w``·red−blue, ``w``·(green − (red+blue)/2)): the space the VAE stage trains in.

    Why: on photos, the colour differences carry a small share of the squared error, and a small autoencoder
    trained in RGB first learns the luma and, for a long time, outputs the training set's mean colour (measured
    on the demo photos with colour augmentation: chroma gain 0.04 after 1,900 steps in RGB; with ``w = 3``
    a chroma correlation of 0.93 after 400).  Training in this space weighs colour errors ``w``² more; the map is
    folded into the first and last convolutions on export (:func:`fold_colour_space`), so the VAE is an RGB VAE.
    """
    w = float(chroma_weight)
    return torch.tensor([[1 / 3, 1 / 3, 1 / 3], [w / 2, 0.0, -w / 2], [-w / 4, w / 2, -w / 4]])


def vae_losses(backbone: FrozenBackbone, x01: Tensor, kl_weight: float, sample: bool = True,
               colours: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """Autoencoder objective: ``Σ(x − x̂)² / B + kl_weight · KL / B`` on [-1, 1] (LDM, §3); also the batch PSNR.

    ``sample``: decode a posterior sample (LDM) or the posterior mean.  From a random start the sample's unit
    noise drowns the low-energy colour-difference channels for a long time; decoding the mean, with the KL
    term kept as a small penalty on the latent, avoids that.  ``colours``: a 3×3 map (:func:`opponent_colours`)
    applied to input and target, so the error is measured there; the PSNR is reported in RGB.
    """
    x = x01 * 2 - 1
    if colours is not None:
        x = torch.einsum("ij,bjhw->bihw", colours.to(x), x)
    posterior = backbone.vae.encode(x).latent_dist
    x_hat = backbone.vae.decode(posterior.sample() if sample else posterior.mode()).sample
    b = x.shape[0]
    sse = (x_hat - x).pow(2).sum() / b
    kl = posterior.kl().sum() / b
    if colours is not None:
        x_hat = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(colours).to(x), x_hat)
    mse01 = F.mse_loss(((x_hat + 1) / 2).clamp(0, 1), x01)
    return {"loss": sse + kl_weight * kl, "sse": sse, "kl": kl, "psnr": -10 * torch.log10(mse01.clamp_min(1e-10))}


@torch.no_grad()
def fold_colour_space(vae: Any, colours: Tensor) -> None:
    """Turn a VAE trained on ``colours``-mapped images into an RGB VAE: ``conv_in ∘ colours`` and
    ``colours⁻¹ ∘ conv_out`` (both linear, so the result is exact up to float rounding)."""
    m = colours.to(vae.encoder.conv_in.weight)
    conv_in, conv_out = vae.encoder.conv_in, vae.decoder.conv_out
    conv_in.weight.copy_(torch.einsum("ojhw,jc->ochw", conv_in.weight, m))
    inv = torch.linalg.inv(m)
    conv_out.weight.copy_(torch.einsum("ci,ijhw->cjhw", inv, conv_out.weight))
    conv_out.bias.copy_(inv @ conv_out.bias)


def ldm_losses(backbone: FrozenBackbone, scheduler: Any, x01: Tensor, schedule: Any) -> Dict[str, Tensor]:
    """Latent diffusion objective: ``MSE(ε, ε̂(z_t, t, c_empty))`` on the scaled posterior sample."""
    with torch.no_grad():
        z0 = backbone.encode(x01, sample=True)
    t = sample_timesteps(z0.shape[0], schedule, device=z0.device)
    noise = torch.randn_like(z0)
    context = backbone.text_embedding.expand(z0.shape[0], -1, -1)
    eps_hat = backbone.unet(add_noise(z0, noise, t, scheduler), t, context).sample
    return {"loss": F.mse_loss(eps_hat, noise)}


@torch.no_grad()
def point_mass_posterior(vae: Any) -> None:
    """Make the posterior a point mass at its mean (log-variance −30, diffusers' floor).

    A VAE trained on its posterior mean never learned a variance (only the tiny KL term moved it, toward 1):
    without this the later stages' posterior samples would add noise it was never trained to ignore.
    """
    ch = vae.config.latent_channels
    vae.quant_conv.weight[ch:] = 0
    vae.quant_conv.bias[ch:] = -30.0


@torch.no_grad()
def normalise_latent_scale(backbone: FrozenBackbone, images: Tensor) -> float:
    """Rescale the VAE so ``scale_factor · mode(x)`` has unit standard deviation on ``images``; returns the factor.

    ``z' = c·z`` is folded into the encoder's ``quant_conv`` (mean rows · c, log-variance bias + 2 ln c) and
    undone by ``post_quant_conv`` (weights / c): the decoder's output for a given image is unchanged.
    """
    vae = backbone.vae
    std = float((backbone.encode(images) / backbone.scale_factor).std())
    c = 1.0 / (backbone.scale_factor * std)
    ch = vae.config.latent_channels
    vae.quant_conv.weight[:ch] *= c
    vae.quant_conv.bias[:ch] *= c
    vae.quant_conv.bias[ch:] += 2 * math.log(c)
    vae.post_quant_conv.weight /= c
    return c


def warmup_cosine(params: Iterable[torch.nn.Parameter], hparams: Any, trainer: Any) -> Dict[str, Any]:
    """AdamW (``hparams.lr``, ``hparams.weight_decay``) with a linear warm-up over ``hparams.warmup_steps`` and, when
    ``hparams.cosine``, a cosine decay to zero at ``trainer.max_steps``: Lightning's optimiser configuration."""
    opt = torch.optim.AdamW(params, lr=hparams.lr, weight_decay=hparams.weight_decay)
    warm = max(1, int(hparams.warmup_steps))
    total = int(trainer.max_steps) if hparams.cosine and trainer is not None else -1
    if hparams.cosine and total <= warm:
        raise ValueError(f"cosine decay needs trainer.max_steps > warmup_steps ({warm}), got {total}")

    def factor(s: int) -> float:
        ramp = min(1.0, (s + 1) / warm)
        return ramp if total < 0 else ramp * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class BackbonePretrainModule(LightningModule):
    """One stage of prior pretraining (see the module docstring).

    Args:
        preset: the preset (name or YAML) whose ``backbone.vae``/``backbone.unet`` architecture is trained.
        stage: ``"vae"`` or ``"unet"``.
        init_from: a backbone folder to start from (the VAE stage's export, for ``stage="unet"``).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        kl_weight: weight of the KL term (VAE stage).
        warmup_steps: linear learning-rate warm-up.
        chroma_weight: the VAE stage trains in :func:`opponent_colours` with this colour weight (``None``: in RGB).
        sample_posterior: the VAE stage decodes a posterior sample (LDM) or, with ``False``, its mean
            (:func:`vae_losses`).
        cosine: after the warm-up, decay the learning rate to 0 at the trainer's ``max_steps`` (half a cosine);
            a short run gains most of its last decibels there.
        seed: base of the per-step RNG (``None``: ``seed_everything``'s value).
    """

    def __init__(self, preset: str = "tiny", stage: str = "vae", init_from: Optional[str] = None, lr: float = 1e-3,
                 weight_decay: float = 0.0, kl_weight: float = 1e-6, warmup_steps: int = 100,
                 sample_posterior: bool = True, chroma_weight: Optional[float] = None, cosine: bool = False,
                 seed: Optional[int] = None) -> None:
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
        if stage == "unet" and not init_from:
            raise ValueError("the unet stage needs init_from: the backbone folder exported by the vae stage")
        self.save_hyperparameters()
        self.config = get_config(preset)
        if init_from:
            self.backbone = FrozenBackbone.from_pretrained(self.config.backbone, sd_path=str(init_from))
        else:
            self.backbone = FrozenBackbone.from_config(self.config.backbone, seed=self.config.init_seed + 1)
        self.trained = self.backbone.vae if stage == "vae" else self.backbone.unet
        self.trained.requires_grad_(True)
        self.scheduler = training_scheduler(self.config.schedule)
        self.batches_seen = 0

    def train(self, mode: bool = True) -> "BackbonePretrainModule":
        super().train(mode)
        self.trained.train(mode)         # FrozenBackbone pins itself to eval mode; the part being trained follows
        return self

    def configure_optimizers(self) -> Dict[str, Any]:
        return warmup_cosine(self.trained.parameters(), self.hparams, self.trainer)

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        base = self.hparams.seed if self.hparams.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        # Per-step RNG from (seed, batch number) only, so a resumed run repeats an uninterrupted one.
        step_seed = int(np.random.SeedSequence([int(base), self.batches_seen]).generate_state(1)[0])
        with seeded(step_seed, self.device):
            if self.hparams.stage == "vae":
                losses = vae_losses(self.backbone, batch, self.hparams.kl_weight,
                                    self.hparams.get("sample_posterior", True), self._colours())
            else:
                losses = ldm_losses(self.backbone, self.scheduler, batch, self.config.schedule)
        self.batches_seen += 1
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(f"non-finite {self.hparams.stage} loss at step {self.global_step}; "
                                     f"resume from the last checkpoint with a lower --model.lr")
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, on_step=True, batch_size=batch.shape[0])
        self.log("loss", losses["loss"].detach(), prog_bar=True, logger=False, batch_size=batch.shape[0])
        return losses["loss"]

    def on_train_start(self) -> None:
        # A block-transform autoencoder starts from the principal directions of the training blocks; a resumed
        # run (batches_seen > 0) restored its weights already.
        if self.hparams.stage == "vae" and isinstance(self.trained, PatchAutoencoder) and self.batches_seen == 0:
            self.trained.fit_blocks(self._training_crops(128).to(self.device) * 2 - 1)

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["diffeic_backbone"] = {"batches_seen": self.batches_seen}

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        self.batches_seen = int(checkpoint.get("diffeic_backbone", {}).get("batches_seen", 0))

    # ------------------------------------------------------------------ export
    def export(self, path: Union[str, Path], **metadata: Any) -> Path:
        """Write a backbone folder (fp16 weights) atomically; the VAE stage normalises the latent scale first."""
        backbone = copy.deepcopy(self.backbone).cpu().float()
        if self.hparams.stage == "vae" and not isinstance(backbone.vae, PatchAutoencoder):
            # PatchAutoencoder needs none of this: it trains in RGB, is deterministic and fixes its scale when fitted.
            if self._colours() is not None:
                fold_colour_space(backbone.vae, self._colours())
            if not self.hparams.get("sample_posterior", True):
                point_mass_posterior(backbone.vae)
            normalise_latent_scale(backbone, self._training_crops(32))
        backbone.half()
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        backbone.save_pretrained(tmp)
        record = {"stage": self.hparams.stage, "step": int(self.global_step), "preset": str(self.hparams.preset),
                  "init_from": self.hparams.init_from, **metadata}
        (tmp / "run.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
        replace_folder(tmp, path)
        return path

    def _colours(self) -> Optional[Tensor]:
        w = self.hparams.get("chroma_weight")
        return None if w is None or self.hparams.stage != "vae" else opponent_colours(w)

    def _training_crops(self, count: int) -> Tensor:
        """The training set's first ``count`` sample keys (fixed crops): for fitting the block transform (128) and
        measuring the latent scale (32)."""
        data = self.trainer.datamodule.train_set
        return torch.stack([data[k] for k in range(count)])


__all__ = ["BackbonePretrainModule", "vae_losses", "opponent_colours", "fold_colour_space", "ldm_losses", "normalise_latent_scale", "point_mass_posterior",
           "STAGES"]

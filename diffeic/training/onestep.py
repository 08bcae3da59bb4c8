"""Training the one-step decoder: a stage of its own, after DiffEIC stage 2.

    python train.py fit --config configs/tiny_onestep.yaml --model.init_from runs/tiny/export

Starts from a trained DiffEIC checkpoint folder (``init_from``).  What is trained: a copy of its control
module, used once at t* (:class:`~diffeic.diffusion.onestep.OneStepDecoder`).  What stays frozen:

* the LFGCM — so the one-step decoder reads the *same* bitstreams as the 50-step decoder (one encoder, two
  decoders, unchanged rate and model fingerprint) and the rate–distortion trade-off set by λ in stage 2 is
  not disturbed by a distortion-only objective (fine-tuning it, as StableCodec does, would need the rate term
  back and would make a new model);
* the original control module (the multi-step samplers keep using it) and the SD VAE/UNet.

One step (``one_step_losses``)::

    z    = 0.18215 · VAE posterior mode of x                   (target latent; frozen)
    z_c  = LFGCM(x, z) in eval mode (hard rounding, as coded)   (frozen, no grad)
    ẑ_0  = OneStepDecoder(z_c);   x̂ = VAE.decode(ẑ_0)          (grads through the frozen UNet and VAE decoder)
    loss = w_lat·MSE(ẑ_0, z) + w_mse·MSE(x̂, x) + w_p·perceptual(x̂, x)
           [+ w_adv·hinge-GAN(x̂)] [+ w_distill·MSE(ẑ_0, z_0 of the multi-step teacher)]

The perceptual term is LPIPS or DISTS when their backbone weights are present, else 1 − MS-SSIM
(:func:`diffeic.netweights.perceptual_loss`; the name used is logged).  The VAE decoder runs under
gradient checkpointing (``vae_checkpointing``) and the control/UNet blocks optionally too
(``gradient_checkpointing``), so the sd21 preset trains at batch ≥ 4 at 512² on one 80 GB GPU.  The divergence
guard, exact resume and per-step seeding are those of :class:`~diffeic.training.module.DiffEICModule`.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..codecs.diffeic import DiffEICCodec
from ..diffusion.decoder import controlled_eps_fn, denoise
from ..diffusion.onestep import OneStepConfig, OneStepDecoder
from .module import DiffEICModule, batch_rate
from ..netweights import perceptual_loss

Tensor = torch.Tensor


class PatchDiscriminator(nn.Sequential):
    """A small PatchGAN (pix2pix) critic on images in [0, 1], for the optional adversarial term."""

    def __init__(self, width: int = 64) -> None:
        act = nn.LeakyReLU(0.2)
        super().__init__(
            nn.Conv2d(3, width, 4, 2, 1), act,
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.GroupNorm(min(32, 2 * width), 2 * width), act,
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.GroupNorm(min(32, 4 * width), 4 * width), act,
            nn.Conv2d(4 * width, 1, 3, 1, 1),
        )

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return super().forward(x * 2 - 1)


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


def decode_with_grad(codec: DiffEICCodec, z0: Tensor) -> Tensor:
    """``VAE.decode(z_0 / 0.18215)`` mapped to [0, 1], without ``backbone.decode``'s clamp (it kills gradients)."""
    backbone = codec.backbone
    return (backbone.vae.decode(z0 / backbone.scale_factor).sample + 1) / 2


def one_step_losses(codec: DiffEICCodec, decoder: OneStepDecoder, x: Tensor, *, latent_weight: float = 1.0,
                    mse_weight: float = 1.0, perceptual=None, perceptual_weight: float = 1.0,
                    discriminator: Optional[nn.Module] = None, adv_weight: float = 0.0, distill_weight: float = 0.0,
                    teacher_sampler: str = "ddpm", teacher_steps: int = 50,
                    rate: Optional[float] = None) -> Dict[str, Tensor]:
    """All loss terms of one-step training for a batch ``x`` (B,3,H,W) in [0,1], H and W multiples of 64.

    The one definition of the objective (the trainer and the benchmarks call it).  Random draws (noised
    input, teacher noise, a variable-rate codec's q when ``rate`` is None) come from the global RNG, which
    the trainer seeds per step; a variable-rate batch's q is returned as ``rate``.
    """
    b = x.shape[0]
    q = batch_rate(codec, rate)
    with torch.no_grad(), _eval_mode(codec.lfgcm):
        z_target = codec.backbone.encode(x)
        out = codec.lfgcm(x, z_target, rate=q)
        z_c = out["z_c"]
        bits = sum(-torch.log2(lik.float()).sum() for lik in out["likelihoods"].values())
    z0_hat = decoder.predict(controlled_eps_fn(codec.backbone, decoder.control, z_c), z_c)
    x_hat = decode_with_grad(codec, z0_hat).float()
    losses = {"l_latent": F.mse_loss(z0_hat, z_target.float()), "l_mse": F.mse_loss(x_hat, x.float())}
    losses["l_perceptual"] = perceptual(x_hat, x) if perceptual is not None else x_hat.new_zeros(())
    loss = latent_weight * losses["l_latent"] + mse_weight * losses["l_mse"] \
        + perceptual_weight * losses["l_perceptual"]
    if distill_weight > 0:
        with torch.no_grad():
            z_teacher = denoise(codec.backbone, codec.control, z_c, teacher_sampler, teacher_steps,
                                schedule=codec.config.schedule, fewstep_start=codec.config.sampler.fewstep_start)
        losses["l_distill"] = F.mse_loss(z0_hat, z_teacher.float())
        loss = loss + distill_weight * losses["l_distill"]
    if discriminator is not None and adv_weight > 0:
        # One backward for generator and critic (the trainer's guard and DDP need one): the generator term sees
        # the critic through detached weights, the critic term sees x̂ detached, so each gets only its own gradient.
        frozen = {k: v.detach() for k, v in discriminator.named_parameters()}
        g_adv = -torch.func.functional_call(discriminator, frozen, (x_hat,)).mean()
        d_loss = F.relu(1 - discriminator(x)).mean() + F.relu(1 + discriminator(x_hat.detach())).mean()
        losses.update(l_adv=g_adv, l_disc=d_loss)
        loss = loss + adv_weight * g_adv + d_loss
    losses["loss"] = loss
    losses["bpp"] = bits / (b * x.shape[-2] * x.shape[-1])       # rate of the frozen encoder (logged only)
    losses["aux"] = x_hat.new_zeros(())
    if q is not None:
        losses["rate"] = torch.tensor(q)
    return losses


def base_lmbda(init_from: str) -> Any:
    """The λ (or variable-rate range) the ``init_from`` checkpoint records: the one-step export codes with the same
    encoder, so it records the same; ``None`` for a preset or a folder that records none."""
    from ..codecs.folder import CONFIG_FILE, read_meta
    from ..codecs.registry import pretrained_folder

    folder = pretrained_folder(str(init_from)) or Path(init_from)
    return read_meta(folder).get("lmbda") if (folder / CONFIG_FILE).is_file() else None


def load_base(init_from: str, sd_path: Optional[str] = None) -> DiffEICCodec:
    """The DiffEIC model to extend: a checkpoint folder or shipped name, else a preset (untrained: tests only)."""
    from ..config import PRESETS
    from ..codecs.registry import pretrained_folder

    if Path(init_from).is_dir() or pretrained_folder(str(init_from)) is not None or str(init_from) not in PRESETS:
        return DiffEICCodec.from_pretrained(init_from, sd_path=sd_path)      # names a missing folder clearly
    return DiffEICCodec.from_config(init_from)


class OneStepModule(DiffEICModule):
    """Trains a one-step decoder on top of a trained DiffEIC checkpoint (see the module docstring).

    Args:
        init_from: the trained DiffEIC checkpoint folder (a preset name builds an untrained codec: tests only).
        sd_path: SD2.1-base weights for ``sd21`` checkpoints.
        lr: AdamW learning rate of the one-step control module (and of the critic).
        weight_decay: AdamW weight decay.
        timestep, input, prediction: the :class:`~diffeic.diffusion.onestep.OneStepConfig` to train.
        latent_weight, mse_weight: weights of MSE(ẑ_0, z) and of the pixel MSE(x̂, x) (x in [0, 1]).
        perceptual: ``auto`` (LPIPS, else DISTS, else 1 − MS-SSIM), ``lpips``, ``dists``, ``ms_ssim`` or ``none``.
        perceptual_weight: its weight.
        adv_weight: weight of the hinge-GAN generator term (0: no critic is built).
        disc_width: width of the PatchGAN critic.
        distill_weight: weight of MSE(ẑ_0, teacher ẑ_0); the teacher is the checkpoint's own multi-step decoder.
        teacher_sampler, teacher_steps: the teacher's sampler (the paper's ``ddpm``, 50 steps).
        gradient_checkpointing: recompute the control and frozen UNet blocks in backward.
        vae_checkpointing: recompute the frozen VAE decoder's blocks in backward (needed for sd21 at 512²).
        max_consecutive_skips, seed: as in :class:`DiffEICModule`.
        val_sampler, val_steps: the validation decode (real bitstreams, one step).
    """

    def __init__(self, init_from: str = "tiny", sd_path: Optional[str] = None, lr: float = 5e-5,
                 weight_decay: float = 0.01, timestep: int = 299, input: str = "content", prediction: str = "eps",
                 latent_weight: float = 1.0, mse_weight: float = 1.0, perceptual: str = "auto",
                 perceptual_weight: float = 1.0, adv_weight: float = 0.0, disc_width: int = 64,
                 distill_weight: float = 0.0, teacher_sampler: str = "ddpm", teacher_steps: int = 50,
                 gradient_checkpointing: bool = False, vae_checkpointing: bool = True,
                 max_consecutive_skips: int = 5, seed: Optional[int] = None, val_sampler: str = "onestep",
                 val_steps: int = 1) -> None:
        super(DiffEICModule, self).__init__()   # skip DiffEICModule.__init__ (it builds the stage-1/2 model)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.codec = load_base(init_from, sd_path)
        self.base_trained = self.codec.is_trained
        self.codec.is_trained = False       # lets the not-yet-trained one-step decoder run validation decodes
        self.codec.requires_grad_(False)
        cfg = OneStepConfig(timestep=timestep, input=input, prediction=prediction)
        control = copy.deepcopy(self.codec.control).requires_grad_(True)
        control.gradient_checkpointing = bool(gradient_checkpointing)
        self.codec.onestep = OneStepDecoder(control, cfg, self.codec.config.schedule, trained=False)
        if vae_checkpointing:
            self.codec.backbone.vae.enable_gradient_checkpointing()
        self.perceptual_name, perceptual_fn = perceptual_loss(perceptual)
        self.__dict__["_perceptual"] = perceptual_fn     # frozen metric network: not a parameter, not checkpointed
        self.discriminator = PatchDiscriminator(disc_width) if adv_weight > 0 else None
        self.batches_seen = self.skipped_total = self.consecutive_skips = 0
        self._last_step_time: Optional[float] = None

    # ------------------------------------------------------------------ optimisation
    def trainable_parameters(self) -> List[nn.Parameter]:
        params = list(self.codec.onestep.parameters())
        if self.discriminator is not None:
            params += list(self.discriminator.parameters())
        trainable = {id(p) for p in self.parameters() if p.requires_grad}
        if trainable != {id(p) for p in params}:
            raise RuntimeError("trainable parameters outside the one-step decoder and critic (is the codec frozen?)")
        return params

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        return torch.optim.AdamW(self.trainable_parameters(), lr=hp.lr, weight_decay=hp.weight_decay,
                                 betas=(0.5, 0.999) if self.discriminator is not None else (0.9, 0.999))

    def compute_losses(self, x: Tensor, t: Optional[Tensor] = None,
                       noise: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """All loss terms for a batch (:func:`one_step_losses`; ``t``/``noise`` are not used by this stage)."""
        hp = self.hparams
        return one_step_losses(self.codec, self.codec.onestep, x, latent_weight=hp.latent_weight,
                               mse_weight=hp.mse_weight, perceptual=self._perceptual,
                               perceptual_weight=hp.perceptual_weight, discriminator=self.discriminator,
                               adv_weight=hp.adv_weight, distill_weight=hp.distill_weight,
                               teacher_sampler=hp.teacher_sampler, teacher_steps=hp.teacher_steps)

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.global_rank == 0:
            warnings.warn(f"one-step training: perceptual loss = {self.perceptual_name}", UserWarning, stacklevel=1)

    # ------------------------------------------------------------------ export and checkpoints
    def export(self, path: Union[str, Path], **metadata: Any) -> Path:
        """The ``init_from`` checkpoint plus ``onestep.safetensors`` (``trained: true``), replaced atomically."""
        codec = self.codec
        trained = OneStepDecoder(copy.deepcopy(codec.onestep.control), codec.onestep.config, codec.config.schedule,
                                 trained=True)
        snapshot = DiffEICCodec(codec.config, copy.deepcopy(codec.lfgcm), codec.backbone, codec.control,
                                trained=self.base_trained, onestep=trained)
        hp = self.hparams
        training = {"lr": float(hp.lr), "perceptual": self.perceptual_name,
                    "perceptual_weight": float(hp.perceptual_weight), "latent_weight": float(hp.latent_weight),
                    "mse_weight": float(hp.mse_weight), "adv_weight": float(hp.adv_weight),
                    "distill_weight": float(hp.distill_weight)}
        meta = {"step": int(self.global_step), "init_from": str(hp.init_from), "lmbda": base_lmbda(hp.init_from),
                "onestep_training": training, **metadata}
        return snapshot.save_pretrained(path, **meta)        # atomic: diffeic.codecs.folder.write_folder

    @staticmethod
    def _excluded(key: str) -> bool:
        # Everything but the one-step decoder and critic is frozen and comes back from init_from.
        return key.startswith("codec.") and not key.startswith("codec.onestep.")


__all__ = ["OneStepModule", "PatchDiscriminator", "decode_with_grad", "one_step_losses"]

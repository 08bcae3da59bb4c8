"""The DiffEIC LightningModule: losses, optimisation, divergence guard, real-bitstream validation.

One training step ([Li2024] Eq. (13); official ``p_losses``)::

    z0    = 0.18215 · VAE posterior sample of x          (frozen, no grad; guidance, target, alignment target)
    out   = LFGCM(x, z0)                                  (noisy likelihoods, STE-rounded ŷ → z_c)
    z_t   = √ᾱ_t z0 + √(1−ᾱ_t) ε,   t ~ U{0..T−1}, ε ~ N(0, I)
    ε̂     = UNet_ctrl(z_t, t, c_empty, z_c)               (grads flow through the frozen UNet)
    loss  = 1.0·MSE(ε, ε̂) + λ·bpp + 2.0·MSE(z_c, z0);   aux = LFGCM.aux_loss()

Optimisation (official ``configure_optimizers``): AdamW(lr, wd 0.01) on the LFGCM (minus ``quantiles``) and the
control module, AdamW(1e-3, wd 0.01) on the ``quantiles``.  They are two *parameter groups* of one
AdamW, stepped with one backward of ``loss + aux``: Adam's statistics are per parameter, the aux loss
reaches only the quantiles (compressai stops its gradient elsewhere) and the main loss never
reaches them, so this is the official pair of optimisers exactly — while keeping one
``optimizer.step()`` per batch (Lightning counts ``global_step`` per optimiser step in manual
optimisation) and a single backward per forward (required by DDP).

Randomness (t, ε, the posterior sample, the rate noise) is drawn from an RNG seeded by
``(seed, batch number, rank)`` inside the step, so a resumed run repeats an uninterrupted one exactly.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule

from ..codecs.diffeic import DiffEICCodec
from ..config import RateConfig, get_config
from ..diffusion.decoder import controlled_eps_fn
from ..diffusion.sampling import add_noise, sample_timesteps, training_scheduler
from ..lfgcm import LFGCM

Tensor = torch.Tensor

#: LFGCM buffers derived from the weights (CDF tables; rebuilt by ``update``) — not checkpointed.
_DERIVED = frozenset("codec.lfgcm." + name for name in LFGCM.coding_table_names())


class TrainingDiverged(RuntimeError):
    """Raised after too many consecutive non-finite steps (huai-chang/DiffEIC issues #6, #14)."""


def build_codec(preset: str, init_from: Optional[str] = None, sd_path: Optional[str] = None,
                rate: Optional[Dict[str, Any]] = None) -> DiffEICCodec:
    """The codec to train.

    ``rate`` (``{lmbda_min, lmbda_max, levels}``, :class:`RateConfig`) replaces a variable-rate preset's
    λ range; a fixed-rate preset refuses it.

    * ``init_from`` (stage 2, [Li2024] Sec. IV-A): a checkpoint folder; weights only.  A variable-rate
      ``preset`` (``tiny_vr``, ``sd21_vr``) over a fixed-rate folder adds freshly initialised gain units.
    * otherwise ``preset`` (name or YAML): random trainable parts; for presets with pretrained frozen
      parts (``sd21``) the VAE/UNet/embedding are SD2.1-base from ``sd_path`` and the control module is
      crop-initialised from that UNet (as the official code).  A preset without published weights (``tiny``) given
      an ``sd_path`` uses that backbone folder instead of random frozen parts (the shipped demo model's
      prior, :mod:`.backbone`); the path is recorded in the model's config.
    """
    config = get_config(preset)
    if rate is not None:
        if config.lfgcm.rate is None:
            raise ValueError(f"rate={rate} needs a variable-rate preset (tiny_vr, sd21_vr), got {preset!r}")
        try:
            config.lfgcm.rate = RateConfig(**rate)
        except TypeError:
            raise ValueError(f"rate={rate}: allowed keys are lmbda_min, lmbda_max, levels") from None
    if init_from:
        codec = DiffEICCodec.from_pretrained(init_from, sd_path=sd_path)
        if config.lfgcm.rate is not None and codec.config.lfgcm.rate is None:
            codec = _with_rate_gains(codec, config.lfgcm.rate)
        elif rate is not None and codec.config.lfgcm.rate is not None and codec.config.lfgcm.rate != config.lfgcm.rate:
            codec = _with_rate_range(codec, config.lfgcm.rate)
    else:
        if sd_path and not config.backbone.pretrained:
            config.backbone.pretrained, config.backbone.sd_path = True, str(sd_path)
        codec = DiffEICCodec.from_config(config, pretrained_backbone=True, sd_path=sd_path)
    codec.is_trained = False           # set on export
    return codec


def _lfgcm_with_rate(codec: DiffEICCodec, rate: RateConfig) -> Tuple[Any, LFGCM]:
    """``(config, LFGCM)`` for ``codec`` over the λ range ``rate``: every weight but the gain units copied."""
    cfg = codec.config.replace(lfgcm=dataclasses.replace(codec.config.lfgcm, rate=rate))
    lfgcm = LFGCM(cfg.lfgcm)
    state = {k: v for k, v in codec.lfgcm.state_dict().items() if not k.startswith("rate_gains.")}
    missing, unexpected = lfgcm.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("rate_gains.") for k in missing):
        raise ValueError(f"cannot set rate gains: the checkpoint's LFGCM does not match (missing {missing}, "
                         f"unexpected {unexpected})")
    return cfg, lfgcm


def _with_lfgcm(codec: DiffEICCodec, cfg: Any, lfgcm: LFGCM) -> DiffEICCodec:
    out = DiffEICCodec(cfg, lfgcm.to(codec.device), codec.backbone, codec.control, trained=codec.is_trained)
    out.eval()
    return out


def _with_rate_range(codec: DiffEICCodec, rate: RateConfig) -> DiffEICCodec:
    """The variable-rate ``codec`` over another λ range: each new level's gains are the old model's at that λ
    (its own log-linear interpolation), so training continues from the same codec; the new range must lie inside
    the old one (gains are not extrapolated)."""
    old = codec.lfgcm.rate_gains
    lo, hi = old.cfg.lmbda_min, old.cfg.lmbda_max
    if not lo <= rate.lmbda_min < rate.lmbda_max <= hi:
        raise ValueError(f"rate λ ∈ [{rate.lmbda_min:g}, {rate.lmbda_max:g}]: must lie inside the checkpoint's "
                         f"[{lo:g}, {hi:g}] (its gains are interpolated at the new levels, not extrapolated)")
    cfg, lfgcm = _lfgcm_with_rate(codec, rate)
    new_lmbda = torch.tensor([lfgcm.rate_gains.lmbda(q) for q in lfgcm.rate_gains.levels()], dtype=torch.float64)
    old_q = torch.log2(hi / new_lmbda).clamp(old.q_min, old.q_max).float()
    with torch.no_grad():
        lfgcm.rate_gains.log_gain.copy_(old.gain(old_q).log()[:, :, 0, 0])
        lfgcm.rate_gains.log_inverse_gain.copy_(old.inverse_gain(old_q).log()[:, :, 0, 0])
    return _with_lfgcm(codec, cfg, lfgcm)


def _with_rate_gains(codec: DiffEICCodec, rate: RateConfig) -> DiffEICCodec:
    """The fixed-rate ``codec`` made variable-rate: same weights, new gain units (stage 2 from stage 1)."""
    cfg, lfgcm = _lfgcm_with_rate(codec, rate)
    cfg.name = codec.config.name + "_vr"
    return _with_lfgcm(codec, cfg, lfgcm)


@contextlib.contextmanager
def seeded(seed: int, device: Optional[torch.device] = None) -> Iterator[None]:
    """Run a block on a private RNG state seeded with ``seed``; the global RNG is left untouched."""
    cuda = device is not None and device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.manual_seed(seed)
        yield


def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Float32 inside, whatever autocast the trainer's precision (``bf16-mixed``) switched on outside."""
    return torch.autocast(device_type=device.type, enabled=False)


def guide_mse(z_c: Tensor, z0: Tensor, channel_weights: Optional[Sequence[float]] = None) -> Tensor:
    """The space-alignment loss MSE(z_c, z0) ([Li2024] Eq. (13), L_sa), optionally weighted per latent channel.

    The weights are normalised to mean 1, so the term keeps its scale; ``None`` is the paper's plain MSE.  They
    move the rate–distortion trade-off between channels: the demo latent's two chroma channels are dropped at
    the lowest rates by the plain MSE, which leaves the picture grey.
    """
    if channel_weights is None:
        return F.mse_loss(z_c, z0)
    w = _normalised_weights(channel_weights, z_c.shape[1]).to(z_c)
    return (((z_c - z0) ** 2).mean(dim=(0, 2, 3)) * w).mean()


def _normalised_weights(channel_weights: Sequence[float], channels: int) -> Tensor:
    """One positive weight per latent channel, as float64 scaled to mean 1 (``ValueError`` naming the problem)."""
    w = torch.as_tensor(channel_weights, dtype=torch.float64)
    if w.shape != (channels,) or not bool(torch.all(w > 0)):
        raise ValueError(f"guide_channel_weights: need {channels} positive weights (one per latent channel), "
                         f"got {list(channel_weights)}")
    return w / w.mean()


@torch.no_grad()
def scale_rate_gains(lfgcm: LFGCM, channel_weights: Sequence[float]) -> None:
    """Multiply the rate gains of each latent channel's y channels by √w (w normalised to mean 1), every level.

    For a weighted MSE the high-rate optimal quantiser step of a component goes as 1/√w, and a gain g divides the
    step by g.  Only a variable-rate LFGCM with linear shortcuts has y channels that belong to one latent channel:
    y's channels 4c … 4c+3 carry latent channel c's 2×2 block (``LFGCM._start_as_block_quantiser``).
    """
    if lfgcm.rate_gains is None or not lfgcm.cfg.linear_paths:
        raise ValueError("scaling rate gains per latent channel needs a variable-rate LFGCM with linear_paths")
    w = _normalised_weights(channel_weights, lfgcm.cfg.latent_ch)
    log_scale = (0.5 * torch.log(w)).repeat_interleave(4).float()
    gains = lfgcm.rate_gains
    gains.log_gain[:, :log_scale.numel()] += log_scale
    gains.log_inverse_gain[:, :log_scale.numel()] -= log_scale


def batch_rate(codec: DiffEICCodec, rate: Optional[float] = None) -> Optional[float]:
    """The rate q of a training batch: ``rate``, else (variable-rate codec) uniform over the model's range.

    A fixed-rate codec gets ``rate`` back unchanged (None, or a value its LFGCM refuses clearly).
    """
    if codec.rate_range is None or rate is not None:
        return rate
    q_min, q_max = codec.rate_range
    return float(q_min + (q_max - q_min) * torch.rand(()))


def training_losses(codec: DiffEICCodec, noise_scheduler: Any, x: Tensor, lmbda: float,
                    l_simple_weight: float = 1.0, l_guide_weight: float = 2.0, t: Optional[Tensor] = None,
                    noise: Optional[Tensor] = None, rate: Optional[float] = None,
                    t_high: Optional[int] = None,
                    guide_channel_weights: Optional[Sequence[float]] = None) -> Dict[str, Tensor]:
    """All loss terms for a batch ``x`` (B,3,H,W) in [0,1] ([Li2024] Eq. (13)); ``t``/``noise`` may be fixed.

    The one definition of the objective: the trainer and ``benchmarks/bench_train.py`` both call it.
    Precision: only the frozen UNet with the control module follows the trainer's autocast (bf16 under
    ``bf16-mixed``); the VAE target, the LFGCM (entropy model, ŷ, z_c), the rate and every loss term run
    in float32 as in the paper, so the rate estimate is the coder's and the targets are not rounded to bf16.
    A variable-rate codec ignores ``lmbda``: the batch gets one rate q (``rate``, else drawn uniformly
    from the model's range) and the paper's loss with λ = λ_max·2^-q; q is returned as ``rate``.
    """
    b, _, h, w = x.shape
    x = x.float()
    extra: Dict[str, Tensor] = {}
    q = batch_rate(codec, rate)
    if codec.rate_range is not None:
        lmbda = codec.lfgcm.rate_gains.lmbda(q)
        extra["rate"] = torch.tensor(q)
    with _autocast_off(x.device):
        with torch.no_grad():
            z0 = codec.backbone.encode(x, sample=True)  # posterior *sample* in training (official ``get_input``)
        out = codec.lfgcm(x, z0, rate=q)
        z_c = out["z_c"]
        if t is None:
            t = sample_timesteps(b, codec.config.schedule, device=x.device, high=t_high)
        if noise is None:
            noise = torch.randn_like(z0)
        z_t = add_noise(z0, noise, t, noise_scheduler)
    eps_hat = controlled_eps_fn(codec.backbone, codec.control, z_c)(z_t, t.to(x.device))
    with _autocast_off(x.device):
        l_ne = F.mse_loss(eps_hat.float(), noise.float())
        # Noisy likelihoods (training mode), bits over the crop's pixels ([Li2024] Eq. (13), L_rate).
        bits = sum(-torch.log2(lik.float()).sum() for lik in out["likelihoods"].values())
        bpp = bits / (b * h * w)
        l_sa = guide_mse(z_c.float(), z0.float(), guide_channel_weights)
        loss = l_simple_weight * l_ne + lmbda * bpp + l_guide_weight * l_sa
        # Latent magnitudes are logged because a hyper-latent that grows without bound (its rate is capped by the
        # likelihood floor) is the first sign of a diverging run, long before the coder sees absurd symbols.
        return {"loss": loss, "l_ne": l_ne, "bpp": bpp, "l_sa": l_sa, "aux": codec.lfgcm.aux_loss(),
                "z_absmax": out["z_hat"].detach().abs().max(), "y_absmax": out["y_hat"].detach().abs().max(), **extra}


class DiffEICModule(LightningModule):
    """Trains the LFGCM + control module of a :class:`~diffeic.DiffEICCodec` ([Li2024] Sec. IV-A).

    Args:
        preset: preset name (``tiny``, ``sd21``) or a model YAML (ignored with ``init_from``).
        init_from: a checkpoint folder (``save_pretrained`` / the export callback) to start from,
            weights only with a fresh optimiser (stage 2, [Li2024] Sec. IV-A).
        sd_path: SD2.1-base weights (hub id, diffusers folder or single file) for ``sd21``.
        lmbda: rate weight λ (``l_bpp_weight``; 1, 2, 4, 8, 16 in the paper).  Variable-rate models
            (``tiny_vr``, ``sd21_vr``) draw λ per batch from their ``lfgcm.rate`` range instead.
        rate: a variable-rate preset's λ range, ``{lmbda_min, lmbda_max, levels}`` (default: the
            preset's, λ ∈ [1, 16] at 5 levels).
        lr: main learning rate (1e-4 stage 1, 2e-5 stage 2).
        aux_lr: learning rate of the entropy bottleneck's ``quantiles`` (1e-3).
        weight_decay: AdamW weight decay of both groups (0.01, torch default, as the official code).
        l_simple_weight: weight of the noise-estimation MSE (1.0).
        l_guide_weight: weight of the space-alignment MSE(z_c, z0) (2.0).
        gradient_checkpointing: recompute the control branch and the frozen UNet blocks in backward
            (``ControlModule.gradient_checkpointing``; saves memory at 512², as the official code).
        max_consecutive_skips: stop with :class:`TrainingDiverged` after this many non-finite steps in a row.
        val_steps: sampler steps of the real-bitstream validation decode.
        val_sampler: sampler of the validation decode (``None``: the model's default).
        timestep_high: train on ``t < timestep_high`` only (``None``: all T timesteps, the paper's).  RDEIC
            ([Li2025] in :mod:`diffeic.diffusion.sampling`) trains its control for the timesteps its few-step
            decoder visits, ``fewstep_start + 1``; a model whose default decode starts there spends no capacity on
            the others.
        seed: base of the per-step RNG; ``None`` uses ``seed_everything``'s value (``PL_GLOBAL_SEED``).
        guide_channel_weights: one weight per latent channel for the space-alignment MSE (:func:`guide_mse`;
            ``None``: the paper's plain MSE).
        guide_weights_set_gains: start the rate gains at what those weights ask for (:func:`scale_rate_gains`):
            the gains learn too slowly at stage-2 learning rates to move there themselves.
    """

    def __init__(self, preset: str = "tiny", init_from: Optional[str] = None, sd_path: Optional[str] = None,
                 lmbda: float = 1.0, rate: Optional[Dict[str, Any]] = None, lr: float = 1e-4, aux_lr: float = 1e-3, weight_decay: float = 0.01,
                 l_simple_weight: float = 1.0, l_guide_weight: float = 2.0,
                 gradient_checkpointing: bool = False, max_consecutive_skips: int = 5, val_steps: int = 4, val_sampler: Optional[str] = None,
                 seed: Optional[int] = None, timestep_high: Optional[int] = None,
                 guide_channel_weights: Optional[List[float]] = None, guide_weights_set_gains: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False     # needed to skip non-finite steps (huai-chang/DiffEIC issues #6, #14)
        self.codec = build_codec(preset, init_from, sd_path, rate)
        T = self.codec.config.schedule.num_train_timesteps
        if timestep_high is not None and not (isinstance(timestep_high, int) and 1 <= timestep_high <= T):
            raise ValueError(f"timestep_high={timestep_high!r}: must be an integer in [1, {T}] (the schedule's "
                             f"timesteps), or null for all")
        # Codecs are built in eval mode, and Lightning (>= 2.2) keeps each submodule's mode: without this the
        # LFGCM would train on hard-rounded likelihoods, whose rate has no gradient through y or z, and its
        # latents would grow without bound (the frozen backbone keeps itself in eval mode).
        self.codec.train()
        if self.codec.rate_range is not None and lmbda != 1.0:
            raise ValueError(f"lmbda={lmbda} given for a variable-rate model, which draws λ per batch from "
                             f"[lmbda_min, lmbda_max] of its config (lfgcm.rate); leave lmbda unset")
        self.codec.control.gradient_checkpointing = bool(gradient_checkpointing)
        if guide_weights_set_gains:
            if guide_channel_weights is None:
                raise ValueError("guide_weights_set_gains needs guide_channel_weights")
            scale_rate_gains(self.codec.lfgcm, guide_channel_weights)
        self.noise_scheduler = training_scheduler(self.codec.config.schedule)
        # Guard/RNG counters; saved in the checkpoint (on_save_checkpoint) so a resume continues them.
        self.batches_seen = 0
        self.skipped_total = 0
        self.consecutive_skips = 0
        self._last_step_time: Optional[float] = None

    # ------------------------------------------------------------------ parameters
    def parameter_groups(self) -> Tuple[List[torch.nn.Parameter], List[torch.nn.Parameter]]:
        """``(main, aux)``: LFGCM except ``*.quantiles`` + control module; the ``quantiles``."""
        main = [p for n, p in self.codec.lfgcm.named_parameters() if not n.endswith(".quantiles")]
        main += list(self.codec.control.parameters())
        aux = [p for n, p in self.codec.lfgcm.named_parameters() if n.endswith(".quantiles")]
        trainable = {id(p) for p in self.parameters() if p.requires_grad}
        if trainable != {id(p) for p in main + aux}:    # the frozen SD parts must stay out
            raise RuntimeError("trainable parameters outside the LFGCM/control module (is the backbone frozen?)")
        return main, aux

    def configure_optimizers(self) -> torch.optim.Optimizer:
        main, aux = self.parameter_groups()
        hp = self.hparams
        return torch.optim.AdamW([
            {"params": main, "lr": hp.lr, "weight_decay": hp.weight_decay, "name": "main"},
            {"params": aux, "lr": hp.aux_lr, "weight_decay": hp.weight_decay, "name": "aux"},
        ])

    # ------------------------------------------------------------------ losses
    def compute_losses(self, x: Tensor, t: Optional[Tensor] = None,
                       noise: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """All loss terms for a batch ``x`` (B,3,H,W) in [0,1] (:func:`training_losses`)."""
        hp = self.hparams
        return training_losses(self.codec, self.noise_scheduler, x, hp.lmbda, hp.l_simple_weight,
                               hp.l_guide_weight, t, noise, t_high=hp.timestep_high,
                               guide_channel_weights=hp.guide_channel_weights)

    def step_seed(self) -> int:
        """Seed of this batch's randomness: a function of (seed, batch number, rank) only."""
        base = self.hparams.seed if self.hparams.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        rank = self.trainer.global_rank if self._trainer is not None else 0
        return int(np.random.SeedSequence([int(base), self.batches_seen, rank]).generate_state(1)[0])

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        opt = self.optimizers()
        now = time.perf_counter()
        with seeded(self.step_seed(), self.device):
            losses = self.compute_losses(batch)
        total = losses["loss"] + losses["aux"]
        opt.zero_grad(set_to_none=True)
        # Backward even for a non-finite loss: under DDP every rank must join the gradient all-reduce.
        self.manual_backward(total)
        grad_norm = self._grad_norm()
        finite = bool(torch.isfinite(total.detach()) & torch.isfinite(grad_norm))
        # One rank's NaN must stop every rank's update, or the replicas drift apart.
        skip = self.trainer.strategy.reduce_boolean_decision(not finite, all=False)
        if skip:
            opt.zero_grad(set_to_none=True)   # no update at all: AdamW moments and weights untouched
            self.skipped_total += 1
            self.consecutive_skips += 1
        else:
            opt.step()
            self.consecutive_skips = 0
        self.batches_seen += 1
        self._log_step(losses, grad_norm, batch.shape[0], now, skip)
        limit = self.hparams.max_consecutive_skips
        if skip:
            msg = (f"non-finite loss or gradient at batch {self.batches_seen} (step {self.global_step}); "
                   f"update skipped ({self.consecutive_skips} in a row, {self.skipped_total} in total)")
            if self.consecutive_skips >= limit:
                raise TrainingDiverged(
                    f"training diverged: {self.consecutive_skips} consecutive steps with a non-finite loss or gradient "
                    f"(last at optimiser step {self.global_step}). None of them changed the weights, and no "
                    f"checkpoint was written after them: resume from the last checkpoint (--ckpt_path), e.g. with a "
                    f"lower --model.lr or --model.l_guide_weight (huai-chang/DiffEIC issues #6, #14).")
            warnings.warn(msg, RuntimeWarning, stacklevel=1)
        return losses["loss"].detach()

    def _grad_norm(self) -> Tensor:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:
            return torch.zeros((), device=self.device)
        # One fused kernel; inf/NaN anywhere makes the total non-finite.
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float())

    def _log_step(self, losses: Dict[str, Tensor], grad_norm: Tensor, batch: int, now: float,
                  skipped: bool) -> None:
        values = {f"train/{k}": v.detach().float() for k, v in losses.items()}
        values.update({"train/grad_norm": grad_norm, "train/skipped_total": float(self.skipped_total),
                       "train/consecutive_skips": float(self.consecutive_skips), "train/skipped": float(skipped)})
        self.log_dict(values, on_step=True, on_epoch=False, batch_size=batch)
        self.log("loss", values["train/loss"], prog_bar=True, logger=False, batch_size=batch)
        self.log("bpp", values["train/bpp"], prog_bar=True, logger=False, batch_size=batch)
        if self._last_step_time is not None:
            # Wall time between step starts (data loading included), all ranks together.
            img_s = batch * self.trainer.world_size / max(now - self._last_step_time, 1e-9)
            self.log("train/img_s", img_s, on_step=True, batch_size=batch)
            self.log("img_s", img_s, prog_bar=True, logger=False, batch_size=batch)
        self._last_step_time = now

    def setup(self, stage: str) -> None:
        # The frozen SD parts are in eval mode on purpose (FrozenBackbone.train is a no-op).
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", category=UserWarning)
        # Mid-epoch resume *is* exact here: DiffEICDataModule restores the sampler position itself
        # (from the batches the model trained on, which a loader's own state cannot know).
        warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch",
                                category=UserWarning)

    def on_train_start(self) -> None:
        if self.trainer.precision in ("16-mixed", "16", "16-true", "bf16-true"):
            # fp16 loss scaling would hide overflows from the divergence guard; bf16 needs no scaler.
            # "-true" precisions cast the LFGCM's weights too, which must stay float32 (exact coding).
            raise ValueError(f"precision {self.trainer.precision!r} is not supported by this trainer: use 32-true, "
                             f"or bf16-mixed on a GPU (bf16 for the frozen UNet and the control module only)")
        self._last_step_time = None

    # ------------------------------------------------------------------ validation with real bitstreams
    def on_validation_epoch_start(self) -> None:
        # Rebuild the CDF tables from the current weights *before* compressing: DiffEICCodec.compress
        # takes the model fingerprint before it refreshes stale tables, so without this the first
        # stream after training steps names tables its own decoder no longer has.
        self.codec.lfgcm.update(force=True)

    def validation_step(self, batch: Tensor, batch_idx: int) -> Dict[str, float]:
        """compress → bytes → decompress (few steps) → real bpp and PSNR."""
        x = batch[0].float().clamp(0, 1)
        # Coding must not run under the trainer's autocast: the entropy path is exact fp32 by design.
        with torch.autocast(device_type=self.device.type, enabled=False):
            bits = self.codec.compress(x)
            x_hat = self.codec.decompress(bits, steps=self.hparams.val_steps, sampler=self.hparams.val_sampler)
        h, w = x.shape[-2:]
        bpp = 8.0 * len(bits) / (h * w)
        mse = F.mse_loss(x_hat.float(), x).item()
        psnr = 10 * math.log10(1.0 / max(mse, 1e-12))
        self.log_dict({"val/bpp": bpp, "val/psnr": psnr}, on_epoch=True, sync_dist=True, batch_size=1,
                      prog_bar=True)
        return {"bpp": bpp, "psnr": psnr}

    # ------------------------------------------------------------------ export (trainable parts only)
    def export(self, path: Union[str, Path], **metadata: Any) -> Path:
        """Write a ``from_pretrained`` folder of the current weights (atomically replacing ``path``).

        The trainable parts are copied first, so the CDF tables ``save_pretrained`` rebuilds never
        change the training model's buffers (under DDP only rank 0 exports).
        """
        codec = self.codec
        snapshot = DiffEICCodec(codec.config, copy.deepcopy(codec.lfgcm), codec.backbone,
                                copy.deepcopy(codec.control), trained=True)
        hp = self.hparams
        rc = codec.config.lfgcm.rate
        lmbda = float(hp.lmbda) if rc is None else [rc.lmbda_min, rc.lmbda_max]
        meta = {"step": int(self.global_step), "lmbda": lmbda, "lr": float(hp.lr),
                "init_from": hp.init_from, "preset": str(hp.preset), **metadata}
        return snapshot.save_pretrained(path, **meta)        # atomic: diffeic.codecs.folder.write_folder

    # ------------------------------------------------------------------ checkpoints without the frozen SD weights
    @staticmethod
    def _excluded(key: str) -> bool:
        return key.startswith("codec.backbone.") or (key in _DERIVED)

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Drop the frozen SD parts (≈3.5 GB for sd21) and derived CDF tables; record what they were."""
        state = checkpoint["state_dict"]
        for key in [k for k in state if self._excluded(k)]:
            del state[key]
        checkpoint["diffeic"] = {
            "backbone_fingerprint": self.codec.backbone_fingerprint(), "config": self.codec.config.to_dict(),
            "batches_seen": self.batches_seen, "skipped_total": self.skipped_total,
            "consecutive_skips": self.consecutive_skips,
        }

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Re-insert the (rebuilt) frozen tensors so strict loading still checks every trainable one."""
        meta = checkpoint.get("diffeic", {})
        recorded = meta.get("backbone_fingerprint")
        if recorded and recorded != self.codec.backbone_fingerprint():
            raise ValueError(f"this checkpoint was trained with SD backbone {recorded}, but the model now has "
                             f"{self.codec.backbone_fingerprint()}; pass the same --model.sd_path")
        state = checkpoint["state_dict"]
        for key, value in self.state_dict().items():
            if self._excluded(key) and key not in state:
                state[key] = value
        self.batches_seen = int(meta.get("batches_seen", 0))
        self.skipped_total = int(meta.get("skipped_total", 0))
        self.consecutive_skips = int(meta.get("consecutive_skips", 0))


__all__ = ["DiffEICModule", "TrainingDiverged", "build_codec", "seeded", "training_losses"]

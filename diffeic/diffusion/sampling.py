"""Samplers on diffusers schedulers, and the training-time noising ([Li2024] Sec. IV-A; RDEIC [Li2025]).

``sample(eps_fn, z_c, sampler, steps, generator, schedule, fewstep_start)`` runs one of
:data:`SAMPLERS` from noise (or, for ``fewstep``, from the noised content latent) to ``z_0``:

``ddpm``     the paper's sampler: spaced ancestral DDPM (guided-diffusion ``space_timesteps``):
             timesteps ``round(k·999/(S−1))`` visited in descending order, respaced betas,
             fixed-small posterior variance, no noise at the last step, no x̂_0 clipping; the
             network receives the original timestep value ([Li2024] Sec. IV-A; official ``spaced_sampler.py``).
``ddim``     deterministic DDIM (η = 0), "trailing" spacing so the first step is at t = 999.
``dpmpp``    DPM-Solver++ (2nd-order multistep), diffusers defaults.
``fewstep``  RDEIC-style start ([Li2025]): ``z_N = √ᾱ_N z_c + √(1−ᾱ_N) ε`` with N = ``fewstep_start``
             (299), then the spaced ancestral DDPM over ``round(k·N/(S−1))``; S network evaluations.

Noise is always drawn on the CPU from a CPU generator and then moved, so CPU and GPU runs draw
identical noise; the same generator state gives bit-identical results on the same device.

References:
[Li2024] Z. Li, Y. Zhou, H. Wei, C. Ge, J. Jiang, "Toward Extreme Image Compression with Latent Feature
    Guidance and Diffusion Prior", IEEE TCSVT 35(1):888–899, 2025 (arXiv:2404.18820, "Towards …").
    "official ``path``" names a file of the authors' implementation, github.com/huai-chang/DiffEIC.
[Li2025] Z. Li, Y. Zhou, H. Wei, C. Ge, A. Mian, "RDEIC: Accelerating Diffusion-Based Extreme Image
    Compression with Relay Residual Diffusion", IEEE TCSVT 35(11):11540–11552, 2025 (arXiv:2410.02640).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ..config import ScheduleConfig, check_int

Tensor = torch.Tensor
EpsFn = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------- schedules

def _schedule_kwargs(schedule: ScheduleConfig) -> dict:
    return dict(num_train_timesteps=schedule.num_train_timesteps, beta_start=schedule.beta_start,
                beta_end=schedule.beta_end, beta_schedule=schedule.beta_schedule,
                prediction_type=schedule.prediction_type)


def spaced_timesteps(last: int, steps: int) -> List[int]:
    """``round(k·last/(S−1))`` for k = S−1..0, descending ([Li2024] Sec. IV-A; official ``spaced_sampler.py``).

    Computed exactly as guided-diffusion's ``space_timesteps`` (used by the official sampler):
    the stride is accumulated in floating point and rounded with Python's ``round`` — for some S
    this differs by one from rounding ``k·last/(S−1)`` directly (ties such as 20.5).
    ``steps = 1`` gives ``[last]`` (one jump from ``last`` to x̂_0; guided-diffusion would use 0).
    """
    if steps < 1 or steps > last + 1:
        raise ValueError(f"steps must be in 1..{last + 1} for timesteps in [0, {last}], got {steps}")
    if steps == 1:
        return [int(last)]
    stride, cur, taken = last / (steps - 1), 0.0, []
    for _ in range(steps):
        taken.append(round(cur))
        cur += stride
    return taken[::-1]


def training_scheduler(schedule: ScheduleConfig) -> DDPMScheduler:
    """The T-step DDPM of SD2.1-base (official ``diffeic.yaml``): scaled-linear 0.00085→0.012, ε-prediction."""
    return DDPMScheduler(**_schedule_kwargs(schedule), variance_type="fixed_small", clip_sample=False)


def alphas_cumprod(schedule: ScheduleConfig) -> Tensor:
    """ᾱ_t for t = 0..T−1 (float32, as diffusers computes them)."""
    return training_scheduler(schedule).alphas_cumprod.clone()


def sample_timesteps(batch: int, schedule: ScheduleConfig, generator: Optional[torch.Generator] = None,
                     device: Union[str, torch.device, None] = None, high: Optional[int] = None) -> Tensor:
    """Training timesteps ``t ~ U{0, …, high−1}`` (default ``high = T``; RDEIC uses N+1), shape ``(batch,)``."""
    high = schedule.num_train_timesteps if high is None else int(high)
    t = torch.randint(0, high, (batch,), generator=generator, device="cpu")
    return t.to(device) if device is not None else t


def add_noise(z0: Tensor, noise: Tensor, t: Tensor,
              schedule: Union[ScheduleConfig, DDPMScheduler]) -> Tensor:
    """``z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε``, per-sample ``t`` of shape ``(B,)``."""
    scheduler = schedule if isinstance(schedule, DDPMScheduler) else training_scheduler(schedule)
    return scheduler.add_noise(z0, noise, t.to(z0.device))


# --------------------------------------------------------------------------- sampler registry

@dataclass(frozen=True)
class SamplerSpec:
    """How to build a sampler's scheduler, where it starts, and how many network evaluations it can make."""

    description: str
    build: Optional[Callable[[ScheduleConfig, int, int], SchedulerMixin]]   # (schedule, steps, fewstep_start)
    max_steps: Callable[[int, int], int]   # (T, fewstep_start) -> the most steps
    why: str                               # what the limit is, for error messages
    from_content: bool = False        # start at z_N = noised z_c instead of pure noise
    ancestral: bool = False           # DDPM step: draws noise, and the last step returns x̂_0


def _build_ddpm(schedule: ScheduleConfig, steps: int, fewstep_start: int) -> SchedulerMixin:
    scheduler = training_scheduler(schedule)
    # Custom timesteps: diffusers then takes the *next list element* as the previous timestep,
    # which is exactly the respacing of guided-diffusion (β'_i = 1 − ᾱ_{t_i}/ᾱ_{t_{i−1}}).
    scheduler.set_timesteps(timesteps=spaced_timesteps(schedule.num_train_timesteps - 1, steps))
    return scheduler


def _build_fewstep(schedule: ScheduleConfig, steps: int, fewstep_start: int) -> SchedulerMixin:
    scheduler = training_scheduler(schedule)
    scheduler.set_timesteps(timesteps=spaced_timesteps(fewstep_start, steps))
    return scheduler


def _build_ddim(schedule: ScheduleConfig, steps: int, fewstep_start: int) -> SchedulerMixin:
    # "trailing" starts at t = T−1 like the spaced DDPM (diffusers' DDIM steps by T // S, so the
    # "linspace" grid would not chain); set_alpha_to_one: the last step lands on x̂_0.
    scheduler = DDIMScheduler(**_schedule_kwargs(schedule), clip_sample=False, set_alpha_to_one=True,
                              steps_offset=0, timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    return scheduler


def _build_dpmpp(schedule: ScheduleConfig, steps: int, fewstep_start: int) -> SchedulerMixin:
    scheduler = DPMSolverMultistepScheduler(**_schedule_kwargs(schedule), algorithm_type="dpmsolver++",
                                            solver_order=2, timestep_spacing="linspace")
    scheduler.set_timesteps(steps)
    return scheduler


#: Every sampler a stream can name, in the order of their ids in the container (``bitstream.SAMPLER_IDS``;
#: a test holds the two equal).  ``onestep`` is decoded by :class:`~diffeic.diffusion.onestep.OneStepDecoder`,
#: not by :func:`sample`; it is here for its id and its limit.
SAMPLERS: Dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec("spaced ancestral DDPM, fixed-small variance (the paper's sampler)", _build_ddpm,
                        lambda T, N: T, "one per timestep", ancestral=True),
    "ddim": SamplerSpec("deterministic DDIM (eta = 0)", _build_ddim, lambda T, N: T, "one per timestep"),
    # Above T - 1 steps the linspace grid rounds two steps onto one timestep and the solver divides by zero.
    "dpmpp": SamplerSpec("DPM-Solver++ 2nd-order multistep", _build_dpmpp, lambda T, N: T - 1,
                         "its timestep grid repeats a timestep beyond that"),
    "fewstep": SamplerSpec("RDEIC-style: start from z_c noised to fewstep_start, spaced DDPM below it",
                           _build_fewstep, lambda T, N: N + 1, "one per timestep up to fewstep_start",
                           from_content=True, ancestral=True),
    "onestep": SamplerSpec("one controlled-UNet call at a fixed timestep (diffusion/onestep.py)", None,
                           lambda T, N: 1, "exactly one network evaluation"),
}


def sampler_limit(sampler: str, schedule: ScheduleConfig, fewstep_start: int) -> int:
    """The most steps ``sampler`` takes with this schedule and few-step start."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid samplers: {', '.join(SAMPLERS)}")
    return SAMPLERS[sampler].max_steps(schedule.num_train_timesteps, fewstep_start)


def check_steps(sampler: str, steps: int, schedule: ScheduleConfig, fewstep_start: int) -> int:
    """``steps`` as an int if ``sampler`` can make that many network evaluations, else a ``ValueError``
    naming the sampler and its limit (the one check of a step count against a sampler)."""
    steps = check_int("steps", steps, 1)
    limit = sampler_limit(sampler, schedule, fewstep_start)
    if steps > limit:
        raise ValueError(f"{steps} steps for sampler {sampler!r}, which takes at most {limit} with this model "
                         f"({SAMPLERS[sampler].why})")
    return steps


def make_scheduler(sampler: str, steps: int, schedule: Optional[ScheduleConfig] = None,
                   fewstep_start: int = 299) -> SchedulerMixin:
    """The diffusers scheduler of ``sampler`` with its timesteps set (validates every argument)."""
    schedule = schedule or ScheduleConfig()
    T = schedule.num_train_timesteps
    fewstep_start = check_int("fewstep_start", fewstep_start, 0, T - 1)
    steps = check_steps(sampler, steps, schedule, fewstep_start)
    if SAMPLERS[sampler].build is None:
        raise ValueError(f"sampler {sampler!r} is not a scheduler loop: decode it with its own decoder "
                         f"(DiffEICCodec.generate, diffusion/onestep.py)")
    return SAMPLERS[sampler].build(schedule, steps, fewstep_start)


def sampler_timesteps(sampler: str, steps: int, schedule: Optional[ScheduleConfig] = None,
                      fewstep_start: int = 299) -> List[int]:
    """The timesteps at which ``sampler`` evaluates the network, in order (one eps call each)."""
    return [int(t) for t in make_scheduler(sampler, steps, schedule, fewstep_start).timesteps]


# --------------------------------------------------------------------------- the loop

Generators = Union[torch.Generator, Sequence[torch.Generator], None]


def cpu_randn(shape, generator: Generators, like: Tensor) -> Tensor:
    """Standard normal noise of ``shape`` drawn on the CPU from ``generator`` (one, or one per batch item), then
    moved to ``like``'s device and dtype: CPU and GPU decodes start from the same noise."""
    if isinstance(generator, (list, tuple)):
        # One generator per batch item, each drawing that item's noise exactly as a batch of one
        # would (same as diffusers' randn_tensor): a batch decodes like its items one by one.
        noise = torch.cat([torch.randn((1, *shape[1:]), generator=g, device="cpu", dtype=torch.float32)
                           for g in generator])
    else:
        noise = torch.randn(shape, generator=generator, device="cpu", dtype=torch.float32)
    return noise.to(like.device, like.dtype)


def check_generators(generator: Generators, batch: int) -> Generators:
    """Validate a CPU generator or a list of them (one per batch item); a list of one acts as one."""
    gens = list(generator) if isinstance(generator, (list, tuple)) else [generator]
    for g in gens:
        if g is not None and (not isinstance(g, torch.Generator) or g.device.type != "cpu"):
            raise ValueError(f"generator must be a CPU torch.Generator (noise is drawn on the CPU), "
                             f"got {getattr(g, 'device', type(g).__name__)}")
    if not isinstance(generator, (list, tuple)):
        return generator
    if len(gens) != batch:
        raise ValueError(f"got {len(gens)} generators for a batch of {batch}; pass one per batch item")
    if any(g is None for g in gens):
        raise ValueError("a list of generators may not contain None")
    return gens[0] if batch == 1 else gens


def sample(eps_fn: EpsFn, z_c: Tensor, sampler: str = "ddpm", steps: int = 50,
           generator: Generators = None, schedule: Optional[ScheduleConfig] = None,
           fewstep_start: int = 299, progress: bool = False) -> Tensor:
    """Denoise to ``z_0`` with ``eps = eps_fn(z_t, t)`` ([Li2024] Sec. IV-A; ``fewstep``: [Li2025]).

    Args:
        eps_fn: ``(z_t (B,C,h,w), t (B,) long on z_t's device) -> eps`` — e.g. the controlled UNet.
        z_c: content latent ``(B,C,h,w)``; sets shape/device/dtype, and is the start of ``fewstep``.
        sampler: a key of :data:`SAMPLERS` (``ddpm`` default, ``ddim``, ``dpmpp``, ``fewstep``).
        steps: number of network evaluations (``1..T``; ``fewstep``: ``1..fewstep_start+1``).
        generator: a CPU ``torch.Generator`` (all noise is drawn on the CPU); ``None`` uses the
            global RNG.  Same generator state → bit-identical output on the same device.  Or a
            list of CPU generators, one per batch item: item i then gets the noise it would get
            decoded alone with generator i (batched decoding == one-by-one decoding).
        schedule: training schedule (default :class:`ScheduleConfig`: T=1000, scaled-linear).
        fewstep_start: start timestep N of ``fewstep`` (RDEIC: 299).
        progress: show a tqdm bar of the steps (from 2 s into the sampling, so short decodes stay quiet).

    Returns:
        ``z_0`` with the shape, device and dtype of ``z_c``.
    """
    if not isinstance(z_c, Tensor) or z_c.ndim != 4:
        raise ValueError(f"z_c must be a (B,C,h,w) tensor, got {getattr(z_c, 'shape', type(z_c))}")
    generator = check_generators(generator, z_c.shape[0])
    spec = SAMPLERS.get(sampler)
    scheduler = make_scheduler(sampler, steps, schedule, fewstep_start)
    timesteps = scheduler.timesteps

    noise = cpu_randn(z_c.shape, generator, z_c)
    if spec.from_content:
        t_start = torch.full((z_c.shape[0],), int(timesteps[0]), dtype=torch.long, device=z_c.device)
        z = scheduler.add_noise(z_c, noise, t_start)
    else:
        z = noise * scheduler.init_noise_sigma

    iterator = timesteps
    if progress:
        from tqdm.auto import tqdm
        # delay: a decode of a second or two stays quiet; a long one shows its steps.
        iterator = tqdm(timesteps, desc=f"{sampler} ({len(timesteps)} steps)", delay=2.0, leave=False)
    last = len(timesteps) - 1
    for i, t in enumerate(iterator):
        t_batch = t.to(z.device, torch.long).expand(z.shape[0])
        eps = eps_fn(scheduler.scale_model_input(z, t), t_batch)
        if spec.ancestral:
            out = scheduler.step(eps, t, z, generator=generator)
            # Last step: the posterior mean is exactly x̂_0 and the variance 0 (no noise, as the official sampler).
            z = out.pred_original_sample if i == last else out.prev_sample
        else:
            z = scheduler.step(eps, t, z).prev_sample
    return z.to(z_c.dtype)

"""Samplers and training noise ([Li2024] Sec. IV-A; RDEIC [Li2025], arXiv:2410.02640)."""
import math

import pytest
import torch

from diffeic.config import ScheduleConfig
from diffeic.diffusion.sampling import (SAMPLERS, add_noise, alphas_cumprod, sample, sample_timesteps,
                                        sampler_timesteps, spaced_timesteps, training_scheduler)

SPEC_S50 = [0, 20, 41, 61, 82, 102, 122, 143, 163, 183, 204, 224, 245, 265, 285, 306, 326, 347, 367, 387, 408,
            428, 449, 469, 489, 510, 530, 550, 571, 591, 612, 632, 652, 673, 693, 714, 734, 754, 775, 795, 816,
            836, 856, 877, 897, 917, 938, 958, 979, 999]


def toy_eps(z_t, t):
    """A cheap deterministic, t-dependent 'network'."""
    return 0.3 * z_t + 1e-3 * t.float().view(-1, 1, 1, 1)


def counting(fn):
    calls = []

    def wrapped(z_t, t):
        calls.append(t.clone())
        return fn(z_t, t)

    return wrapped, calls


def gen(seed=231):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- timesteps

def test_ddpm_timesteps_match_spec():
    assert sampler_timesteps("ddpm", 50) == SPEC_S50[::-1]
    s20 = sampler_timesteps("ddpm", 20)[::-1]
    assert len(s20) == 20 and s20[:3] == [0, 53, 105] and s20[-2:] == [946, 999]
    assert sampler_timesteps("ddpm", 5) == [999, 749, 500, 250, 0]


def test_spaced_timesteps_follow_guided_diffusion_accumulation():
    def guided(size, count):          # guided-diffusion space_timesteps, one section
        stride, cur, out = (size - 1) / (count - 1), 0.0, []
        for _ in range(count):
            out.append(round(cur))
            cur += stride
        return out

    for s in (2, 3, 7, 21, 23, 50, 100, 999, 1000):
        assert spaced_timesteps(999, s) == guided(1000, s)[::-1]
    assert spaced_timesteps(999, 1) == [999]


def test_fewstep_timesteps_match_rdeic():
    assert sampler_timesteps("fewstep", 2, fewstep_start=299) == [299, 0]
    assert sampler_timesteps("fewstep", 5, fewstep_start=299) == [299, 224, 150, 75, 0]


def test_ddpm_respacing_uses_next_listed_timestep():
    sched = training_scheduler(ScheduleConfig())
    sched.set_timesteps(timesteps=spaced_timesteps(999, 5))
    assert int(sched.previous_timestep(torch.tensor(749))) == 500
    assert int(sched.previous_timestep(torch.tensor(0))) == -1


# --------------------------------------------------------------------------- the DDPM algorithm

def reference_spaced_ddpm(eps_fn, shape, steps, generator, last=999, start=None):
    """The official sampler written out in float64: respaced betas, fixed-small variance, no clip, no final noise."""
    ac = alphas_cumprod(ScheduleConfig()).double()
    ts = spaced_timesteps(last, steps)
    z = torch.randn(shape, generator=generator, dtype=torch.float32).double()
    if start is not None:                       # fewstep: z_N = sqrt(ab) z_c + sqrt(1-ab) eps
        z = ac[ts[0]].sqrt() * start.double() + (1 - ac[ts[0]]).sqrt() * z
    for i, t in enumerate(ts):
        a_t = ac[t]
        a_prev = ac[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64)
        beta = 1 - a_t / a_prev
        eps = eps_fn(z.float(), torch.full((shape[0],), t)).double()
        x0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        mean = a_prev.sqrt() * beta / (1 - a_t) * x0 + (1 - beta).sqrt() * (1 - a_prev) / (1 - a_t) * z
        if i + 1 < len(ts):
            var = beta * (1 - a_prev) / (1 - a_t)
            z = mean + var.sqrt() * torch.randn(shape, generator=generator, dtype=torch.float32).double()
        else:
            z = mean
    return z.float()


@pytest.mark.parametrize("steps", [1, 2, 5, 50])
def test_ddpm_equals_spec_algorithm(steps):
    z_c = torch.zeros(2, 4, 6, 5)
    ours = sample(toy_eps, z_c, "ddpm", steps, gen(3))
    ref = reference_spaced_ddpm(toy_eps, z_c.shape, steps, gen(3))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_fewstep_equals_spec_algorithm_from_noised_content():
    z_c = torch.randn(2, 4, 6, 5, generator=gen(9))
    ours = sample(toy_eps, z_c, "fewstep", 5, gen(3), fewstep_start=299)
    ref = reference_spaced_ddpm(toy_eps, z_c.shape, 5, gen(3), last=299, start=z_c)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- every sampler

#: The samplers that sample() runs (onestep has its own decoder).
LOOPS = sorted(name for name, spec in SAMPLERS.items() if spec.build is not None)


@pytest.mark.parametrize("name", LOOPS)
@pytest.mark.parametrize("steps", [1, 3])
def test_every_sampler_runs_and_counts_evaluations(name, steps):
    z_c = torch.randn(2, 4, 6, 5, generator=gen(0))
    fn, calls = counting(toy_eps)
    out = sample(fn, z_c, name, steps, gen())
    assert out.shape == z_c.shape and out.dtype == z_c.dtype and torch.isfinite(out).all()
    assert len(calls) == steps
    assert [int(c[0]) for c in calls] == sampler_timesteps(name, steps)
    assert all(c.shape == (2,) and c.dtype == torch.long for c in calls)


def test_fewstep_uses_exactly_its_steps_and_starts_at_fewstep_start():
    fn, calls = counting(toy_eps)
    sample(fn, torch.zeros(1, 4, 4, 4), "fewstep", 2, gen(), fewstep_start=299)
    assert [int(c[0]) for c in calls] == [299, 0]
    fn, calls = counting(toy_eps)
    sample(fn, torch.zeros(1, 4, 4, 4), "fewstep", 4, gen(), fewstep_start=99)
    assert [int(c[0]) for c in calls] == [99, 66, 33, 0]


def test_fewstep_start_depends_on_content():
    seen = []

    def record(z_t, t):
        seen.append(z_t.clone())
        return torch.zeros_like(z_t)

    z_c = torch.randn(1, 4, 4, 4, generator=gen(5))
    sample(record, z_c, "fewstep", 1, gen(7), fewstep_start=299)
    ab = alphas_cumprod(ScheduleConfig())[299]
    noise = torch.randn(1, 4, 4, 4, generator=gen(7))
    torch.testing.assert_close(seen[0], ab.sqrt() * z_c + (1 - ab).sqrt() * noise)


@pytest.mark.parametrize("name", LOOPS)
def test_same_seed_identical_other_seed_different(name):
    z_c = torch.randn(1, 4, 5, 5, generator=gen(0))
    a = sample(toy_eps, z_c, name, 4, gen(1))
    b = sample(toy_eps, z_c, name, 4, gen(1))
    c = sample(toy_eps, z_c, name, 4, gen(2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_invalid_arguments_name_valid_values():
    z_c = torch.zeros(1, 4, 4, 4)
    with pytest.raises(ValueError, match="ddpm, ddim, dpmpp, fewstep"):
        sample(toy_eps, z_c, "euler", 10, gen())
    for bad in (0, -1, 1001, 2.5, True):
        with pytest.raises(ValueError, match="steps"):
            sample(toy_eps, z_c, "ddpm", bad, gen())
    with pytest.raises(ValueError, match="steps"):
        sample(toy_eps, z_c, "fewstep", 301, gen(), fewstep_start=299)
    with pytest.raises(ValueError, match="fewstep_start"):
        sample(toy_eps, z_c, "fewstep", 2, gen(), fewstep_start=1000)
    with pytest.raises(ValueError, match="z_c"):
        sample(toy_eps, torch.zeros(4, 4, 4), "ddpm", 2, gen())


def test_global_rng_used_without_generator():
    torch.manual_seed(0)
    a = sample(toy_eps, torch.zeros(1, 4, 4, 4), "ddpm", 3, None)
    torch.manual_seed(0)
    b = sample(toy_eps, torch.zeros(1, 4, 4, 4), "ddpm", 3, None)
    assert torch.equal(a, b)


# --------------------------------------------------------------------------- training helpers

def test_schedule_values():
    ac = alphas_cumprod(ScheduleConfig())
    assert ac.shape == (1000,)
    assert math.isclose(float(ac[999]), 0.00466, rel_tol=0.01)          # SD2.1-base scaled-linear schedule
    assert math.isclose(float(ac[299]), 0.592, rel_tol=0.01)            # RDEIC [Li2025], arXiv:2410.02640


def test_add_noise_and_training_timesteps():
    schedule = ScheduleConfig()
    z0 = torch.randn(3, 4, 4, 4, generator=gen(1))
    eps = torch.randn(3, 4, 4, 4, generator=gen(2))
    t = torch.tensor([0, 500, 999])
    ac = alphas_cumprod(schedule)
    expected = ac[t].sqrt().view(-1, 1, 1, 1) * z0 + (1 - ac[t]).sqrt().view(-1, 1, 1, 1) * eps
    torch.testing.assert_close(add_noise(z0, eps, t, schedule), expected)
    torch.testing.assert_close(add_noise(z0, eps, t, training_scheduler(schedule)), expected)
    ts = sample_timesteps(20000, schedule, gen(0))
    assert ts.dtype == torch.long and int(ts.min()) == 0 and int(ts.max()) == 999
    assert int(sample_timesteps(5000, schedule, gen(0), high=300).max()) == 299
    assert torch.equal(sample_timesteps(8, schedule, gen(4)), sample_timesteps(8, schedule, gen(4)))

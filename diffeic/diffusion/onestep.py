"""One-step decoding: the controlled frozen UNet called once at a fixed timestep t* → ẑ_0.

A :class:`OneStepDecoder` is a control module of its own (trained by
:mod:`diffeic.training.onestep`, starting from the codec's trained control module; the 50-step path
keeps the original) steering the same frozen UNet, plus the settings it was trained with::

    z_in = z_c                                       input "content": deterministic (OSEDiff/StableCodec-style)
         | √ᾱ_t* z_c + √(1−ᾱ_t*) ε                    input "noised": RDEIC-style start, ε from the seeded CPU generator
    out  = UNet_ctrl'(z_in, t*, c_empty, z_c)
    ẑ_0  = (z_in − √(1−ᾱ_t*) out) / √ᾱ_t*             prediction "eps": the frozen UNet's own parametrisation
         | out                                       prediction "x0": the output is read as ẑ_0 directly

Defaults (``content``, ``eps``, t* = 299, the few-step start of RDEIC) were chosen by measurement on the
tiny preset (``tests/test_onestep.py`` docstring).  An untrained codec
(``DiffEICCodec.from_config``) decodes one-step with its own control module and these defaults, so the
plumbing works without training; a *trained* checkpoint decodes one-step only with trained one-step
weights (``onestep.safetensors``, written by the one-step training).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

import torch
from torch import nn

from ..config import ScheduleConfig
from .control import ControlModule
from .sampling import EpsFn, Generators, alphas_cumprod, check_generators, cpu_randn

Tensor = torch.Tensor

INPUTS = ("content", "noised")
PREDICTIONS = ("eps", "x0")


@dataclass(frozen=True)
class OneStepConfig:
    """How the one network call is made: its timestep t*, its input and how its output is read."""

    timestep: int = 299
    input: str = "content"
    prediction: str = "eps"

    def __post_init__(self) -> None:
        if isinstance(self.timestep, bool) or not isinstance(self.timestep, int) or self.timestep < 0:
            raise ValueError(f"one-step timestep must be a non-negative integer, got {self.timestep!r}")
        if self.input not in INPUTS:
            raise ValueError(f"one-step input must be one of {', '.join(INPUTS)}, got {self.input!r}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"one-step prediction must be one of {', '.join(PREDICTIONS)}, got {self.prediction!r}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "OneStepConfig":
        known = {"timestep", "input", "prediction"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown one-step setting(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}")
        return cls(**data)


class OneStepDecoder(nn.Module):
    """The one-step decoding mode: ``z_c`` → ``ẑ_0`` in one controlled-UNet evaluation.

    Args:
        control: the control module used for the one call (its parameters are this decoder's weights).
        config: t*, input and prediction (see the module docstring).
        schedule: the diffusion schedule whose ᾱ_t* converts between z_0, z_t* and ε.
        trained: whether these weights were trained for one-step decoding (recorded in checkpoints).
    """

    def __init__(self, control: ControlModule, config: Optional[OneStepConfig] = None,
                 schedule: Optional[ScheduleConfig] = None, trained: bool = False) -> None:
        super().__init__()
        self.control = control
        self.config = config or OneStepConfig()
        schedule = schedule or ScheduleConfig()
        if self.config.timestep >= schedule.num_train_timesteps:
            raise ValueError(f"one-step timestep {self.config.timestep} outside 0..{schedule.num_train_timesteps - 1}")
        alpha_bar = float(alphas_cumprod(schedule)[self.config.timestep])
        self.sqrt_alpha_bar, self.sqrt_one_minus = alpha_bar ** 0.5, (1.0 - alpha_bar) ** 0.5
        self.trained = bool(trained)

    def metadata(self) -> Dict[str, Any]:
        """What a checkpoint records next to the weights (``config.yaml`` key ``onestep``)."""
        return {**self.config.to_dict(), "trained": self.trained}

    def network_input(self, z_c: Tensor, generator: Generators = None) -> Tensor:
        """The latent the network sees: ``z_c``, or ``z_c`` noised to t* with CPU-drawn noise."""
        if self.config.input == "content":
            return z_c
        generator = check_generators(generator, z_c.shape[0])
        noise = cpu_randn(z_c.shape, generator, z_c)
        return self.sqrt_alpha_bar * z_c + self.sqrt_one_minus * noise

    def predict(self, eps_fn: EpsFn, z_c: Tensor, generator: Generators = None) -> Tensor:
        """``ẑ_0`` (float32) with ``eps_fn(z_in, t)`` the controlled UNet of :attr:`control`; differentiable."""
        z_in = self.network_input(z_c, generator)
        t = torch.full((z_c.shape[0],), self.config.timestep, dtype=torch.long, device=z_c.device)
        out = eps_fn(z_in, t).float()
        if self.config.prediction == "x0":
            return out
        return (z_in.float() - self.sqrt_one_minus * out) / self.sqrt_alpha_bar


__all__ = ["OneStepConfig", "OneStepDecoder", "INPUTS", "PREDICTIONS"]

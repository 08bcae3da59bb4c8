"""The exact integer twin of the LFGCM's coding-side parameter networks (hyper-decoder, contexts, entropy
parameters), compiled with :class:`diffeic.entropy.exact.ExactNet` so that σ and μ, which select the coder's
CDFs, are the same on every device (the arithmetic is described in :mod:`diffeic.entropy.exact`)."""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

from ..entropy.exact import ACT_SCALE, ExactNet, to_grid


class ExactEntropyPath:
    """The coding-side parameter networks of a SliceCheckerboardEntropyModel, in exact arithmetic, under
    the model's attribute names (so :func:`diffeic.lfgcm.entropy.slice_walk` runs either).

    All tensors are float64 holding grid integers; σ and μ come out on the 2^-8 grid, so
    ``from_grid`` gives float32 values that are identical wherever they are computed.
    """

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.device = device
        self.hyper_dec = ExactNet(model.hyper_dec).to(device)
        self.channel_context: List[Optional[ExactNet]] = [
            None if k == 0 else ExactNet(m).to(device) for k, m in enumerate(model.channel_context)]
        self.local_context = [ExactNet(m).to(device) for m in model.local_context]
        self.entropy_parameters_anchor = [ExactNet(m).to(device) for m in model.entropy_parameters_anchor]
        self.entropy_parameters_nonanchor = [ExactNet(m).to(device) for m in model.entropy_parameters_nonanchor]
        self.z_medians = to_grid(model.entropy_bottleneck.quantiles[:, 0, 1].detach()).view(1, -1, 1, 1).to(device)

    def z_hat(self, z_sym: torch.Tensor) -> torch.Tensor:
        """ẑ on the grid: integer symbols plus the (grid-rounded) medians."""
        return z_sym.double() * ACT_SCALE + self.z_medians

    def psi(self, z_hat: torch.Tensor) -> torch.Tensor:
        return self.hyper_dec(z_hat)

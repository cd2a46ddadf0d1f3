"""Reverse-SDE Euler–Maruyama in eta-time, with a noise level between the ODE and the full SDE."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..converters import x0_to_score, x0_to_velocity
from ..schedules import ContinuousSchedule
from .base import Callback, CountingDenoiser

__all__ = ["sample_sde", "check_noise"]


def check_noise(noise: float) -> None:
    """ValueError unless 0 <= noise <= 1 (0 = the probability-flow ODE, 1 = the full reverse SDE)."""
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise <= 1:
        raise ValueError(f"noise must be between 0 (the ODE) and 1 (the full reverse SDE), got {noise!r}")


def sample_sde(model: CountingDenoiser, x: torch.Tensor, y: torch.Tensor, schedule: ContinuousSchedule,
               ts: np.ndarray, *, noise: float = 1.0, generator: Optional[torch.Generator] = None,
               callback: Optional[Callback] = None) -> torch.Tensor:
    """Euler–Maruyama on ``dx = (v - g^2/2 score) d eta + g dW``, g = noise * kappa. Strong order 1/2.

    ``noise = 0`` is Euler on the probability-flow ODE in eta; ``noise = 1`` the full reverse
    SDE whose marginals are the forward process's (the continuous limit of the Markov chain).
    One Gaussian tensor is drawn per step, in step order. NFE = len(ts).
    """
    check_noise(noise)
    etas = schedule.eta(np.asarray(ts, np.float64))
    g = noise * schedule.kappa
    n = len(ts)
    for i in range(n - 1):
        x0_hat = model(x, ts[i], step=i)
        if callback is not None:
            callback(dict(i=i, t=float(ts[i]), x=x, x0_hat=x0_hat))
        d_eta = etas[i + 1] - etas[i]  # negative: eta decreases
        drift = x0_to_velocity(x, x0_hat, y, etas[i])
        if g > 0:
            drift = drift - 0.5 * g * g * x0_to_score(x, x0_hat, y, etas[i], schedule.kappa)
        x = x + d_eta * drift
        if g > 0:
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = x + g * math.sqrt(abs(d_eta)) * z
    return model(x, ts[-1], step=n - 1)

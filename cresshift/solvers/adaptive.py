"""A reference integrator: torchdiffeq's adaptive dopri5 on the probability-flow ODE."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..converters import edm_sigma
from ..schedules import ContinuousSchedule
from .base import Callback, CountingDenoiser, Variable

__all__ = ["sample_adaptive"]


def _t_of_coord(schedule: ContinuousSchedule, variable: str, c: float) -> tuple[float, float]:
    """(t, eta) at an integration coordinate."""
    if variable == "t":
        return c, float(schedule.eta(c))
    if variable == "eta":
        return float(schedule.t_of_eta(c)), c
    if variable == "sqrt_eta":
        return float(schedule.t_of_eta(c * c)), c * c
    # sigma~ = kappa q / (1 - q^2) with q = sqrt(eta)  =>  sigma q^2 + kappa q - sigma = 0.
    k = schedule.kappa
    q = (-k + math.sqrt(k * k + 4 * c * c)) / (2 * c)
    return float(schedule.t_of_eta(q * q)), q * q


def sample_adaptive(model: CountingDenoiser, x: torch.Tensor, y: torch.Tensor, schedule: ContinuousSchedule,
                    ts: np.ndarray, *, rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5",
                    variable: str = "eta", callback: Optional[Callback] = None) -> torch.Tensor:
    """Adaptive Runge–Kutta (torchdiffeq) from t = ts[0] to ts[-1], then x0_hat there.

    Order 5 (dopri5); the NFE is whatever the error control needs, counted exactly.
    """
    from torchdiffeq import odeint

    var = Variable(variable)
    t0, t1 = float(ts[0]), float(ts[-1])
    eta0, eta1 = float(schedule.eta(t0)), float(schedule.eta(t1))
    c0, c1 = (float(v) for v in var.coords(np.array([t0, t1]), np.array([eta0, eta1]), schedule.kappa))
    if variable == "t" and not np.isfinite(schedule.alpha(np.array([t0, t1]))).all():
        raise ValueError(f"variable='t' needs a finite alpha(t) on [{t1:g}, {t0:g}]; use variable='eta'")
    steps = [0]

    lo, hi = min(c0, c1), max(c0, c1)

    def field(c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # torchdiffeq's first-step probe and its last step may look past the end of the
        # interval (where eta -> 0 is singular): evaluate such probes at the nearest end.
        c_eval = min(max(float(c), lo), hi)
        t, eta = _t_of_coord(schedule, variable, c_eval)
        alpha = float(schedule.alpha(t)) if variable == "t" else 1.0
        xs = var.from_state(z, y, eta)
        x0_hat = model(xs, t, step=steps[0])
        if callback is not None:
            callback(dict(i=steps[0], t=t, x=xs, x0_hat=x0_hat))
        steps[0] += 1
        return var.derivative(z, x0_hat, y, eta, alpha, c_eval)

    z0 = var.to_state(x, y, eta0)
    span = torch.tensor([c0, c1], dtype=torch.float64 if x.dtype == torch.float64 else torch.float32,
                        device=x.device)
    z1 = odeint(field, z0, span, rtol=rtol, atol=atol, method=method)[-1]
    x = var.from_state(z1, y, eta1)
    return model(x, t1, step=steps[0])

"""A reference integrator: torchdiffeq's adaptive dopri5 on the probability-flow ODE."""
from __future__ import annotations

import sys
from typing import Any, Optional, Union

import numpy as np
import torch

from ..grids import GRID_FAMILIES, make_grid
from ..schedules import ContinuousSchedule, ResShiftSchedule, as_continuous
from .base import Callback, Chain, CountingDenoiser, Variable, as_variable

__all__ = ["sample_adaptive", "adaptive_chain"]


def adaptive_chain(spec: Any, schedule: Union[ResShiftSchedule, ContinuousSchedule], nfe: Optional[int],
                   grid: Any = None, rho: Optional[float] = None) -> Chain:
    """From t = 1 (or an explicit grid's first time) to 1/T (its last); the steps are the error control's."""
    cont = as_continuous(schedule)
    if isinstance(grid, str) and grid in GRID_FAMILIES:
        raise ValueError(f"adaptive chooses its own steps; grid={grid!r} does not apply (pass no grid)")
    if grid is None or (isinstance(grid, str) and grid == "auto"):
        ts = np.array([1.0, cont.t_min])
    else:
        ts = make_grid(grid, sys.maxsize, cont)  # an explicit grid: only its ends matter
    return Chain(ts=ts, eta_start=float(cont.eta(float(ts[0]))), kwargs=dict(schedule=cont, ts=ts))


def sample_adaptive(model: CountingDenoiser, x: torch.Tensor, y: torch.Tensor, schedule: ContinuousSchedule,
                    ts: np.ndarray, *, rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5",
                    variable: Union[str, Variable] = "eta", callback: Optional[Callback] = None) -> torch.Tensor:
    """Adaptive Runge–Kutta (torchdiffeq) from t = ts[0] to ts[-1], then x0_hat there.

    Order 5 (dopri5); the NFE is whatever the error control needs, counted exactly.
    """
    from torchdiffeq import odeint

    var = as_variable(variable)
    t0, t1 = float(ts[0]), float(ts[-1])
    eta0, eta1 = float(schedule.eta(t0)), float(schedule.eta(t1))
    c0, c1 = (float(v) for v in var.coords(np.array([t0, t1]), np.array([eta0, eta1]), schedule.kappa))
    if var.needs_alpha and not np.isfinite(schedule.alpha(np.array([t0, t1]))).all():
        raise ValueError(f"variable={var.name!r} needs a finite alpha(t) on [{t1:g}, {t0:g}]; use variable='eta'")
    steps = [0]

    lo, hi = min(c0, c1), max(c0, c1)

    def field(c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # torchdiffeq's first-step probe and its last step may look past the end of the
        # interval (where eta -> 0 is singular): evaluate such probes at the nearest end.
        c_eval = min(max(float(c), lo), hi)
        t, eta = var.inverse(c_eval, schedule)
        alpha = float(schedule.alpha(t)) if var.needs_alpha else 1.0
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

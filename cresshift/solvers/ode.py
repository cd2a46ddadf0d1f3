"""Euler and Heun for the probability-flow ODE (the paper's solvers), in a chosen variable."""
from __future__ import annotations

import warnings
from typing import Optional, Union

import numpy as np
import torch

from ..schedules import ContinuousSchedule
from .base import Callback, CountingDenoiser, Variable, as_variable

__all__ = ["sample_euler", "sample_heun", "grid_tables", "UnstableStepWarning", "heun_noise_factors"]


class UnstableStepWarning(UserWarning):
    """A Heun step that multiplies the prior-noise part of x by more than 1 (the exact flow shrinks it)."""


def grid_tables(schedule: ContinuousSchedule, ts: np.ndarray, variable: Variable,
                need_alpha_at: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """eta, alpha and the integration coordinate at every grid time (float64).

    Raises if the t variable would need alpha where the schedule's alpha is not finite.
    """
    etas = schedule.eta(np.asarray(ts, np.float64))
    alphas = np.ones_like(etas)
    if variable.needs_alpha:
        alphas = schedule.alpha(np.asarray(ts, np.float64))
        idx = np.arange(len(ts)) if need_alpha_at is None else need_alpha_at
        bad = ~np.isfinite(alphas[idx])
        if bad.any():
            raise ValueError(
                f"variable={variable.name!r} needs a finite alpha(t), but {type(schedule).__name__}'s alpha diverges at "
                f"t = {float(np.asarray(ts)[idx][bad][0]):.6g}; use variable='eta' or 'sigma' (the same ODE)")
    return etas, alphas, variable.coords(ts, etas, schedule.kappa)


def sample_euler(model: CountingDenoiser, x: torch.Tensor, y: torch.Tensor, schedule: ContinuousSchedule,
                 ts: np.ndarray, *, variable: Union[str, Variable] = "t", callback: Optional[Callback] = None) -> torch.Tensor:
    """Euler's method over the grid ``ts`` (1 -> 1/T), then x0_hat at 1/T. Order 1; NFE = len(ts)."""
    var = as_variable(variable)
    n = len(ts)
    etas, alphas, coords = grid_tables(schedule, ts, var, need_alpha_at=np.arange(n - 1))
    z = var.to_state(x, y, etas[0])
    for i in range(n - 1):
        x = var.from_state(z, y, etas[i])
        x0_hat = model(x, ts[i], step=i)
        if callback is not None:
            callback(dict(i=i, t=float(ts[i]), x=x, x0_hat=x0_hat))
        # Euler step.
        d = var.derivative(z, x0_hat, y, etas[i], alphas[i], coords[i])
        z = z + (coords[i + 1] - coords[i]) * d
    # The output is the denoiser's estimate at t_min.
    x = var.from_state(z, y, etas[-1])
    return model(x, ts[-1], step=n - 1)


def heun_noise_factors(etas: np.ndarray, alphas: np.ndarray, coords: np.ndarray,
                       variable: Variable) -> tuple[np.ndarray, np.ndarray]:
    """Per step, the factor by which Heun multiplies the noise part of x, and the exact flow's factor.

    The part n = kappa sqrt(eta) z of x_t obeys a linear ODE in the integration coordinate c,
    dn/dc = k n, with k = alpha / (2 eta) in t and 1 / (2 eta) in eta; in sqrt_eta (k = 1 / u)
    and in sigma (the state's noise is sigma~ z, k = 1 / sigma~) it is proportional to c, so
    Heun is exact there. Heun's trapezoid multiplies it by 1 + h/2 (k0 + k1 (1 + h k0)); the
    flow by sqrt(eta1 / eta0). A step with |factor| > 1 grows the noise the network then has to
    remove: near eta(1/T) the eta variable is stiff (cresshift/bundled/README.md).
    """
    etas = np.asarray(etas, np.float64)
    coords = np.asarray(coords, np.float64)
    k = variable.noise_rate(etas, np.asarray(alphas, np.float64), coords)
    h = np.diff(coords)
    heun = 1 + h / 2 * (k[:-1] + k[1:] * (1 + h * k[:-1]))
    scale = variable.state_scale(etas)  # the state's noise part back to x's
    heun = heun * scale[1:] / scale[:-1]
    return heun, np.sqrt(etas[1:] / etas[:-1])


def sample_heun(model: CountingDenoiser, x: torch.Tensor, y: torch.Tensor, schedule: ContinuousSchedule,
                ts: np.ndarray, *, variable: Union[str, Variable] = "t", callback: Optional[Callback] = None) -> torch.Tensor:
    """Heun's method (explicit trapezoid) over ``ts``, then x0_hat at 1/T. Order 2; NFE = 2(len(ts)-1)+1.

    Warns (:class:`UnstableStepWarning`) when a step would grow the noise part of x
    (:func:`heun_noise_factors`) instead of shrinking it.
    """
    var = as_variable(variable)
    n = len(ts)
    etas, alphas, coords = grid_tables(schedule, ts, var)
    factors, exact = heun_noise_factors(etas, alphas, coords, var)
    bad = np.flatnonzero(np.abs(factors) > 1)
    if bad.size:
        i = int(bad[np.argmax(np.abs(factors[bad]))])
        warnings.warn(f"heun step {i + 1} of {n - 1} (eta {etas[i]:.3g} -> {etas[i + 1]:.3g}, {var.name} variable) "
                      f"multiplies the noise in x by {factors[i]:.2f} where the exact flow gives {exact[i]:.2f}: "
                      "expect a poor result; use more NFE, another rho, an exponential integrator (ddim, dpmpp-2m) "
                      "or variable=sqrt_eta", UnstableStepWarning, stacklevel=2)
    z = var.to_state(x, y, etas[0])
    for i in range(n - 1):
        h = coords[i + 1] - coords[i]
        x = var.from_state(z, y, etas[i])
        x0_hat = model(x, ts[i], step=i)
        if callback is not None:
            callback(dict(i=i, t=float(ts[i]), x=x, x0_hat=x0_hat))
        # Euler predictor.
        d_cur = var.derivative(z, x0_hat, y, etas[i], alphas[i], coords[i])
        z_pred = z + h * d_cur
        # Trapezoid corrector at t_next.
        x_pred = var.from_state(z_pred, y, etas[i + 1])
        x0_pred = model(x_pred, ts[i + 1], step=i)
        d_next = var.derivative(z_pred, x0_pred, y, etas[i + 1], alphas[i + 1], coords[i + 1])
        z = z + h * 0.5 * (d_cur + d_next)
    x = var.from_state(z, y, etas[-1])
    return model(x, ts[-1], step=n - 1)

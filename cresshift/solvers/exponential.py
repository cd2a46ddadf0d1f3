"""Exponential integrators: the ResShift analogue of DDIM and DPM-Solver++ multistep (2M, 3M).

All step exactly along the linear part of the probability-flow ODE. In EDM coordinates
(design §4) ``x~ = (x - y)/(1 - eta)``, ``sigma~ = kappa sqrt(eta)/(1 - eta)``, ``D~ = x0_hat - y``
and ``lambda = -log sigma~`` the ODE is ``dx~/dlambda = D~ - x~``; with ``x0_hat`` held fixed the
step ``x~_t = (sigma~_t/sigma~_s) x~_s + (1 - sigma~_t/sigma~_s) D~`` is exact, which in ResShift
coordinates reads ``x_t = x0 + eta_t (y - x0) + sqrt(eta_t/eta_s)(x_s - x0 - eta_s (y - x0))``.
The multistep methods extrapolate x0_hat from past evaluations (DPM-Solver++, Lu et al. 2022).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..converters import edm_sigma
from ..schedules import ContinuousSchedule
from .base import Callback, CountingDenoiser

__all__ = ["sample_ddim", "sample_dpmpp_2m", "sample_dpmpp_3m", "LAMBDA_VARIABLES"]

LAMBDA_VARIABLES = ("sigma", "eta")


def _lambdas(etas: np.ndarray, kappa: float, lambda_var: str) -> np.ndarray:
    """The log-time the multistep extrapolation is linear in: -log sigma~ or -log sqrt(eta)."""
    if lambda_var == "sigma":
        return -np.log(edm_sigma(etas, kappa))
    if lambda_var == "eta":
        return -0.5 * np.log(etas)
    raise ValueError(f"unknown lambda_var {lambda_var!r}; valid: {', '.join(LAMBDA_VARIABLES)}")


def _exact_step(x: torch.Tensor, x0_eff: torch.Tensor, y: torch.Tensor, eta_s: float, eta_t: float) -> torch.Tensor:
    """x_t = x0 + eta_t (y - x0) + sqrt(eta_t / eta_s) (x_s - x0 - eta_s (y - x0)) with x0 held fixed."""
    ratio = math.sqrt(eta_t / eta_s)
    return x0_eff + eta_t * (y - x0_eff) + ratio * (x - x0_eff - eta_s * (y - x0_eff))


def sample_ddim(model: CountingDenoiser, x: torch.Tensor, y: torch.Tensor, schedule: ContinuousSchedule,
                ts: np.ndarray, *, callback: Optional[Callback] = None) -> torch.Tensor:
    """First-order exponential integrator (DDIM analogue). Order 1; NFE = len(ts); exact for constant x0_hat."""
    etas = schedule.eta(np.asarray(ts, np.float64))
    n = len(ts)
    for i in range(n - 1):
        x0_hat = model(x, ts[i], step=i)
        if callback is not None:
            callback(dict(i=i, t=float(ts[i]), x=x, x0_hat=x0_hat))
        x = _exact_step(x, x0_hat, y, etas[i], etas[i + 1])
    return model(x, ts[-1], step=n - 1)


def sample_dpmpp_2m(model: CountingDenoiser, x: torch.Tensor, y: torch.Tensor, schedule: ContinuousSchedule,
                    ts: np.ndarray, *, lambda_var: str = "eta",
                    callback: Optional[Callback] = None) -> torch.Tensor:
    """DPM-Solver++(2M): x0_hat extrapolated linearly in lambda. Order 2; NFE = len(ts).

    The first step is first order (no history). ``lambda_var`` picks the log-time the
    extrapolation is linear in: ``eta`` (-log sqrt(eta), the default: the most accurate on the
    Gaussian benchmark, benchmarks/solver_accuracy.py) or ``sigma`` (-log sigma~, the
    EDM/k-diffusion choice).
    """
    etas = schedule.eta(np.asarray(ts, np.float64))
    lams = _lambdas(etas, schedule.kappa, lambda_var)
    n = len(ts)
    x0_prev: Optional[torch.Tensor] = None
    for i in range(n - 1):
        x0_hat = model(x, ts[i], step=i)
        if callback is not None:
            callback(dict(i=i, t=float(ts[i]), x=x, x0_hat=x0_hat))
        if x0_prev is None:
            x0_eff = x0_hat
        else:
            # Second-order multistep correction of x0_hat.
            r = (lams[i] - lams[i - 1]) / (lams[i + 1] - lams[i])
            x0_eff = (1 + 1 / (2 * r)) * x0_hat - (1 / (2 * r)) * x0_prev
        x = _exact_step(x, x0_eff, y, etas[i], etas[i + 1])
        x0_prev = x0_hat
    return model(x, ts[-1], step=n - 1)


def sample_dpmpp_3m(model: CountingDenoiser, x: torch.Tensor, y: torch.Tensor, schedule: ContinuousSchedule,
                    ts: np.ndarray, *, callback: Optional[Callback] = None) -> torch.Tensor:
    """DPM-Solver++(3M) in lambda = -log sigma~; NFE = len(ts).

    Third-order steps once two past evaluations exist; the first (first-order) step caps the
    global order at 2, with a smaller error constant than 2M.
    """
    etas = schedule.eta(np.asarray(ts, np.float64))
    sig = edm_sigma(etas, schedule.kappa)
    lams = -np.log(sig)
    n = len(ts)
    z = (x - y) / (1 - etas[0])
    hist: list[torch.Tensor] = []  # past D~ = x0_hat - y, newest last
    for i in range(n - 1):
        x = y + (1 - etas[i]) * z
        x0_hat = model(x, ts[i], step=i)
        if callback is not None:
            callback(dict(i=i, t=float(ts[i]), x=x, x0_hat=x0_hat))
        d = x0_hat - y
        h = lams[i + 1] - lams[i]
        # Exact first-order part.
        z = math.exp(-h) * z - math.expm1(-h) * d
        phi_2 = math.expm1(-h) / h + 1
        if len(hist) >= 2:
            # Third-order correction from two past evaluations.
            r0 = (lams[i] - lams[i - 1]) / h
            r1 = (lams[i - 1] - lams[i - 2]) / h
            d1_0 = (d - hist[-1]) / r0
            d1_1 = (hist[-1] - hist[-2]) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi_3 = phi_2 / h - 0.5
            z = z + phi_2 * d1 - phi_3 * d2
        elif len(hist) == 1:
            # Second-order correction from one past evaluation.
            r = (lams[i] - lams[i - 1]) / h
            z = z + phi_2 * (d - hist[-1]) / r
        hist = (hist + [d])[-2:]
    x = y + (1 - etas[-1]) * z
    return model(x, ts[-1], step=n - 1)

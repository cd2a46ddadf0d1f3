"""Tuned exponential multistep (solver ``tuned``): DPM-Solver++(2M)'s step with coefficients fitted per model.

In EDM coordinates (design §4) ``x~ = (x - y)/(1 - eta)``, ``lambda = -log sigma~`` and
``D~ = x0_hat - y`` every step integrates the linear part of ``dx~/dlambda = D~ - x~`` exactly
and holds a combination of the evaluations so far fixed over the step:

    x~_{i+1} = e^{-h_i} x~_i + (1 - e^{-h_i}) (D~_i + sum_j c_ij (D~_j - D~_i)),   h_i = lambda_{i+1} - lambda_i,

with j over the ``HISTORY`` evaluations before i. The output is the last evaluation corrected
by the ones before it, ``x0_hat_n + sum_j b_j (x0_hat_j - x0_hat_n)``. With the default
coefficients (``default_coefficients``: ``c_{i,i-1} = -h_i / (2 h_{i-1})``, every other c and
b zero) this is exactly DPM-Solver++(2M) in lambda = -log sigma~ (``dpmpp-2m`` with
``lambda_var="sigma"``), order 2. ``cresshift.solvers.optimize.optimize_solver`` fits the
coefficients together with the grid on calibration samples against a converged reference,
the data-dependent counterpart of optimising the grid alone (the idea of learned multistep
solvers: S4S, Frankel et al. 2025; bespoke solvers, Shaul et al. 2024). Tuned coefficients
belong to the grid they were fitted on: a grid file or stored grid made by
``cresshift optimize-grid --solver tuned`` carries both.

Coefficient vector layout for a grid of n points (s = n - 1 steps): for each step i = 1 .. s - 1
the c_ij of j = max(0, i - HISTORY) .. i - 1, then the b_j of j = max(0, s - HISTORY) .. s - 1.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from ..converters import edm_sigma
from ..grids import GridRequest, load_grid_record
from ..schedules import ContinuousSchedule
from .base import Callback, Chain, CountingDenoiser
from .registry import Schedule, SolverSpec, fixed_grid_chain

__all__ = ["sample_tuned", "run_tuned", "tuned_chain", "default_coefficients", "coefficient_count",
           "check_coefficients", "HISTORY"]

HISTORY = 4  # past evaluations a step (and the output) may combine


def _pairs(n: int) -> tuple[list[tuple[int, int]], list[int]]:
    """((step i, evaluation j) of every c_ij, [j of every b_j]) for a grid of n points."""
    steps = n - 1
    c = [(i, j) for i in range(steps) for j in range(max(0, i - HISTORY), i)]
    return c, list(range(max(0, steps - HISTORY), steps))


def coefficient_count(n: int) -> int:
    """How many coefficients a grid of ``n`` points takes."""
    c, b = _pairs(n)
    return len(c) + len(b)


def _lambdas(ts: np.ndarray, schedule: ContinuousSchedule) -> np.ndarray:
    etas = np.asarray(schedule.eta(np.asarray(ts, np.float64)), np.float64)
    return -np.log(edm_sigma(etas, float(schedule.kappa)))


def default_coefficients(ts: Sequence[float], schedule: ContinuousSchedule) -> np.ndarray:
    """The coefficients that make ``tuned`` DPM-Solver++(2M) in lambda = -log sigma~ on grid ``ts``."""
    lam = _lambdas(np.asarray(ts, np.float64), schedule)
    c, b = _pairs(len(ts))
    out = np.zeros(len(c) + len(b))
    for k, (i, j) in enumerate(c):
        if j == i - 1:
            out[k] = -(lam[i + 1] - lam[i]) / (2 * (lam[i] - lam[i - 1]))
    return out


def check_coefficients(coefficients: Any, n: Optional[int] = None) -> Optional[np.ndarray]:
    """The coefficients as float64 (None stays None); one-line ValueError for a wrong type, length or value."""
    if coefficients is None:
        return None
    try:
        arr = np.asarray(coefficients, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"tuned coefficients must be a list of numbers, got {str(coefficients)[:60]}") from None
    if arr.ndim != 1 or not np.all(np.isfinite(arr)):
        raise ValueError("tuned coefficients must be a flat list of finite numbers")
    if n is not None and len(arr) != coefficient_count(n):
        raise ValueError(f"a grid of {n} points takes {coefficient_count(n)} tuned coefficients, got {len(arr)}; "
                         "tune them for this grid (cresshift optimize-grid --solver tuned) or leave them out")
    return arr


def check_options(options: Mapping[str, Any]) -> None:
    """The registry's option check: coefficients, when given, are finite numbers."""
    check_coefficients(options.get("coefficients"))


def tuned_chain(spec: SolverSpec, schedule: Schedule, nfe: Optional[int], grid: GridRequest = None,
                rho: Optional[float] = None) -> Chain:
    """``fixed_grid_chain``, plus the coefficients a tuned grid record (a grid file or a parsed record) carries."""
    chain = fixed_grid_chain(spec, schedule, nfe, grid, rho)
    record: Any = None
    if isinstance(grid, Mapping):
        record = grid
    elif isinstance(grid, (str, Path)) and Path(grid).is_file():
        record = load_grid_record(grid)
    if record is not None and record.get("coefficients") is not None:
        chain.kwargs["grid_coefficients"] = record["coefficients"]
    return chain


def sample_tuned(model: CountingDenoiser, x: torch.Tensor, y: torch.Tensor, schedule: ContinuousSchedule,
                 ts: np.ndarray, *, coefficients: Any = None, grid_coefficients: Any = None,
                 callback: Optional[Callback] = None) -> torch.Tensor:
    """Tuned multistep over ``ts``, then the corrected x0_hat at 1/T; NFE = len(ts).

    ``coefficients`` (the option) or else ``grid_coefficients`` (carried by a tuned grid record)
    or else ``default_coefficients`` (DPM-Solver++(2M) in lambda = -log sigma~).
    """
    n = len(ts)
    given = coefficients if coefficients is not None else grid_coefficients
    coef = check_coefficients(given, n) if given is not None else default_coefficients(ts, schedule)
    return run_tuned(model, x, y, schedule, ts, torch.as_tensor(coef), callback=callback)


def run_tuned(model: Any, x: torch.Tensor, y: torch.Tensor, schedule: ContinuousSchedule, ts: np.ndarray,
              coef: torch.Tensor, *, callback: Optional[Callback] = None) -> torch.Tensor:
    """The tuned steps with coefficients as a tensor (differentiable in them, for fitting)."""
    etas = np.asarray(schedule.eta(np.asarray(ts, np.float64)), np.float64)
    lam = _lambdas(ts, schedule)
    pairs, out_pairs = _pairs(len(ts))
    coef = coef.to(device=x.device, dtype=x.dtype)
    z = (x - y) / (1 - etas[0])
    hist: list[Optional[torch.Tensor]] = []  # D~ of every evaluation so far (None once no step needs it)
    k = 0
    for i in range(len(ts) - 1):
        x = y + (1 - etas[i]) * z
        x0_hat = model(x, ts[i], step=i)
        if callback is not None:
            callback(dict(i=i, t=float(ts[i]), x=x, x0_hat=x0_hat))
        hist.append(x0_hat - y)
        d = hist[-1]
        while k < len(pairs) and pairs[k][0] == i:  # this step's history corrections
            d = d + coef[k] * (hist[pairs[k][1]] - hist[-1])  # type: ignore[operator]
            k += 1
        h = lam[i + 1] - lam[i]
        z = math.exp(-h) * z - math.expm1(-h) * d
        if i >= HISTORY:
            hist[i - HISTORY] = None  # outside every later step's (and the output's) history
    x = y + (1 - etas[-1]) * z
    final = model(x, ts[-1], step=len(ts) - 1)
    out = final
    for m, j in enumerate(out_pairs):  # the output's correction by earlier evaluations
        out = out + coef[len(pairs) + m] * (hist[j] + y - final)  # type: ignore[operator]
    return out

"""Solvers for ResShift's reverse process, one registry, one entry point: ``sample``.

Every solver is a plain function over an explicit, decreasing time grid ``ts`` (1 -> 1/T)
and ends with one evaluation of x0_hat at t = 1/T, which is its output (design §7).
``SOLVERS`` holds one ``SolverSpec`` per solver with everything ``sample`` needs.

| solver     | order | NFE for a grid of n points | notes |
|------------|-------|----------------------------|-------|
| markov     | -     | S (chain steps, <= T)      | the official ancestral sampler, official respacing |
| euler      | 1     | n                          | the paper; variable t / eta / sqrt_eta / sigma |
| heun       | 2     | 2(n-1) + 1                 | the paper; variable t / eta / sqrt_eta / sigma |
| ddim       | 1     | n                          | exact exponential step, exact for constant x0_hat |
| dpmpp-2m   | 2     | n                          | DPM-Solver++(2M) multistep |
| dpmpp-3m   | 3     | n                          | DPM-Solver++(3M) multistep |
| ipndm      | 4     | n                          | iPNDM: Adams–Bashforth with first-order warm-up (global order 2) |
| tuned      | 2     | n                          | DPM-Solver++(2M) step with coefficients fitted per model (optimize_solver) |
| sde        | 1/2   | n                          | reverse-SDE Euler–Maruyama, noise in [0, 1] |
| adaptive   | 5     | adaptive (counted)         | torchdiffeq dopri5 reference, rtol/atol |
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..grids import GridChoice, GridRequest, check_rho
from ..schedules import ContinuousSchedule, ResShiftSchedule
from .adaptive import adaptive_chain, sample_adaptive
from .base import BudgetExceeded, Callback, CountingDenoiser, Denoiser, NonFiniteError, SampleResult
from .exponential import sample_ddim, sample_dpmpp_2m, sample_dpmpp_3m
from .markov import markov_chain, sample_markov
from .multistep import sample_ipndm
from .ode import sample_euler, sample_heun
from .registry import Schedule, SolverSpec
from .sde import check_noise, sample_sde
from .tuned import check_options as check_tuned_options
from .tuned import sample_tuned, tuned_chain

__all__ = ["sample", "SOLVERS", "SolverSpec", "check_solver_options", "SampleResult", "Denoiser", "NonFiniteError",
           "BudgetExceeded", "grid_for", "sample_markov", "sample_euler", "sample_heun", "sample_ddim",
           "sample_dpmpp_2m", "sample_dpmpp_3m", "sample_ipndm", "sample_tuned", "sample_sde", "sample_adaptive"]


def _variable_default(schedule: ContinuousSchedule) -> dict[str, Any]:
    return {"variable": schedule.default_variable}


def _auto(default: GridChoice, exact: GridChoice, exact_above: Optional[tuple[int, GridChoice]] = None) -> dict:
    """grid="auto": ``default`` on smooth schedules; on the exact schedule ``exact`` (up to an NFE, then another)."""
    rule_exact = ((None, exact),) if exact_above is None else ((exact_above[0], exact), (None, exact_above[1]))
    return {"default": ((None, default),), "exact": rule_exact}


# grid="auto", measured with benchmarks/solver_accuracy.py on the Gaussian and Gaussian-mixture
# problems (benchmarks/solver_accuracy_results.md, "What changed and why"): per solver, schedule kind
# and NFE the fixed grid with the smallest geometric mean over the two problems of its error over
# the best fixed grid's, except where that grid loses the order the solver has on smooth grids at
# large NFE (a rho grid in t on the exact schedule, whose eta(t) ~ (t - 1/T)^0.3: there a
# log-eta-spaced grid, which keeps it).
RHO1, RHO2, RHO4, RHO7 = (GridChoice("rho", rho) for rho in (1.0, 2.0, 4.0, 7.0))
LAMBDA, LOG_ETA = GridChoice("lambda"), GridChoice("logeta")
LOG_ETA_15, LOG_ETA_2 = GridChoice("logeta", 1.5), GridChoice("logeta", 2.0)
# NFE up to which: a rho grid beats the log-eta ones (heun, dpmpp-2m); logeta rho=2 beats rho=1.5 (dpmpp-3m)
HEUN_SWITCH, DPMPP_2M_SWITCH, DPMPP_3M_SWITCH = 19, 6, 30
_AUTO_FIRST = _auto(RHO1, RHO2)

SOLVERS: dict[str, SolverSpec] = {s.name: s for s in [
    SolverSpec("markov", sample_markov, 0, 1, min_points=1, stochastic=True, chain=markov_chain,
               description="official ResShift ancestral sampler (official respacing for NFE < T)"),
    SolverSpec("euler", sample_euler, 1, 1, option_names=("variable",), defaults=_variable_default,
               auto=_AUTO_FIRST, description="Euler on the probability-flow ODE (the paper)"),
    SolverSpec("heun", sample_heun, 2, 2, option_names=("variable",), defaults=_variable_default,
               auto=_auto(RHO2, RHO2, (HEUN_SWITCH, LOG_ETA_15)), description="Heun on the probability-flow ODE (the paper)"),
    SolverSpec("ddim", sample_ddim, 1, 1, auto=_AUTO_FIRST,
               description="exact first-order exponential step (DDIM analogue)"),
    SolverSpec("dpmpp-2m", sample_dpmpp_2m, 2, 1, option_names=("lambda_var",),
               auto=_auto(RHO4, RHO7, (DPMPP_2M_SWITCH, LOG_ETA)),
               description="DPM-Solver++(2M) multistep exponential integrator"),
    SolverSpec("dpmpp-3m", sample_dpmpp_3m, 3, 1, auto=_auto(LOG_ETA_2, LOG_ETA_2, (DPMPP_3M_SWITCH, LOG_ETA_15)),
               description="DPM-Solver++(3M) multistep exponential integrator"),
    SolverSpec("ipndm", sample_ipndm, 4, 1, option_names=("variable", "order"), auto=_auto(LOG_ETA_2, LOG_ETA_2),
               description="iPNDM: variable-step Adams–Bashforth with lower-order warm-up"),
    SolverSpec("tuned", sample_tuned, 2, 1, option_names=("coefficients",), chain=tuned_chain,
               auto=_auto(LOG_ETA_2, LOG_ETA_2), check=check_tuned_options,
               description="exponential multistep with coefficients fitted per model (default: DPM-Solver++(2M))"),
    SolverSpec("sde", sample_sde, 0.5, 1, stochastic=True, option_names=("noise",), auto=_AUTO_FIRST,
               check=lambda options: check_noise(options.get("noise", 1.0)),
               description="reverse-SDE Euler–Maruyama in eta (noise=0 is the ODE)"),
    SolverSpec("adaptive", sample_adaptive, 5, 0, chain=adaptive_chain,
               option_names=("rtol", "atol", "method", "variable"), defaults=lambda s: {"variable": "eta"},
               budget_hint=": raise nfe or loosen the tolerances rtol/atol",
               description="torchdiffeq dopri5 reference integrator (NFE set by rtol/atol)"),
]}


def _spec(solver: str) -> SolverSpec:
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; valid solvers: {', '.join(SOLVERS)}")
    return SOLVERS[solver]


def grid_for(solver: str, schedule: Schedule, nfe: Optional[int], rho: Optional[float] = None,
             grid: GridRequest = None) -> np.ndarray:
    """The decreasing time grid ``solver`` uses for an NFE budget and a grid request (markov: its chain times)."""
    return _spec(solver).grid(schedule, nfe, rho=rho, grid=grid)


def check_solver_options(solver: str, options: dict[str, Any]) -> None:
    """ValueError for an option ``solver`` does not take or a value it refuses (before any network call)."""
    _spec(solver).check_options(options)


def _check_inputs(y: torch.Tensor, x_T: Optional[torch.Tensor], schedule: Schedule, nfe: Optional[int],
                  rho: Optional[float], grid: GridRequest, ts: Optional[Sequence[float]]) -> None:
    """One ValueError line for inputs no solver can take."""
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        raise ValueError("y must be a floating-point torch tensor [B, C, H, W]")
    if x_T is not None and x_T.shape != y.shape:
        raise ValueError(f"x_T has shape {tuple(x_T.shape)} but y has {tuple(y.shape)}; they must match")
    if not isinstance(schedule, (ResShiftSchedule, ContinuousSchedule)):
        raise ValueError(f"schedule must be a ResShiftSchedule or a continuous schedule, got {type(schedule).__name__}")
    if rho is not None:
        check_rho(rho)
    if nfe is not None and (int(nfe) != nfe or nfe < 1):
        raise ValueError(f"nfe must be a positive integer, got {nfe}")
    if ts is not None and (grid is not None or rho is not None):
        raise ValueError("ts is an explicit grid: pass ts, or grid/rho, not both")


def sample(denoiser: Denoiser, y: torch.Tensor, schedule: Schedule, *, solver: str, nfe: Optional[int],
           rho: Optional[float] = None, grid: GridRequest = None, x_T: Optional[torch.Tensor] = None,
           generator: Optional[torch.Generator] = None, ts: Optional[Sequence[float]] = None,
           callback: Optional[Callback] = None, defer_finite_check: bool = False, **options: Any) -> SampleResult:
    """Sample x0 given the shift target ``y`` with any registered solver, within ``nfe`` network calls.

    ``nfe`` is the budget: the solver takes the largest grid (design §6) whose NFE (design §7)
    fits, and ``SampleResult.nfe`` reports the calls made. ``grid``: ``"rho"`` (the paper's rho
    grid in t; giving ``rho`` alone means this), ``"lambda"``, ``"karras"``, ``"logeta"``, ``"auto"`` (the
    default without rho or ts: the solver's measured best grid for the schedule), a grid file,
    a parsed grid record (the ``tuned`` solver takes its coefficients from either) or an array;
    ``ts`` an explicit decreasing grid (1 -> 1/T). Without ``x_T`` the prior
    ``x_T = y + kappa sqrt(eta(t_0)) z`` is drawn with ``torch.randn(y.shape, generator=...)``;
    stochastic solvers then draw one such tensor per step, in step order. A discrete
    ``ResShiftSchedule`` is continued exactly (``ExactSchedule``) for ODE/SDE solvers.
    ``callback(dict(i, t, x, x0_hat))`` is called before every step. Extra keyword options go
    to the solver (``SOLVERS[solver].options()``); unknown ones raise. ``defer_finite_check=True``
    checks the outputs for NaN/Inf once after the loop instead of after every call (no host sync
    per step on a GPU).
    """
    spec = _spec(solver)
    _check_inputs(y, x_T, schedule, nfe, rho, grid, ts)
    kwargs = spec.solver_options(schedule, options)
    chain = spec.chain(spec, schedule, nfe, ts if ts is not None else grid, rho)
    if x_T is None:
        z = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
        x_T = y + torch.tensor(float(schedule.kappa) * math.sqrt(chain.eta_start), dtype=y.dtype, device=y.device) * z
    model = CountingDenoiser(denoiser, budget=nfe, defer_finite_check=defer_finite_check)
    noise = {"generator": generator} if spec.stochastic else {}
    try:
        x = spec.fn(model, x_T, y, callback=callback, **chain.kwargs, **noise, **kwargs)
    except BudgetExceeded as err:
        model.check_finite()  # a NaN is the cause, if there was one
        raise ValueError(f"{solver} needed more than nfe={nfe} network calls{spec.budget_hint}") from err
    model.check_finite()
    return SampleResult(x=x, nfe=model.calls, ts=chain.ts, solver=solver, options=kwargs)

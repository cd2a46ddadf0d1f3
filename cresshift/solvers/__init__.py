"""Solvers for ResShift's reverse process, one registry, one entry point: ``sample``.

Every solver is a plain function over an explicit, decreasing time grid ``ts`` (1 -> 1/T)
and ends with one evaluation of x0_hat at t = 1/T, which is its output (design §7).

| solver     | order | NFE for a grid of n points | notes |
|------------|-------|----------------------------|-------|
| markov     | -     | S (chain steps, <= T)      | the official ancestral sampler, official respacing |
| euler      | 1     | n                          | the paper; variable t / eta / sigma |
| heun       | 2     | 2(n-1) + 1                 | the paper; variable t / eta / sigma |
| ddim       | 1     | n                          | exact exponential step, exact for constant x0_hat |
| dpmpp-2m   | 2     | n                          | DPM-Solver++(2M) multistep |
| dpmpp-3m   | 3     | n                          | DPM-Solver++(3M) multistep |
| sde        | 1/2   | n                          | reverse-SDE Euler–Maruyama, noise in [0, 1] |
| adaptive   | 5     | adaptive (counted)         | torchdiffeq dopri5 reference, rtol/atol |
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from ..grids import rho_grid
from ..schedules import ContinuousSchedule, ResShiftSchedule, as_continuous
from .adaptive import sample_adaptive
from .base import (BudgetExceeded, Callback, CountingDenoiser, Denoiser, NonFiniteError, SampleResult,
                   Variable)
from .exponential import sample_ddim, sample_dpmpp_2m, sample_dpmpp_3m
from .markov import sample_markov
from .ode import sample_euler, sample_heun
from .sde import sample_sde

__all__ = ["sample", "SOLVERS", "SolverSpec", "SampleResult", "Denoiser", "NonFiniteError",
           "BudgetExceeded", "grid_for", "sample_markov", "sample_euler", "sample_heun", "sample_ddim",
           "sample_dpmpp_2m", "sample_dpmpp_3m", "sample_sde", "sample_adaptive"]

Schedule = Union[ResShiftSchedule, ContinuousSchedule]


@dataclass(frozen=True)
class SolverSpec:
    """A registered solver: its function, order, and how grid size and NFE relate."""

    name: str
    fn: Callable[..., torch.Tensor]
    order: float
    evals_per_step: int  # network calls per grid step (the final x0_hat call is one more)
    min_points: int = 2
    stochastic: bool = False
    description: str = ""

    def points_for_nfe(self, nfe: int) -> int:
        """The largest grid whose NFE (evals_per_step (n - 1) + 1) is within ``nfe``."""
        return (nfe - 1) // self.evals_per_step + 1

    def nfe_for_points(self, n: int) -> int:
        return self.evals_per_step * (n - 1) + 1

    @property
    def min_nfe(self) -> int:
        return self.nfe_for_points(self.min_points)

    def options(self) -> list[str]:
        """Keyword options the solver function accepts (beyond the common ones)."""
        common = {"model", "x", "y", "schedule", "ts", "callback", "generator", "etas", "kappa"}
        return [p for p in inspect.signature(self.fn).parameters if p not in common]


SOLVERS: dict[str, SolverSpec] = {s.name: s for s in [
    SolverSpec("markov", sample_markov, 0, 1, min_points=1, stochastic=True,
               description="official ResShift ancestral sampler (official respacing for NFE < T)"),
    SolverSpec("euler", sample_euler, 1, 1, description="Euler on the probability-flow ODE (the paper)"),
    SolverSpec("heun", sample_heun, 2, 2, description="Heun on the probability-flow ODE (the paper)"),
    SolverSpec("ddim", sample_ddim, 1, 1, description="exact first-order exponential step (DDIM analogue)"),
    SolverSpec("dpmpp-2m", sample_dpmpp_2m, 2, 1, description="DPM-Solver++(2M) multistep exponential integrator"),
    SolverSpec("dpmpp-3m", sample_dpmpp_3m, 3, 1, description="DPM-Solver++(3M) multistep exponential integrator"),
    SolverSpec("sde", sample_sde, 0.5, 1, stochastic=True,
               description="reverse-SDE Euler–Maruyama in eta (noise=0 is the ODE)"),
    SolverSpec("adaptive", sample_adaptive, 5, 0,
               description="torchdiffeq dopri5 reference integrator (NFE set by rtol/atol)"),
]}


def _spec(solver: str) -> SolverSpec:
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; valid solvers: {', '.join(SOLVERS)}")
    return SOLVERS[solver]


def _markov_chain(schedule: Schedule, nfe: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(etas ascending, ts ascending, kappa) of the official chain, respaced to ``nfe`` steps."""
    if isinstance(schedule, ResShiftSchedule):
        table, T, kappa = schedule.etas, schedule.T, schedule.kappa
        kept = schedule.respaced_indices(nfe) if 1 <= nfe <= T else None
    else:
        table, T, kappa = schedule.step_etas(), schedule.T, schedule.kappa
        kept = sorted({int(T / nfe * i) for i in range(nfe)}) if 1 <= nfe <= T else None
    if kept is None:
        raise ValueError(f"markov runs the trained chain of T={T} steps: nfe must be between 1 and {T}, got {nfe}")
    kept_arr = np.asarray(kept)
    return table[kept_arr], (kept_arr + 1) / T, kappa


def grid_for(solver: str, schedule: Schedule, nfe: Optional[int], rho: float = 1.0) -> np.ndarray:
    """The decreasing time grid ``solver`` uses for an NFE budget (for markov: the kept chain times)."""
    spec = _spec(solver)
    if solver == "markov":
        if nfe is None:
            raise ValueError("markov needs nfe (the number of chain steps)")
        return _markov_chain(schedule, nfe)[1][::-1].copy()
    t_min = 1.0 / schedule.T
    if solver == "adaptive":
        return np.array([1.0, t_min])
    if nfe is None:
        raise ValueError(f"solver {solver!r} needs an nfe budget")
    if nfe < spec.min_nfe:
        raise ValueError(f"solver {solver!r} needs nfe >= {spec.min_nfe}, got nfe={nfe}")
    return rho_grid(spec.points_for_nfe(nfe), rho, t_min)


def sample(denoiser: Denoiser, y: torch.Tensor, schedule: Schedule, *, solver: str, nfe: Optional[int],
           rho: float = 1.0, x_T: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
           ts: Optional[Sequence[float]] = None, callback: Optional[Callback] = None,
           defer_finite_check: bool = False, **solver_options: Any) -> SampleResult:
    """Sample x0 given the shift target ``y`` with any registered solver, within ``nfe`` network calls.

    ``nfe`` is the budget: the solver takes the largest rho-spaced grid (design §6) whose NFE
    (design §7) fits, and ``SampleResult.nfe`` reports the calls actually made. ``ts`` passes
    an explicit decreasing grid instead (from 1 down to 1/T). Without ``x_T`` the prior
    ``x_T = y + kappa sqrt(eta(t_0)) z`` is drawn with ``torch.randn(y.shape, generator=...)``
    (t_0 = 1, or for markov with nfe < T the top of the officially respaced chain); stochastic
    solvers then draw one such tensor per step, in step order. A discrete ``ResShiftSchedule``
    is continued exactly (``ExactSchedule``) for ODE/SDE solvers; ``markov`` on a continuous
    schedule runs the chain on eta(k/T). ``callback(dict(i, t, x, x0_hat))`` is called before
    every step. Extra keyword options go to the solver (``variable``, ``lambda_var``, ``noise``,
    ``rtol``, ``atol`` ...); unknown ones raise. ``defer_finite_check=True`` checks the outputs for
    NaN/Inf once after the loop instead of after every call (no host sync per step on a GPU).
    """
    spec = _spec(solver)
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        raise ValueError("y must be a floating-point torch tensor [B, C, H, W]")
    if x_T is not None and x_T.shape != y.shape:
        raise ValueError(f"x_T has shape {tuple(x_T.shape)} but y has {tuple(y.shape)}; they must match")
    if not isinstance(schedule, (ResShiftSchedule, ContinuousSchedule)):
        raise ValueError(f"schedule must be a ResShiftSchedule or a continuous schedule, got {type(schedule).__name__}")
    if rho == 0 or not math.isfinite(rho):
        raise ValueError(f"rho must be a finite non-zero number (rho=1 is uniform), got rho={rho}")
    if nfe is not None and (int(nfe) != nfe or nfe < 1):
        raise ValueError(f"nfe must be a positive integer, got {nfe}")
    unknown = set(solver_options) - set(spec.options())
    if unknown:
        raise ValueError(f"solver {solver!r} does not take {', '.join(sorted(unknown))}; "
                         f"its options are: {', '.join(spec.options()) or 'none'}")
    if "variable" in spec.options() and solver_options.get("variable") is None:
        cont = as_continuous(schedule)
        solver_options["variable"] = "eta" if solver == "adaptive" else cont.default_variable

    # The grid and the kwargs the solver function needs.
    kwargs: dict[str, Any] = dict(solver_options)
    if solver == "markov":
        if ts is not None:
            raise ValueError("markov runs on the trained chain; it takes nfe, not an explicit ts grid")
        etas, t_chain, kappa = _markov_chain(schedule, int(nfe) if nfe is not None else -1)
        grid = t_chain[::-1].copy()
        eta_start = float(etas[-1])
        kwargs.update(etas=etas, ts=t_chain, kappa=kappa, generator=generator)
    else:
        cont = as_continuous(schedule)
        if ts is not None:
            grid = np.asarray(ts, dtype=np.float64)
            if grid.ndim != 1 or len(grid) < spec.min_points or not np.all(np.diff(grid) < 0):
                raise ValueError(f"ts must be a strictly decreasing 1-D grid of at least {spec.min_points} times")
            if not (grid[-1] > 0 and grid[0] <= 1):
                raise ValueError("ts must lie in (0, 1]")
            if nfe is not None and solver != "adaptive" and spec.nfe_for_points(len(grid)) > nfe:
                raise ValueError(f"a grid of {len(grid)} points costs {spec.nfe_for_points(len(grid))} NFE "
                                 f"with {solver!r}, over the budget nfe={nfe}")
        else:
            grid = grid_for(solver, cont, nfe, rho)
        eta_start = float(cont.eta(float(grid[0])))
        kwargs.update(schedule=cont, ts=grid)
        if spec.stochastic:
            kwargs["generator"] = generator

    if x_T is None:
        z = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
        x_T = y + torch.tensor(float(schedule.kappa) * math.sqrt(eta_start), dtype=y.dtype, device=y.device) * z

    model = CountingDenoiser(denoiser, budget=nfe, defer_finite_check=defer_finite_check)
    try:
        x = spec.fn(model, x_T, y, callback=callback, **kwargs)
    except BudgetExceeded as err:
        model.check_finite()  # a NaN is the cause, if there was one
        if solver == "adaptive":
            raise ValueError(f"adaptive needed more than nfe={nfe} network calls at rtol/atol "
                             f"{kwargs.get('rtol', 1e-5)}/{kwargs.get('atol', 1e-5)}: raise nfe or loosen the tolerances") from err
        raise  # pragma: no cover - fixed-grid solvers never exceed their budget
    model.check_finite()
    return SampleResult(x=x, nfe=model.calls, ts=grid, solver=solver,
                        options={k: v for k, v in solver_options.items()})


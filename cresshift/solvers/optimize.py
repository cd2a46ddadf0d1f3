"""Time grids optimised per model, solver and NFE against a converged reference (design §6b).

``optimize_grid`` searches the decreasing grids 1 -> 1/T that a solver can afford within an
NFE budget for the one whose output is closest (RMS) to a converged reference solution of
the same probability-flow ODE from the same x_T, on calibration samples.

Parametrisation: a grid of n points is held as its n - 1 increments in ``-log eta`` (default,
``space="logeta"``; or in the log-SNR ``lambda = -log sigma~``, design §4), written as a
softmax of n - 1 logits of which the last is fixed to 0. Every real vector of n - 2 logits
is a valid grid: strictly decreasing in t (the increments are positive), exact endpoints
(the increments sum to the whole range), mapped to t through the schedule's exact inverse;
so the search is unconstrained and never proposes an invalid grid. log eta is the coordinate
in which the best fixed grids are simple (``cresshift.grids.log_eta_grid``).

Search: every starting grid (the solver's auto grid, uniform in lambda, karras, the graded
log-eta grids and rho grids in t; or the caller's ``start``) is evaluated, and Nelder–Mead
(scipy) runs from each of the ``restarts`` best of them (multi-start against local minima;
each search gets an equal share of the budget). A global search over grids of the same size
reaches the same calibration error on the analytic problems (benchmarks/solver_accuracy_results.md),
so this local multi-start search is enough. The objective is the target metric itself (RMS to the
converged output).
Why derivative-free search and not dynamic programming over a fine candidate grid: a DP adds up one-step (local) errors and
so needs a solver whose step depends only on its two ends; multistep solvers (dpmpp-2m/3m, ipndm)
carry history and every solver's local errors propagate differently along the trajectory.
Evaluating the whole sampler measures the quantity asked for (the global error of the output)
for every registered ODE solver alike, and at NFE <= 8 there are at most 6 free logits, where
Nelder–Mead converges in tens to a few hundred sampler runs. The best grid seen is returned,
so the result is never worse on the calibration samples than any grid the search starts from.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from ..converters import edm_sigma
from ..grids import karras_grid, lambda_grid, log_eta_grid, rho_grid, sigma_to_t
from ..schedules import ContinuousSchedule, ResShiftSchedule, as_continuous
from .base import Denoiser, NonFiniteError

__all__ = ["optimize_grid", "optimize_solver", "fit_coefficients", "grid_error", "reference_output", "prior_sample",
           "lambda_of_t", "t_of_lambda"]

Schedule = Union[ResShiftSchedule, ContinuousSchedule]
Progress = Callable[[int, int], None]
START_RHOS = (1.0, 2.0, 4.0, 7.0, -8.0)  # rho-in-t grids tried as starting points, with the lambda and karras grids
START_LOG_ETA_RHOS = (1.0, 1.5, 2.0, 3.0)  # graded log-eta grids tried as starting points
SPACES = ("logeta", "lambda")


def lambda_of_t(ts: Sequence[float], schedule: ContinuousSchedule) -> np.ndarray:
    """The log-SNR ``lambda = -log sigma~(eta(t))`` at each time (float64)."""
    etas = np.asarray(schedule.eta(np.asarray(ts, np.float64)), np.float64)
    return -np.log(edm_sigma(etas, float(schedule.kappa)))


def t_of_lambda(lams: Sequence[float], schedule: ContinuousSchedule) -> np.ndarray:
    """The times at given log-SNRs (sigma~ = exp(-lambda) through ``cresshift.grids.sigma_to_t``)."""
    return sigma_to_t(np.exp(-np.asarray(lams, np.float64)), schedule)


def _coord(ts: Sequence[float], schedule: ContinuousSchedule, space: str) -> np.ndarray:
    """The coordinate the grid is parametrised in, increasing from t = 1 to t = 1/T: lambda or -log eta."""
    if space == "lambda":
        return lambda_of_t(ts, schedule)
    return -np.log(np.asarray(schedule.eta(np.asarray(ts, np.float64)), np.float64))


def _t_of_coord(c: np.ndarray, schedule: ContinuousSchedule, space: str) -> np.ndarray:
    if space == "lambda":
        return t_of_lambda(c, schedule)
    return np.asarray(schedule.t_of_eta(np.exp(-np.asarray(c, np.float64))), np.float64)


def _encode(ts: np.ndarray, schedule: ContinuousSchedule, space: str = "lambda") -> np.ndarray:
    """The n - 2 logits of a grid (its increments in ``space`` as a softmax, last logit 0)."""
    steps = np.diff(_coord(ts, schedule, space))
    if not np.all(steps > 0):
        raise ValueError("the starting grid is not strictly decreasing in t (increasing in lambda)")
    logits = np.log(steps)
    return logits[:-1] - logits[-1]


def _decode(logits: np.ndarray, ends: tuple[float, float], schedule: ContinuousSchedule,
            space: str = "lambda") -> np.ndarray:
    """The grid (1 -> t_min, exact endpoints) whose increments in ``space`` are softmax([logits, 0])."""
    z = np.concatenate([np.clip(logits, -40.0, 40.0), [0.0]])
    frac = np.exp(z - z.max())
    frac /= frac.sum()
    c0, c1 = ends
    inner = c0 + (c1 - c0) * np.cumsum(frac)[:-1]
    ts = np.concatenate([[1.0], _t_of_coord(inner, schedule, space), [schedule.t_min]])
    ts[0], ts[-1] = 1.0, schedule.t_min
    return ts


def _search_grids(error: Callable[[np.ndarray], float], start: np.ndarray, schedule: ContinuousSchedule,
                  space: str, maxfev: int) -> None:
    """Nelder–Mead from ``start`` over the grids' logits in ``space`` (initial simplex: steps of 0.5 in each
    logit), calling ``error(ts)`` on every grid it proposes; the caller keeps the best."""
    from scipy.optimize import minimize

    ends = tuple(float(c) for c in _coord([1.0, schedule.t_min], schedule, space))
    theta0 = _encode(start, schedule, space)
    simplex = np.vstack([theta0] + [theta0 + 0.5 * np.eye(len(theta0))[j] for j in range(len(theta0))])
    minimize(lambda logits: error(_decode(logits, ends, schedule, space)), theta0, method="Nelder-Mead",
             options=dict(maxfev=maxfev, initial_simplex=simplex, xatol=1e-3, fatol=0.0))


def grid_error(denoiser: Denoiser, y: torch.Tensor, schedule: Schedule, ts: Sequence[float], *, solver: str,
               nfe: int, x_T: torch.Tensor, reference: torch.Tensor, **options: Any) -> float:
    """RMS distance of ``solver``'s output on grid ``ts`` to ``reference`` (inf if the grid is invalid or blows up)."""
    from . import sample

    ts = np.asarray(ts, np.float64)
    if ts.ndim != 1 or not np.all(np.isfinite(ts)) or not np.all(np.diff(ts) < 0):
        return math.inf
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unstable steps show up as a large error
            out = sample(denoiser, y, schedule, solver=solver, nfe=nfe, ts=ts, x_T=x_T, **options).x
    except NonFiniteError:
        return math.inf
    err = float(torch.sqrt(torch.mean((out.double() - reference.double()) ** 2)))
    return err if math.isfinite(err) else math.inf


def _check(solver: str, nfe: int, y: torch.Tensor, x_T: Optional[torch.Tensor]) -> int:
    """The number of grid points ``solver`` affords within ``nfe``; raises on impossible requests."""
    from . import SOLVERS

    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; valid solvers: {', '.join(SOLVERS)}")
    spec = SOLVERS[solver]
    if solver in ("markov", "adaptive") or spec.stochastic:
        fixed = [s for s, sp in SOLVERS.items() if not sp.stochastic and s not in ("markov", "adaptive")]
        raise ValueError(f"optimize_grid optimises the grid of a deterministic fixed-grid ODE solver "
                         f"({', '.join(fixed)}), not {solver!r}")
    if isinstance(nfe, bool) or int(nfe) != nfe or nfe < spec.min_nfe:
        raise ValueError(f"solver {solver!r} needs nfe >= {spec.min_nfe}, got nfe={nfe}")
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        raise ValueError("y must be a floating-point torch tensor (the calibration batch)")
    if x_T is not None and x_T.shape != y.shape:
        raise ValueError(f"x_T has shape {tuple(x_T.shape)} but y has {tuple(y.shape)}; they must match")
    return spec.points_for_nfe(int(nfe))


def prior_sample(y: torch.Tensor, schedule: ContinuousSchedule, generator: Optional[torch.Generator]) -> torch.Tensor:
    """x_T = y + kappa sqrt(eta(1)) z, as ``sample`` draws it (seed 0 without a generator)."""
    schedule = as_continuous(schedule)
    if generator is None:
        generator = torch.Generator(device=y.device).manual_seed(0)
    z = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
    return y + float(schedule.kappa) * math.sqrt(float(schedule.eta(1.0))) * z


def reference_output(denoiser: Denoiser, y: torch.Tensor, schedule: Schedule, x_T: torch.Tensor, *,
                     rtol: float = 1e-6) -> torch.Tensor:
    """The converged output from ``x_T``: adaptive dopri5 at ``rtol`` = ``atol`` (its NFE is not budgeted)."""
    from . import sample

    return sample(denoiser, y, schedule, solver="adaptive", nfe=None, x_T=x_T, rtol=rtol, atol=rtol).x


def optimize_grid(denoiser: Denoiser, y: torch.Tensor, schedule: Schedule, *, solver: str, nfe: int,
                  x_T: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
                  start: Optional[Sequence[float]] = None, reference: Optional[torch.Tensor] = None,
                  reference_rtol: float = 1e-6, max_evals: Optional[int] = None, restarts: int = 3,
                  space: str = "logeta", progress: Optional[Progress] = None, **options: Any) -> np.ndarray:
    """The decreasing grid (1 -> 1/T, exact endpoints) for ``sample(ts=...)`` that minimises ``solver``'s
    RMS error against a converged reference on the calibration batch ``y`` (module docstring: method).

    The grid has the most points ``solver`` affords within ``nfe`` (design §7), so a run on it
    never exceeds the budget. ``x_T`` (default: drawn from ``generator``, seed 0 without one,
    as ``sample`` draws it) is shared by every evaluation and the reference; ``reference`` (the
    converged output from ``x_T``) defaults to adaptive dopri5 at ``reference_rtol``. ``start``
    is the grid the search starts from (default: the solver's ``grid="auto"``, the lambda,
    karras, ``START_LOG_ETA_RHOS`` log-eta and ``START_RHOS`` rho-in-t grids, of which the
    ``restarts`` best on ``y`` each start a Nelder–Mead search); the result is never worse than
    any starting grid on ``y``. ``space`` is the coordinate whose increments are optimised
    (``logeta``: -log eta, default; ``lambda``: -log sigma~). ``max_evals`` bounds the Nelder–Mead
    sampler runs of all searches together (default 40 per free time and search; each search
    gets at least 10 per free time, so small budgets run fewer searches); ``progress(done, total)``
    is called after each run. Other ``options`` go to the solver.
    """
    n = _check(solver, nfe, y, x_T)
    _check_search(space, restarts)
    cont = as_continuous(schedule)
    x_T = prior_sample(y, cont, generator) if x_T is None else x_T
    reference = _reference(denoiser, y, cont, x_T, reference, reference_rtol)
    if n == 2:
        return np.array([1.0, cont.t_min])
    starts = _start_grids(start, n, cont, solver, nfe)
    free = n - 2
    budget = max_evals if max_evals is not None else 40 * free * int(restarts)
    searches = max(1, min(int(restarts), len(starts), budget // (10 * free))) if budget > 0 else 0
    total, done, best = len(starts) + budget, [0], [math.inf, starts[0]]

    def error(ts: np.ndarray) -> float:
        """The grid's calibration error; keeps the best grid seen."""
        value = grid_error(denoiser, y, cont, ts, solver=solver, nfe=nfe, x_T=x_T, reference=reference, **options)
        done[0] += 1
        if progress is not None:
            progress(min(done[0], total), total)
        if value < best[0]:
            best[:] = [value, ts]
        return value

    start_errors = [error(grid) for grid in starts]
    if not math.isfinite(best[0]):
        raise ValueError(f"solver {solver!r} blows up on every starting grid at nfe={nfe}; check the denoiser")
    order = [i for i in np.argsort(start_errors, kind="stable") if math.isfinite(start_errors[i])]
    for k, i in enumerate(order[:searches]):
        _search_grids(error, starts[i], cont, space, budget // searches + (1 if k < budget % searches else 0))
    if progress is not None:
        progress(total, total)
    return np.array(best[1], np.float64)


def _check_search(space: str, restarts: Any) -> None:
    """One-line errors for ``optimize_grid``'s search options."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    if isinstance(restarts, bool) or int(restarts) != restarts or restarts < 1:
        raise ValueError(f"restarts must be a positive integer, got {restarts!r}")


def _reference(denoiser: Denoiser, y: torch.Tensor, schedule: ContinuousSchedule, x_T: torch.Tensor,
               reference: Optional[torch.Tensor], rtol: float) -> torch.Tensor:
    """The converged output from ``x_T``: the caller's (shape-checked) or adaptive dopri5 at ``rtol``."""
    if reference is None:
        return reference_output(denoiser, y, schedule, x_T, rtol=rtol)
    if reference.shape != y.shape:
        raise ValueError(f"reference has shape {tuple(reference.shape)} but y has {tuple(y.shape)}; they must match")
    return reference


def _start_grids(start: Optional[Sequence[float]], n: int, schedule: ContinuousSchedule, solver: str,
                 nfe: int) -> list[np.ndarray]:
    """[start], or the solver's auto grid, the lambda, karras, graded log-eta and rho-in-t grids (distinct ones)."""
    t_min = schedule.t_min
    if start is None:
        from . import SOLVERS

        grids = [SOLVERS[solver].grid(schedule, nfe), lambda_grid(n, schedule), karras_grid(n, schedule)]
        grids += [log_eta_grid(n, schedule, rho) for rho in START_LOG_ETA_RHOS]
        grids += [rho_grid(n, rho, t_min) for rho in START_RHOS]
        unique: list[np.ndarray] = []
        for g in grids:
            if not any(np.array_equal(g, u) for u in unique):
                unique.append(g)
        return unique
    ts = np.asarray(start, np.float64)
    if ts.ndim != 1 or len(ts) != n:
        raise ValueError(f"a start grid for {solver!r} at nfe={nfe} has {n} points, got {len(ts)}")
    if ts[0] != 1.0 or ts[-1] != t_min or not np.all(np.diff(ts) < 0):
        raise ValueError(f"a start grid must decrease strictly from exactly 1 to exactly 1/T = {t_min:g}")
    return [ts]


def fit_coefficients(denoiser: Denoiser, y: torch.Tensor, schedule: Schedule, ts: Sequence[float], *,
                     x_T: torch.Tensor, reference: torch.Tensor, start: Optional[Sequence[float]] = None,
                     iterations: int = 30) -> tuple[np.ndarray, float]:
    """The ``tuned`` solver's coefficients on the fixed grid ``ts`` that minimise the RMS to ``reference``.

    L-BFGS (strong Wolfe line search) from ``start`` (default: DPM-Solver++(2M)'s,
    ``cresshift.solvers.tuned.default_coefficients``), with gradients through the denoiser
    (``torch.autograd.grad`` with respect to the coefficients only: no gradient reaches a
    network's weights). Returns (coefficients, their RMS); the start's if fitting does not improve it.
    """
    from .base import CountingDenoiser
    from .tuned import check_coefficients, default_coefficients, run_tuned

    cont = as_continuous(schedule)
    ts = np.asarray(ts, np.float64)
    first = default_coefficients(ts, cont) if start is None else check_coefficients(start, len(ts))
    coef = torch.tensor(first, dtype=torch.float64, requires_grad=True)
    model = CountingDenoiser(denoiser)

    def rms() -> torch.Tensor:
        out = run_tuned(model, x_T, y, cont, ts, coef)
        return torch.sqrt(torch.mean((out.double() - reference.double()) ** 2))

    with torch.no_grad():
        best = (first, float(rms()))
    if len(first) == 0 or not math.isfinite(best[1]):
        return best
    opt = torch.optim.LBFGS([coef], lr=1.0, max_iter=int(iterations), line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        with torch.enable_grad():
            loss = rms()
            coef.grad = torch.autograd.grad(loss, [coef])[0] if loss.requires_grad else torch.zeros_like(coef)
        return loss.detach()

    try:
        opt.step(closure)
    except NonFiniteError:
        return best
    with torch.no_grad():
        value = float(rms())
    fitted = coef.detach().numpy().copy()
    return (fitted, value) if math.isfinite(value) and value < best[1] and np.all(np.isfinite(fitted)) else best


def optimize_solver(denoiser: Denoiser, y: torch.Tensor, schedule: Schedule, *, nfe: int,
                    x_T: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
                    reference: Optional[torch.Tensor] = None, reference_rtol: float = 1e-6,
                    max_evals: Optional[int] = None, iterations: int = 30, space: str = "logeta",
                    progress: Optional[Progress] = None) -> tuple[np.ndarray, np.ndarray]:
    """The grid and coefficients of the ``tuned`` solver (``sample(solver="tuned", ts=ts, coefficients=c)``)
    that minimise its RMS error against a converged reference on the calibration batch ``y``.

    Two stages: ``optimize_grid`` for the grid with DPM-Solver++(2M)'s coefficients, then a bilevel
    search: Nelder–Mead over the grid (same parametrisation), where every grid it tries gets its
    best coefficients by ``fit_coefficients`` (L-BFGS, ``iterations``, warm-started from the best
    so far). The coefficients enter the output smoothly and are fitted by gradient; the grid is
    searched without derivatives, as in ``optimize_grid``, because the schedule's time maps are
    not differentiable. ``max_evals``: the grids the bilevel search tries (default 20 per free
    time); the first stage gets the same number. The result is never worse on ``y`` than the
    first stage's grid with fitted coefficients. ``x_T``, ``generator``, ``reference``,
    ``reference_rtol``, ``space`` and ``progress(done, total)`` as in ``optimize_grid``.
    """
    n = _check("tuned", nfe, y, x_T)
    _check_search(space, 1)
    cont = as_continuous(schedule)
    x_T = prior_sample(y, cont, generator) if x_T is None else x_T
    reference = _reference(denoiser, y, cont, x_T, reference, reference_rtol)
    free = n - 2
    budget = 20 * max(free, 1) if max_evals is None else int(max_evals)
    total, done = 2 * budget + 13, [0]

    def tick(*_: Any) -> None:
        done[0] += 1
        if progress is not None:
            progress(min(done[0], total), total)

    ts0 = optimize_grid(denoiser, y, cont, solver="tuned", nfe=nfe, x_T=x_T, reference=reference, max_evals=budget,
                        restarts=1, space=space, progress=lambda d, t: tick())
    coef, err = fit_coefficients(denoiser, y, cont, ts0, x_T=x_T, reference=reference, iterations=iterations)
    best = [err, ts0, coef]
    if free > 0 and budget > 0:
        def error(ts: np.ndarray) -> float:
            c, e = fit_coefficients(denoiser, y, cont, ts, x_T=x_T, reference=reference, start=best[2],
                                    iterations=iterations)
            tick()
            if e < best[0]:
                best[:] = [e, ts, c]
            return e

        _search_grids(error, ts0, cont, space, budget)
    if progress is not None:
        progress(total, total)
    return np.array(best[1], np.float64), np.asarray(best[2], np.float64)

"""optimize_grid: valid grids within the NFE budget, never worse than the start, better on held-out seeds."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from cresshift.grids import rho_grid
from cresshift.schedules import ExactSchedule
from cresshift.solvers import SOLVERS, sample
from cresshift.solvers.optimize import grid_error, lambda_of_t, optimize_grid, t_of_lambda
from cresshift.testing import GaussianProblem


@pytest.fixture(scope="module")
def problem():
    from cresshift.schedules import ResShiftSchedule

    sched = ExactSchedule(ResShiftSchedule.from_config("realsr-x4-v1"))
    return GaussianProblem(sched, dim=16, seed=0)


def _batch(problem, n, seed):
    x_T = problem.prior(n, seed=seed)
    return problem.y.expand_as(x_T).clone(), x_T, problem.exact_output(x_T, 1.0, problem.schedule.t_min)


def test_grids_module_resolves_optimize_grid_lazily():
    import cresshift.grids

    assert cresshift.grids.optimize_grid is optimize_grid
    code = "import sys, cresshift.grids; print('cresshift.solvers.optimize' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_lambda_round_trip(problem):
    ts = np.linspace(1.0, 1 / 15, 9)
    np.testing.assert_allclose(t_of_lambda(lambda_of_t(ts, problem.schedule), problem.schedule), ts, rtol=1e-9)


@pytest.mark.parametrize("solver,nfe", [("euler", 5), ("heun", 7), ("dpmpp-2m", 5), ("dpmpp-3m", 6), ("ddim", 4)])
def test_valid_grid_within_budget_and_no_worse_than_start(problem, solver, nfe):
    y, x_T, ref = _batch(problem, 32, seed=1)
    n = SOLVERS[solver].points_for_nfe(nfe)
    start = rho_grid(n, 1.0, 1 / 15)
    ts = optimize_grid(problem.denoiser, y, problem.schedule, solver=solver, nfe=nfe, x_T=x_T, reference=ref,
                       start=start, max_evals=30)
    assert ts.dtype == np.float64 and len(ts) == n
    assert ts[0] == 1.0 and ts[-1] == 1 / 15 and np.all(np.diff(ts) < 0)
    res = sample(problem.denoiser, y, problem.schedule, solver=solver, nfe=nfe, ts=ts, x_T=x_T)
    assert res.nfe <= nfe
    opt = grid_error(problem.denoiser, y, problem.schedule, ts, solver=solver, nfe=nfe, x_T=x_T, reference=ref)
    begin = grid_error(problem.denoiser, y, problem.schedule, start, solver=solver, nfe=nfe, x_T=x_T, reference=ref)
    assert opt <= begin


def test_optimised_grid_generalises_to_other_seeds(problem):
    y, x_T, ref = _batch(problem, 32, seed=1)
    ts = optimize_grid(problem.denoiser, y, problem.schedule, solver="dpmpp-2m", nfe=5, x_T=x_T, reference=ref)
    y_h, x_h, ref_h = _batch(problem, 128, seed=2)
    best_fixed = min(grid_error(problem.denoiser, y_h, problem.schedule, rho_grid(5, rho, 1 / 15), solver="dpmpp-2m",
                                nfe=5, x_T=x_h, reference=ref_h) for rho in (1, 2, 4, 7, -4, -8))
    held_out = grid_error(problem.denoiser, y_h, problem.schedule, ts, solver="dpmpp-2m", nfe=5, x_T=x_h,
                          reference=ref_h)
    assert held_out < 0.6 * best_fixed


def test_default_reference_seeded_and_deterministic(problem):
    y = problem.y.expand(8, -1).clone()
    grids = [optimize_grid(problem.denoiser, y, problem.schedule, solver="dpmpp-2m", nfe=4, max_evals=10,
                           generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    np.testing.assert_array_equal(grids[0], grids[1])
    seen = []
    optimize_grid(problem.denoiser, y, problem.schedule, solver="euler", nfe=3, max_evals=5,
                  progress=lambda done, total: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] and all(d <= t for d, t in seen)


@pytest.mark.parametrize("kwargs,match", [
    (dict(solver="markov", nfe=5), "deterministic fixed-grid"),
    (dict(solver="adaptive", nfe=5), "deterministic fixed-grid"),
    (dict(solver="sde", nfe=5), "deterministic fixed-grid"),
    (dict(solver="heun", nfe=2), "nfe >= 3"),
    (dict(solver="nope", nfe=5), "unknown solver"),
    (dict(solver="euler", nfe=5, start=[1.0, 0.5, 1 / 15]), "has 5 points"),
    (dict(solver="euler", nfe=3, start=[1.0, 0.05, 1 / 15]), "decrease strictly"),
    (dict(solver="euler", nfe=5, space="sigma"), "space must be one of"),
    (dict(solver="euler", nfe=5, restarts=0), "restarts must be a positive integer"),
])
def test_bad_input_one_line(problem, kwargs, match):
    y = problem.y.expand(4, -1).clone()
    with pytest.raises(ValueError, match=match) as err:
        optimize_grid(problem.denoiser, y, problem.schedule, reference=y, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("solver,nfe", [("dpmpp-2m", 4), ("heun", 5)])
def test_default_start_no_worse_than_the_solvers_auto_grid(problem, solver, nfe):
    y, x_T, ref = _batch(problem, 32, seed=1)
    ts = optimize_grid(problem.denoiser, y, problem.schedule, solver=solver, nfe=nfe, x_T=x_T, reference=ref,
                       max_evals=5)
    auto = SOLVERS[solver].grid(problem.schedule, nfe)
    kwargs = dict(solver=solver, nfe=nfe, x_T=x_T, reference=ref)
    assert grid_error(problem.denoiser, y, problem.schedule, ts, **kwargs) <= \
        grid_error(problem.denoiser, y, problem.schedule, auto, **kwargs)


@pytest.mark.parametrize("solver,nfe", [("ipndm", 5), ("dpmpp-3m", 5)])
def test_restarts_no_worse_than_one_search_nor_any_start(problem, solver, nfe):
    from cresshift.solvers.optimize import _start_grids

    y, x_T, ref = _batch(problem, 32, seed=1)
    kwargs = dict(solver=solver, nfe=nfe, x_T=x_T, reference=ref)
    err = lambda ts: grid_error(problem.denoiser, y, problem.schedule, ts, **kwargs)  # noqa: E731
    one = optimize_grid(problem.denoiser, y, problem.schedule, restarts=1, **kwargs)
    three = optimize_grid(problem.denoiser, y, problem.schedule, restarts=3, **kwargs)
    assert err(three) <= err(one)
    n = SOLVERS[solver].points_for_nfe(nfe)
    starts = _start_grids(None, n, problem.schedule, solver, nfe)
    assert len(starts) >= 10 and err(three) <= min(err(g) for g in starts)
    # and the search does gain on its calibration samples (the best start is not a local optimum)
    assert err(three) < 0.9 * min(err(g) for g in starts)


@pytest.mark.parametrize("space", ["logeta", "lambda"])
def test_both_parametrisations_round_trip(problem, space):
    from cresshift.grids import log_eta_grid
    from cresshift.solvers.optimize import _coord, _decode, _encode

    ts = log_eta_grid(7, problem.schedule, 2.0)
    ends = tuple(float(c) for c in _coord([1.0, 1 / 15], problem.schedule, space))
    np.testing.assert_allclose(_decode(_encode(ts, problem.schedule, space), ends, problem.schedule, space), ts,
                               rtol=1e-9)

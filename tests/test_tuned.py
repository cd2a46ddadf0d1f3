"""The tuned solver: DPM-Solver++(2M) at its default coefficients, its coefficient layout, its fitting, its grid files."""
import json

import numpy as np
import pytest
import torch

from cresshift.grids import grid_json, lambda_grid, log_eta_grid, rho_grid
from cresshift.schedules import ExactSchedule, ExpAlphaSchedule, ResShiftSchedule
from cresshift.solvers import SOLVERS, check_solver_options, sample
from cresshift.solvers.optimize import fit_coefficients, grid_error, optimize_grid, optimize_solver
from cresshift.solvers.tuned import HISTORY, coefficient_count, default_coefficients
from cresshift.testing import GaussianMixtureProblem, GaussianProblem

V1 = ResShiftSchedule.from_config("realsr-x4-v1")


@pytest.fixture(scope="module", params=["exact", "exp-fit"])
def schedule(request):
    return ExactSchedule(V1) if request.param == "exact" else ExpAlphaSchedule.fit(V1, warn=False)


@pytest.fixture(scope="module")
def mixture():
    return GaussianMixtureProblem(ExactSchedule(V1), dim=8, seed=0)


def _batch(problem, n, seed):
    x_T = problem.prior(n, seed=seed)
    return problem.y.expand_as(x_T).clone(), x_T, problem.exact_output(x_T, 1.0, problem.schedule.t_min)


@pytest.mark.parametrize("grid", ["rho", "lambda", "logeta"])
@pytest.mark.parametrize("nfe", [2, 3, 6, 9])
def test_default_coefficients_are_dpmpp_2m_in_log_snr(schedule, grid, nfe):
    problem = GaussianMixtureProblem(schedule, dim=8, seed=1)
    x_T = problem.prior(16, seed=3)
    y = problem.y.expand_as(x_T)
    tuned = sample(problem.denoiser, y, schedule, solver="tuned", nfe=nfe, grid=grid, x_T=x_T)
    ref = sample(problem.denoiser, y, schedule, solver="dpmpp-2m", nfe=nfe, grid=grid, x_T=x_T, lambda_var="sigma")
    assert tuned.nfe == nfe == ref.nfe
    torch.testing.assert_close(tuned.x, ref.x, rtol=0, atol=1e-12)


def test_coefficient_layout():
    # n points: steps i = 1 .. n - 2 combine min(i, HISTORY) past evaluations, the output min(n - 1, HISTORY).
    for n in range(2, 12):
        expected = sum(min(i, HISTORY) for i in range(n - 1)) + min(n - 1, HISTORY)
        assert coefficient_count(n) == expected
    assert coefficient_count(5) == 10  # NFE 5: 1 + 2 + 3 step coefficients, 4 output ones
    # NFE 5, in order: c_10 | c_20 c_21 | c_30 c_31 c_32 | b_0 b_1 b_2 b_3; DPM-Solver++(2M) uses c_{i,i-1} only.
    c = default_coefficients(log_eta_grid(5, ExactSchedule(V1), 2.0), ExactSchedule(V1))
    assert np.all(c[[0, 2, 5]] < 0) and not c[[1, 3, 4, 6, 7, 8, 9]].any()


def test_output_coefficients_mix_the_evaluations(mixture):
    """b_j = 1 for the last step's evaluation makes the output that evaluation's x0_hat (layout check)."""
    sched = mixture.schedule
    x_T = mixture.prior(4, seed=2)
    y = mixture.y.expand_as(x_T)
    ts = log_eta_grid(5, sched, 2.0)
    seen = []
    coef = default_coefficients(ts, sched)
    coef[-1] = 1.0  # output = x0_hat_n + 1 * (x0_hat_3 - x0_hat_n) = x0_hat_3
    out = sample(mixture.denoiser, y, sched, solver="tuned", nfe=5, ts=ts, x_T=x_T, coefficients=coef,
                 callback=lambda info: seen.append(info["x0_hat"]))
    torch.testing.assert_close(out.x, seen[3], rtol=0, atol=1e-14)
    coef[-1], coef[-4] = 0.5, 0.5  # half of the first and the last step's evaluations
    out = sample(mixture.denoiser, y, sched, solver="tuned", nfe=5, ts=ts, x_T=x_T, coefficients=coef)
    torch.testing.assert_close(out.x, 0.5 * (seen[0] + seen[3]), rtol=0, atol=1e-14)


def test_step_coefficient_changes_only_what_follows(mixture):
    sched = mixture.schedule
    x_T = mixture.prior(4, seed=2)
    y = mixture.y.expand_as(x_T)
    ts = log_eta_grid(5, sched, 2.0)
    base, moved = [], []
    coef = default_coefficients(ts, sched)
    a = sample(mixture.denoiser, y, sched, solver="tuned", nfe=5, ts=ts, x_T=x_T, coefficients=coef,
               callback=lambda info: base.append(info["x"]))
    coef[3] += 0.3  # c_30: step 3's weight on evaluation 0
    b = sample(mixture.denoiser, y, sched, solver="tuned", nfe=5, ts=ts, x_T=x_T, coefficients=coef,
               callback=lambda info: moved.append(info["x"]))
    for i in range(4):  # the states before step 3's update are untouched
        torch.testing.assert_close(moved[i], base[i], rtol=0, atol=0)
    assert (a.x - b.x).abs().max() > 1e-6


@pytest.mark.parametrize("coefficients,match", [
    ([1.0, 2.0], "a grid of 5 points takes 10 tuned coefficients, got 2"),
    ([float("nan")] * 10, "finite"),
    ("abc", "list of numbers"),
    ([[1.0] * 10], "flat list"),
])
def test_bad_coefficients_one_line(mixture, coefficients, match):
    x_T = mixture.prior(2, seed=2)
    with pytest.raises(ValueError, match=match) as err:
        sample(mixture.denoiser, mixture.y.expand_as(x_T), mixture.schedule, solver="tuned", nfe=5, x_T=x_T,
               coefficients=coefficients)
    assert "\n" not in str(err.value)


def test_option_check_before_any_call():
    with pytest.raises(ValueError, match="finite"):
        check_solver_options("tuned", {"coefficients": [1.0, float("inf")]})
    with pytest.raises(ValueError, match="does not take"):
        check_solver_options("tuned", {"lambda_var": "sigma"})


def test_grid_file_and_record_carry_the_coefficients(mixture, tmp_path):
    sched = mixture.schedule
    x_T = mixture.prior(8, seed=2)
    y = mixture.y.expand_as(x_T)
    ts = lambda_grid(5, sched)
    coef = default_coefficients(ts, sched) + np.linspace(-0.2, 0.3, coefficient_count(5))
    direct = sample(mixture.denoiser, y, sched, solver="tuned", nfe=5, ts=ts, x_T=x_T, coefficients=coef).x
    text = grid_json(ts, sched, solver="tuned", nfe=5, coefficients=coef.tolist())
    path = tmp_path / "tuned.json"
    path.write_text(text)
    from_file = sample(mixture.denoiser, y, sched, solver="tuned", nfe=5, grid=str(path), x_T=x_T).x
    from_record = sample(mixture.denoiser, y, sched, solver="tuned", nfe=5, grid=json.loads(text), x_T=x_T).x
    torch.testing.assert_close(from_file, direct, rtol=0, atol=0)
    torch.testing.assert_close(from_record, direct, rtol=0, atol=0)
    default = sample(mixture.denoiser, y, sched, solver="tuned", nfe=5, ts=ts, x_T=x_T).x
    assert (from_file - default).abs().max() > 1e-3  # the file's coefficients were used
    # Another solver takes the same file's times and ignores the coefficients.
    other = sample(mixture.denoiser, y, sched, solver="dpmpp-2m", nfe=5, grid=str(path), x_T=x_T, lambda_var="sigma").x
    torch.testing.assert_close(other, default, rtol=0, atol=1e-12)
    # Coefficients made for another grid size are refused in one line.
    path.write_text(grid_json(lambda_grid(4, sched), sched, coefficients=coef.tolist()))
    with pytest.raises(ValueError, match="a grid of 4 points takes 6 tuned coefficients, got 10"):
        sample(mixture.denoiser, y, sched, solver="tuned", nfe=5, grid=str(path), x_T=x_T)


def test_fit_coefficients_improves_on_dpmpp_2m_and_is_deterministic(mixture):
    y, x_T, ref = _batch(mixture, 64, seed=1)
    ts = log_eta_grid(5, mixture.schedule, 2.0)
    start = grid_error(mixture.denoiser, y, mixture.schedule, ts, solver="tuned", nfe=5, x_T=x_T, reference=ref)
    coef, err = fit_coefficients(mixture.denoiser, y, mixture.schedule, ts, x_T=x_T, reference=ref, iterations=15)
    assert len(coef) == coefficient_count(5) and np.all(np.isfinite(coef))
    again = grid_error(mixture.denoiser, y, mixture.schedule, ts, solver="tuned", nfe=5, x_T=x_T, reference=ref,
                       coefficients=coef)
    assert again == pytest.approx(err, rel=1e-12)
    assert err < 0.8 * start
    coef2, err2 = fit_coefficients(mixture.denoiser, y, mixture.schedule, ts, x_T=x_T, reference=ref, iterations=15)
    np.testing.assert_array_equal(coef, coef2)


def test_fit_coefficients_leaves_network_weights_without_gradients():
    sched = ExactSchedule(V1)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)).double()
    y = torch.zeros(8, 4, dtype=torch.float64)
    x_T = torch.randn(8, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    denoiser = lambda x, t: net(x) * t[:, None]  # noqa: E731
    ref = torch.randn(8, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():  # as the command runs it
        coef, err = fit_coefficients(denoiser, y, sched, rho_grid(4, 1.0, 1 / 15), x_T=x_T, reference=ref, iterations=5)
    assert all(p.grad is None for p in net.parameters())
    assert np.isfinite(err) and len(coef) == coefficient_count(4)


def test_optimize_solver_beats_its_grid_alone_on_held_out_samples(mixture):
    """Fitted on one seed, scored on another: better than the optimised grid with DPM-Solver++(2M)'s coefficients."""
    y, x_T, ref = _batch(mixture, 128, seed=1)
    ts, coef = optimize_solver(mixture.denoiser, y, mixture.schedule, nfe=5, x_T=x_T, reference=ref, max_evals=12,
                               iterations=10)
    assert len(ts) == 5 and ts[0] == 1.0 and ts[-1] == 1 / 15 and np.all(np.diff(ts) < 0)
    assert len(coef) == coefficient_count(5)
    grid_only = optimize_grid(mixture.denoiser, y, mixture.schedule, solver="tuned", nfe=5, x_T=x_T, reference=ref,
                              max_evals=12, restarts=1)
    y_h, x_h, ref_h = _batch(mixture, 256, seed=2)

    def held_out(grid, **options):
        return grid_error(mixture.denoiser, y_h, mixture.schedule, grid, solver="tuned", nfe=5, x_T=x_h,
                          reference=ref_h, **options)
    assert held_out(ts, coefficients=coef) < 0.8 * held_out(grid_only)
    r = sample(mixture.denoiser, y_h, mixture.schedule, solver="tuned", nfe=5, ts=ts, x_T=x_h, coefficients=coef)
    assert r.nfe == 5


def test_optimize_solver_refuses_bad_input_in_one_line(mixture):
    y, x_T, ref = _batch(mixture, 4, seed=1)
    for kwargs, match in [(dict(nfe=1), "nfe >= 2"), (dict(nfe=5, space="t"), "space must be")]:
        with pytest.raises(ValueError, match=match) as err:
            optimize_solver(mixture.denoiser, y, mixture.schedule, x_T=x_T, reference=ref, **kwargs)
        assert "\n" not in str(err.value)


def test_tuned_is_registered_with_its_auto_grid():
    spec = SOLVERS["tuned"]
    assert spec.order == 2 and spec.nfe_for_points(5) == 5 and spec.option_names == ("coefficients",)
    sched = ExactSchedule(V1)
    np.testing.assert_array_equal(spec.grid(sched, 5), log_eta_grid(5, sched, 2.0))
    gaussian = GaussianProblem(sched, dim=4, seed=0)
    x_T = gaussian.prior(2, seed=1)
    assert sample(gaussian.denoiser, gaussian.y.expand_as(x_T), sched, solver="tuned", nfe=4, x_T=x_T).nfe == 4

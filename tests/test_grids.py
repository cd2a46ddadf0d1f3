import numpy as np
import pytest

from cresshift.grids import rho_grid


@pytest.mark.parametrize("rho", [1, 2, 4, 8, -4, -8, 0.5, -1])
@pytest.mark.parametrize("n", [2, 3, 8, 15])
def test_endpoints_and_monotone(n, rho):
    t = rho_grid(n, rho, 1 / 15)
    assert len(t) == n and t.dtype == np.float64
    assert t[0] == 1.0 and t[-1] == 1 / 15
    assert np.all(np.diff(t) < 0)


def test_rho_one_is_uniform():
    np.testing.assert_allclose(np.diff(rho_grid(11, 1.0, 0.1)), -0.09, atol=1e-15)


def test_positive_rho_crowds_image_end_negative_rho_the_lr_end():
    pos, neg = rho_grid(8, 8.0, 1 / 15), rho_grid(8, -8.0, 1 / 15)
    steps_pos, steps_neg = -np.diff(pos), -np.diff(neg)
    assert steps_pos[-1] < steps_pos[0]  # small steps near t_min
    assert steps_neg[0] < steps_neg[-1]  # small steps near t = 1


def test_formula_matches_design():
    n, rho, tm = 6, 4.0, 1 / 15
    i = np.arange(n)
    s = (1 + i / (n - 1) * (tm ** (1 / rho) - 1)) ** rho
    np.testing.assert_allclose(rho_grid(n, rho, tm), s, atol=1e-15)
    s_neg = (1 + i / (n - 1) * (tm ** (1 / -rho) - 1)) ** -rho
    np.testing.assert_allclose(rho_grid(n, -rho, tm), 1 + tm - s_neg[::-1], atol=1e-15)


@pytest.mark.parametrize("bad", [dict(n=1, rho=1, t_min=0.1), dict(n=5, rho=0, t_min=0.1),
                                 dict(n=5, rho=1, t_min=1.5)])
def test_bad_input(bad):
    with pytest.raises(ValueError):
        rho_grid(**bad)


# --- families mapped through the schedule's inverse (design §6b) -------------------------
from cresshift.converters import edm_sigma  # noqa: E402
from cresshift.grids import (check_grid, grid_json, karras_grid, lambda_grid, load_grid,  # noqa: E402
                             log_eta_grid, make_grid, sigma_to_t)
from cresshift.schedules import PRESETS, ExactSchedule, ExpAlphaSchedule, ResShiftSchedule  # noqa: E402


def all_schedules():
    scheds = [ResShiftSchedule.from_config(name) for name in PRESETS]
    v1 = scheds[0]
    scheds += [ExactSchedule(v1), ExactSchedule(ResShiftSchedule.from_config("realsr-x4-v3")),
               ExactSchedule(v1.etas, kappa=2.0), ExpAlphaSchedule.fit(v1, warn=False), ExpAlphaSchedule.paper(warn=False)]
    return scheds


SCHEDULES = all_schedules()
FAMILIES = [("rho", 1.0), ("rho", 7.0), ("rho", -8.0), ("lambda", None), ("karras", 7.0), ("karras", 2.0), ("logeta", None),
            ("logeta", 1.5), ("logeta", 2.0), ("logeta", 0.7)]


@pytest.mark.parametrize("sched", SCHEDULES, ids=repr)
@pytest.mark.parametrize("family,rho", FAMILIES)
@pytest.mark.parametrize("n", [2, 5, 40])
def test_every_family_has_exact_endpoints_and_decreases(sched, family, rho, n):
    t = make_grid(family, n, sched, rho=rho)
    assert len(t) == n and t.dtype == np.float64
    assert t[0] == 1.0 and t[-1] == 1 / sched.T
    assert np.all(np.diff(t) < 0)


@pytest.mark.parametrize("sched", SCHEDULES[4:], ids=repr)
def test_lambda_grid_is_uniform_in_log_snr(sched):
    t = lambda_grid(9, sched)
    lam = -np.log(edm_sigma(sched.eta(t), sched.kappa))
    np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=1e-7)


@pytest.mark.parametrize("sched", SCHEDULES[4:], ids=repr)
def test_log_eta_grid_is_uniform_in_log_eta(sched):
    t = log_eta_grid(9, sched)
    np.testing.assert_allclose(np.diff(np.log(sched.eta(t))), np.diff(np.log(sched.eta(t)))[0], rtol=1e-7)


@pytest.mark.parametrize("sched", SCHEDULES[4:], ids=repr)
@pytest.mark.parametrize("rho", [1.5, 2.0])
def test_graded_log_eta_grid_follows_its_formula(sched, rho):
    n = 9
    t = make_grid("logeta", n, sched, rho=rho)
    le = np.log(sched.eta(t))
    v = (le - le[-1]) / (le[0] - le[-1])
    np.testing.assert_allclose(v, 1 - (np.arange(n) / (n - 1)) ** rho, atol=1e-9)
    # rho > 1 crowds steps at the noisy end and keeps the uniform spacing's last step within a factor rho
    steps = -np.diff(v)
    assert steps[0] < steps[-1] and steps[-1] == pytest.approx(1 - ((n - 2) / (n - 1)) ** rho, rel=1e-7)


@pytest.mark.parametrize("sched", SCHEDULES[4:], ids=repr)
def test_karras_grid_follows_edm_formula_in_sigma(sched):
    n, rho = 7, 5.0
    t = karras_grid(n, sched, rho)
    sig = edm_sigma(sched.eta(t), sched.kappa)
    hi, lo = sig[0], sig[-1]
    ramp = np.arange(n) / (n - 1)
    np.testing.assert_allclose(sig, (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho, rtol=1e-7)


@pytest.mark.parametrize("sched", SCHEDULES[4:], ids=repr)
def test_sigma_to_t_inverts_the_change_of_variables(sched):
    t = np.linspace(1.0, 1 / sched.T, 13)
    sig = edm_sigma(sched.eta(t), sched.kappa)
    np.testing.assert_allclose(sigma_to_t(sig, sched), t, rtol=1e-9)


def test_grid_request_resolution(v1):
    n = 6
    np.testing.assert_array_equal(make_grid(None, n, v1, rho=4.0), rho_grid(n, 4.0, 1 / 15))
    np.testing.assert_array_equal(make_grid("rho", n, v1), rho_grid(n, 1.0, 1 / 15))
    np.testing.assert_array_equal(make_grid("karras", n, v1), karras_grid(n, v1, 7.0))
    ts = [1.0, 0.5, 0.2, 1 / 15]
    np.testing.assert_array_equal(make_grid(np.array(ts), n, v1), ts)

    class Spec:
        name = "x"

        def auto_grid(self, schedule, n=None):
            from cresshift.grids import GridChoice
            return GridChoice("karras", 3.0)
    np.testing.assert_array_equal(make_grid("auto", n, v1, solver=Spec()), karras_grid(n, v1, 3.0))
    np.testing.assert_array_equal(make_grid(None, n, v1, solver=Spec()), karras_grid(n, v1, 3.0))


def one_line_error(match, fn, *args, **kwargs):
    with pytest.raises(ValueError, match=match) as err:
        fn(*args, **kwargs)
    assert "\n" not in str(err.value)


def test_bad_grid_requests(v1, tmp_path):
    one_line_error("unknown grid 'optimised'", make_grid, "optimised", 5, v1)
    one_line_error("pass solver=", make_grid, "auto", 5, v1)
    one_line_error("lambda grid takes none", make_grid, "lambda", 5, v1, rho=2.0)
    one_line_error("logeta grid needs a finite rho > 0", make_grid, "logeta", 5, v1, rho=-2.0)
    one_line_error("strictly decreasing", make_grid, [1.0, 0.2, 0.5, 1 / 15], 5, v1)
    one_line_error("lie in", make_grid, [1.0, 0.5, 0.01], 5, v1)
    one_line_error("more than the 3", make_grid, [1.0, 0.5, 0.2, 1 / 15], 3, v1)
    one_line_error("karras grid needs", karras_grid, 5, v1, -7.0)
    one_line_error("does not exist", make_grid, str(tmp_path / "missing.json"), 5, v1)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    one_line_error("not a cresshift grid file", make_grid, bad, 5, v1)


def test_grid_file_round_trip_and_schedule_identity(v1, exp_v1, tmp_path):
    ts = lambda_grid(5, v1)
    path = tmp_path / "grid.json"
    path.write_text(grid_json(ts, v1, solver="dpmpp-2m", nfe=5))
    np.testing.assert_array_equal(load_grid(path, v1), ts)
    np.testing.assert_array_equal(make_grid(str(path), 5, ExactSchedule(v1)), ts)  # the same continuous schedule
    one_line_error("was made for schedule", load_grid, path, exp_v1)
    one_line_error("was made for schedule", make_grid, path, 5, ResShiftSchedule.from_config("realsr-x4-v3"))
    one_line_error("strictly decreasing", grid_json, ts[::-1], v1)
    one_line_error("strictly decreasing", check_grid, [1.0], v1)

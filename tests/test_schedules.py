"""Schedules against the official formula, their inverses and derivatives."""
import math
import warnings

import numpy as np
import pytest
import torch

from cresshift.schedules import (ExactSchedule, ExpAlphaSchedule, ResShiftSchedule, ScheduleMismatchWarning,
                                 schedule_from_config)


def official_formula(T, kappa, min_noise_level, etas_end, power):
    """Design §2, written independently: sqrt_eta_k = s1 (end / s1) ** (((k-1)/(T-1)) ** power)."""
    s1 = min(min_noise_level / kappa, min_noise_level)
    k = np.arange(1, T + 1)
    return (s1 * (etas_end / s1) ** (((k - 1) / (T - 1)) ** power)) ** 2


@pytest.mark.parametrize("preset", ["realsr-x4-v1", "realsr-x4-v2", "realsr-x4-v3", "bicsr-x4"])
def test_discrete_matches_official_formula(preset):
    d = ResShiftSchedule.from_config(preset)
    cfg = d.to_config()
    ref = official_formula(cfg["steps"], cfg["kappa"], cfg["min_noise_level"], cfg["etas_end"], 0.3)
    np.testing.assert_allclose(d.etas, ref, rtol=0, atol=1e-12)
    assert d.etas.dtype == np.float64 and len(d.etas) == d.T
    assert np.all(np.diff(d.etas) > 0)


def test_known_table_values(v1):
    # sqrt(eta_1) = min(0.04/2, 0.04) = 0.02 and sqrt(eta_T) = etas_end.
    assert v1.etas[0] == pytest.approx(0.02 ** 2, abs=1e-15)
    assert v1.etas[-1] == pytest.approx(0.99 ** 2, abs=1e-14)
    v3 = ResShiftSchedule.from_config("realsr-x4-v3")
    assert v3.T == 4 and v3.etas[0] == pytest.approx(0.1 ** 2, abs=1e-15)


def test_from_official_diffusion_params():
    params = {"sf": 4, "schedule_name": "exponential", "schedule_kwargs": {"power": 0.3}, "etas_end": 0.99,
              "steps": 15, "min_noise_level": 0.04, "kappa": 2.0, "predict_type": "xstart"}
    assert ResShiftSchedule.from_config(params) == ResShiftSchedule.from_config("realsr-x4-v1")
    with pytest.raises(ValueError, match="valid presets"):
        ResShiftSchedule.from_config("realsr-x8")
    with pytest.raises(ValueError, match="steps"):
        ResShiftSchedule.from_config({"kappa": 2.0})


def test_respacing_official_rule(v1):
    assert v1.respaced_indices(5) == [0, 3, 6, 9, 12]
    assert v1.respaced_indices(15) == list(range(15))
    assert v1.respaced_indices(4) == [0, 3, 7, 11]


@pytest.mark.parametrize("preset", ["realsr-x4-v1", "realsr-x4-v3"])
def test_exact_schedule_hits_table(preset):
    d = ResShiftSchedule.from_config(preset)
    e = ExactSchedule(d)
    np.testing.assert_allclose(e.step_etas(), d.etas, rtol=0, atol=1e-12)
    assert e.eta(0.0) == 0.0
    t = np.linspace(0, 1, 1001)
    assert np.all(np.diff(e.eta(t)) > 0)


def test_exact_inverse_and_derivative(v1):
    e = ExactSchedule(v1)
    t = torch.linspace(0.001, 1.0, 997, dtype=torch.float64)
    torch.testing.assert_close(e.t_of_eta(e.eta(t)), t, rtol=0, atol=1e-10)
    # alpha against a central finite difference away from the kink at 1/T.
    tt = np.array([0.03, 0.2, 0.5, 0.9])
    fd = (e.eta(tt + 1e-6) - e.eta(tt - 1e-6)) / 2e-6
    np.testing.assert_allclose(e.alpha(tt), fd, rtol=1e-6)
    # The rate diverges at 1/T from above (power < 1): the reason t-stepping defaults to sqrt(eta).
    assert e.alpha(1 / 15 + 1e-12) > 1e3
    assert e.default_variable == "sqrt_eta"


def test_exact_pchip_fallback(v1):
    e = ExactSchedule(list(v1.etas), kappa=2.0)
    np.testing.assert_allclose(e.step_etas(), v1.etas, rtol=0, atol=1e-14)
    t = np.linspace(0.01, 1, 200)
    np.testing.assert_allclose(e.t_of_eta(e.eta(t)), t, atol=1e-9)
    assert np.all(np.diff(e.eta(t)) > 0)
    with pytest.raises(ValueError, match="kappa"):
        ExactSchedule(list(v1.etas))
    with pytest.raises(ValueError, match="increasing"):
        ExactSchedule([0.1, 0.05], kappa=2.0)


def test_exp_alpha_closed_form_and_inverse():
    s = ExpAlphaSchedule(a=1.2, lam=0.9, kappa=2.0, T=15)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    # eta(t) = integral_0^t a (e^{lam u} - 1) du, checked by quadrature.
    from scipy.integrate import quad
    for tv in [0.1, 0.5, 1.0]:
        ref = quad(lambda u: 1.2 * (math.exp(0.9 * u) - 1), 0, tv, epsabs=1e-14)[0]
        assert s.eta(tv) == pytest.approx(ref, rel=1e-12)
    torch.testing.assert_close(s.t_of_eta(s.eta(t)), t, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.alpha(0.5), 1.2 * math.expm1(0.45), rtol=1e-14)


def test_exp_alpha_fit(v1):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = ExpAlphaSchedule.fit(v1)  # eta(1) within 1 %: no warning
    assert f.a == pytest.approx(1.098, abs=2e-3) and f.lam == pytest.approx(1.162, abs=2e-3)
    res = np.asarray(f.residuals)
    np.testing.assert_allclose(res, f.discrete_error(v1), atol=1e-15)
    assert np.abs(res).max() < 5e-3
    # It is the least-squares optimum: perturbing either parameter increases the residual norm.
    base = np.sum(res ** 2)
    for da, dl in [(1e-3, 0), (-1e-3, 0), (0, 1e-3), (0, -1e-3)]:
        g = ExpAlphaSchedule(f.a + da, f.lam + dl, 2.0, 15)
        assert np.sum(g.discrete_error(v1) ** 2) > base


def test_paper_constants_warn():
    with pytest.warns(ScheduleMismatchWarning, match="3.5 %"):
        p = ExpAlphaSchedule.paper()
    assert p.a == 1.1113 and p.lam == pytest.approx(1.1268, abs=1e-4)
    assert p.eta(1.0) == pytest.approx(0.946, abs=1e-3)
    assert p.eta(1 / 15) == pytest.approx(0.0029, abs=1e-4)


def test_schedules_keep_tensor_kind(exp_v1, v1):
    for s in (exp_v1, ExactSchedule(v1)):
        t32 = torch.rand(2, 3, dtype=torch.float32)
        out = s.eta(t32)
        assert out.dtype == torch.float32 and out.shape == (2, 3)
        assert isinstance(s.eta(0.5), float)
        assert s.alpha(np.array([0.5, 0.7])).shape == (2,)


def test_config_round_trip(exp_v1, v1):
    from cresshift.schedules import as_continuous
    for s in (exp_v1, ExactSchedule(v1), ExactSchedule(v1.etas, kappa=2.0)):
        r = schedule_from_config(s.to_config())
        assert type(r) is type(s)
        np.testing.assert_allclose(r.step_etas(), s.step_etas(), rtol=0, atol=0)
    assert schedule_from_config({"type": "discrete", **v1.to_config()}) == v1
    with pytest.raises(ValueError, match="unknown schedule type"):
        schedule_from_config({"type": "cosine"})

"""Converters against the exact Gaussian marginal (Tweedie) and the exact flow."""
import math

import pytest
import torch

from cresshift.converters import (edm_sigma, eps_to_x0, from_edm, to_edm, x0_to_eps, x0_to_score, x0_to_velocity,
                                  x0_to_velocity_t)
from cresshift.testing import GaussianProblem


@pytest.fixture()
def gp(exp_v1):
    P = GaussianProblem(exp_v1, dim=16, seed=1)
    x = P.prior(5, t_T=0.6, seed=2)
    return P, x, P.y.expand_as(x)


def test_score_is_the_marginal_score(gp):
    # With the exact posterior mean, the converted score equals grad log N(m(eta), v(eta)).
    P, x, y = gp
    t = 0.6
    eta = P.schedule.eta(t)
    x0 = P.denoiser(x, torch.full((5,), t, dtype=x.dtype))
    score = x0_to_score(x, x0, y, eta, P.kappa)
    xr = x.clone().requires_grad_(True)
    logp = (-0.5 * (xr - P.mean(eta)) ** 2 / P.var(eta)).sum()
    (grad,) = torch.autograd.grad(logp, xr)
    torch.testing.assert_close(score, grad, rtol=1e-12, atol=1e-12)


def test_velocity_is_the_flow_derivative(gp):
    P, x, y = gp
    eta_T, eta = 0.9, 0.3
    h = 1e-6
    fd = (P.ode_solution(x, eta_T, eta + h) - P.ode_solution(x, eta_T, eta - h)) / (2 * h)
    xe = P.ode_solution(x, eta_T, eta)
    t = P.schedule.t_of_eta(eta)
    x0 = P.denoiser(xe, torch.full((5,), t, dtype=x.dtype))
    torch.testing.assert_close(x0_to_velocity(xe, x0, y, eta), fd, rtol=1e-6, atol=1e-7)
    alpha = P.schedule.alpha(t)
    torch.testing.assert_close(x0_to_velocity_t(xe, x0, y, eta, alpha), alpha * fd, rtol=1e-6, atol=1e-7)


def test_edm_change_of_variables(gp):
    # Along the exact flow, dx~/dsigma~ = (x~ - D~)/sigma~.
    P, x, y = gp
    eta_T, eta, h = 0.9, 0.3, 1e-6

    def xt(e):
        return to_edm(P.ode_solution(x, eta_T, e), y, e)
    dsig = edm_sigma(eta + h, P.kappa) - edm_sigma(eta - h, P.kappa)
    fd = (xt(eta + h) - xt(eta - h)) / dsig
    x0 = P.denoiser(P.ode_solution(x, eta_T, eta), torch.full((5,), P.schedule.t_of_eta(eta), dtype=x.dtype))
    torch.testing.assert_close(fd, (xt(eta) - (x0 - y)) / edm_sigma(eta, P.kappa), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(from_edm(to_edm(x, y, eta), y, eta), x)


def test_eps_round_trip_and_batch_eta(gp):
    P, x, y = gp
    eta = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5], dtype=x.dtype)
    x0 = torch.randn_like(x)
    eps = x0_to_eps(x, x0, y, eta, P.kappa)
    torch.testing.assert_close(eps_to_x0(x, eps, y, eta, P.kappa), x0)
    # x = x0 + eta (y - x0) + kappa sqrt(eta) eps reproduces x.
    e = eta[:, None]
    torch.testing.assert_close(x0 + e * (y - x0) + P.kappa * e.sqrt() * eps, x)

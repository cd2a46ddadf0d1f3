"""The analytic research problems: exact denoisers against Monte Carlo, references against other integrators."""
import pytest
import torch

from cresshift import sample
from cresshift.schedules import ExactSchedule
from cresshift.testing import EmpiricalProblem, GaussianMixtureProblem, GaussianProblem, reference_output


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_mixture_posterior_mean_matches_monte_carlo(exp_v1):
    # E[x0 | x_t] = E_prior[x0 p(x_t | x0)] / E_prior[p(x_t | x0)], estimated from prior draws only.
    P = GaussianMixtureProblem(exp_v1, dim=6, seed=4)
    g = torch.Generator().manual_seed(0)
    x0 = P.sample_x0(400_000, g)  # [M, D]
    for t in (0.9, 0.4, 0.1):
        eta = float(exp_v1.eta(t))
        x_t = P.prior(3, t_T=t, seed=5)  # [3, D] from the marginal at t
        exact = P.denoiser(x_t, torch.full((3,), t, dtype=torch.float64))
        var = P.kappa ** 2 * eta
        for b in range(3):
            logw = -((x_t[b] - (1 - eta) * x0 - eta * P.y[0]) ** 2) / (2 * var)  # [M, D], per dimension
            w = torch.softmax(logw, dim=0)
            mc = (w * x0).sum(0)
            se = torch.sqrt((w ** 2 * (x0 - mc) ** 2).sum(0))  # self-normalised IS standard error
            assert torch.all((mc - exact[b]).abs() < 5 * se + 1e-3), (t, mc, exact[b], se)


def test_reference_output_is_the_gaussian_closed_form(exp_v1):
    P = GaussianProblem(exp_v1, dim=16, seed=1)
    x_T = P.prior(32, seed=2)
    ref = reference_output(P.denoiser, P.y, x_T, exp_v1)
    torch.testing.assert_close(ref, P.exact_output(x_T, 1.0, exp_v1.t_min), rtol=0, atol=1e-8)


def test_mixture_reference_matches_an_independent_integrator(v1):
    # torchdiffeq's dopri5 in eta (cresshift's adaptive solver) against scipy's DOP853 in lambda.
    sched = ExactSchedule(v1)
    P = GaussianMixtureProblem(sched, dim=8, seed=2)
    x_T = P.prior(16, seed=3)
    ref = P.exact_output(x_T, 1.0, sched.t_min)
    other = sample(P.denoiser, P.y.expand_as(x_T), sched, solver="adaptive", nfe=None, x_T=x_T, rtol=1e-9, atol=1e-9)
    assert float((other.x - ref).abs().max()) < 1e-5
    # ... and the problem is not trivial: a coarse solver is far from it.
    coarse = sample(P.denoiser, P.y.expand_as(x_T), sched, solver="euler", nfe=5, rho=1.0, x_T=x_T)
    assert float((coarse.x - ref).abs().max()) > 1e-2


def test_empirical_denoiser_is_a_point_mass_mixture(exp_v1):
    # One dimension, N patches: the empirical posterior is a mixture of N (almost) point masses.
    patches = torch.tensor([[-0.7], [0.1], [0.15], [0.9]], dtype=torch.float64)
    y = torch.tensor([[0.3]], dtype=torch.float64)
    E = EmpiricalProblem(exp_v1, patches, y)
    M = GaussianMixtureProblem(exp_v1, dim=1, seed=0, components=(4, 4))
    M.m, M.s, M.y = patches.T.clone(), torch.full((1, 4), 1e-9, dtype=torch.float64), y
    M.w = torch.full((1, 4), 0.25, dtype=torch.float64)
    M._log_w = torch.log(M.w)
    x = torch.linspace(-2, 2, 41, dtype=torch.float64)[:, None]
    for t in (1.0, 0.5, 0.1, 1 / 15):
        tt = torch.full((41,), t, dtype=torch.float64)
        torch.testing.assert_close(E.denoiser(x, tt), M.denoiser(x, tt), rtol=0, atol=1e-10)


def test_empirical_from_bundled_tile(v1):
    P = EmpiricalProblem.from_image(ExactSchedule(v1), count=64, patch=4)
    assert P.patches.shape == (64, 16) and P.y.shape == (1, 16)
    assert float(P.patches.min()) >= -1 and float(P.patches.max()) <= 1 and float(P.patches.std()) > 0.01
    # y is the LR-like version of the mean patch: 2x2 block averages, repeated.
    blocks = P.patches.mean(0).reshape(2, 2, 2, 2).permute(0, 2, 1, 3).reshape(4, 4).mean(1)
    torch.testing.assert_close(P.y.reshape(2, 2, 2, 2).permute(0, 2, 1, 3).reshape(4, 4),
                               blocks[:, None].expand(4, 4), rtol=0, atol=1e-12)

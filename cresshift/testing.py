"""Analytic test problems with exact solutions (used by the tests and the solver benchmark)."""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["GaussianProblem"]


class GaussianProblem:
    """x0 ~ N(mu, diag s^2) with a fixed shift target y: exact denoiser and exact ODE/SDE solutions.

    Marginal: x_t ~ N(m(eta), v(eta)) per coordinate with m = (1 - eta) mu + eta y and
    v = (1 - eta)^2 s^2 + kappa^2 eta. The exact x0-denoiser is the posterior mean
    ``E[x0 | x_t] = mu + (1 - eta) s^2 / v (x_t - m)``. Along the probability-flow ODE the
    standardised coordinate ``(x - m)/sqrt(v)`` is constant, so the exact solution is affine in
    x_T: ``x(eta) = m(eta) + sqrt(v(eta)/v(eta_T)) (x_T - m(eta_T))``.
    """

    def __init__(self, schedule: Any, dim: int = 64, *, seed: int = 0, dtype: torch.dtype = torch.float64) -> None:
        g = torch.Generator().manual_seed(seed)
        self.schedule = schedule
        self.kappa = float(schedule.kappa)
        # Drawn in float64 whatever the dtype, so problems of different dtypes are the same problem.
        self.mu = torch.randn(1, dim, generator=g, dtype=torch.float64).to(dtype)
        self.s = (0.2 + 0.8 * torch.rand(1, dim, generator=g, dtype=torch.float64)).to(dtype)
        self.y = (self.mu.double() + 0.5 * torch.randn(1, dim, generator=g, dtype=torch.float64)).to(dtype)

    def _eta(self, t: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.schedule.eta(t.to(torch.float64)), dtype=self.mu.dtype).reshape(-1, 1)

    def mean(self, eta: Any) -> torch.Tensor:
        return (1 - eta) * self.mu + eta * self.y

    def var(self, eta: Any) -> torch.Tensor:
        return (1 - eta) ** 2 * self.s ** 2 + self.kappa ** 2 * eta

    def denoiser(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The exact posterior mean E[x0 | x_t]."""
        eta = self._eta(t).to(x.dtype)
        return self.mu + (1 - eta) * self.s ** 2 / self.var(eta) * (x - self.mean(eta))

    def ode_solution(self, x_T: torch.Tensor, eta_T: float, eta: float) -> torch.Tensor:
        """The exact probability-flow ODE solution at eta from x_T at eta_T."""
        return self.mean(eta) + torch.sqrt(self.var(eta) / self.var(eta_T)) * (x_T - self.mean(eta_T))

    def exact_output(self, x_T: torch.Tensor, t_T: float, t_min: float) -> torch.Tensor:
        """What a perfect ODE solver returns: x0_hat at t_min of the exact trajectory."""
        eta_T, eta_min = float(self.schedule.eta(t_T)), float(self.schedule.eta(t_min))
        x = self.ode_solution(x_T, eta_T, eta_min)
        return self.denoiser(x, torch.full((x.shape[0],), t_min, dtype=x.dtype))

    def prior(self, n: int, t_T: float = 1.0, seed: int = 1) -> torch.Tensor:
        """n samples of x_T from the model's own marginal at t_T (y + kappa sqrt(eta) z would ignore x0)."""
        g = torch.Generator().manual_seed(seed)
        eta = float(self.schedule.eta(t_T))
        z = torch.randn(n, self.mu.shape[1], generator=g, dtype=self.mu.dtype)
        return self.mean(eta) + torch.sqrt(self.var(eta)) * z

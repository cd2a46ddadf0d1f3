"""Model-agnostic conversions from an x0-predictor to eps, score and ODE velocity (design §4).

Given ``x0_hat = D(x, t)``, the shift target ``y`` and ``eta = eta(t)``, with
``m = (1 - eta) x0_hat + eta y`` (the marginal's mean):

    eps_hat = (x - m) / (kappa sqrt(eta))
    score   = -(x - m) / (kappa^2 eta)
    dx/deta = (y - x0_hat) + (x - m) / (2 eta)      (probability-flow ODE in eta-time)
    dx/dt   = alpha(t) dx/deta                      (the paper's eq. 1)

``eta`` may be a float or a tensor broadcastable to ``x`` (a [B] tensor is reshaped to
[B, 1, 1, 1]). Also the exact change of variables to the EDM ODE
``dx~/dsigma~ = (x~ - D~) / sigma~`` with ``x~ = (x - y)/(1 - eta)``,
``sigma~ = kappa sqrt(eta) / (1 - eta)``, ``D~ = x0_hat - y``.
"""
from __future__ import annotations

from typing import Any, Union

import torch

__all__ = ["x0_to_eps", "x0_to_score", "x0_to_velocity", "x0_to_velocity_t", "eps_to_x0",
           "to_edm", "from_edm", "edm_sigma", "sqrt_eta_of_sigma"]

Scalar = Union[float, torch.Tensor]


def _b(eta: Scalar, x: torch.Tensor) -> Any:
    """Broadcast a float or a [B] tensor against x [B, ...]."""
    if isinstance(eta, torch.Tensor):
        if eta.ndim == 1 and x.ndim > 1 and eta.shape[0] == x.shape[0]:
            eta = eta.reshape(-1, *([1] * (x.ndim - 1)))
        return eta.to(device=x.device, dtype=x.dtype)
    return float(eta)


def marginal_mean(x0_hat: torch.Tensor, y: torch.Tensor, eta: Scalar) -> torch.Tensor:
    """m = x0_hat + eta (y - x0_hat)."""
    e = _b(eta, x0_hat)
    return x0_hat + e * (y - x0_hat)


def x0_to_eps(x: torch.Tensor, x0_hat: torch.Tensor, y: torch.Tensor, eta: Scalar, kappa: float) -> torch.Tensor:
    """eps_hat = (x - m) / (kappa sqrt(eta))."""
    e = _b(eta, x)
    return (x - marginal_mean(x0_hat, y, eta)) / (kappa * (e ** 0.5))


def eps_to_x0(x: torch.Tensor, eps: torch.Tensor, y: torch.Tensor, eta: Scalar, kappa: float) -> torch.Tensor:
    """The inverse of ``x0_to_eps``: x0 = (x - kappa sqrt(eta) eps - eta y) / (1 - eta)."""
    e = _b(eta, x)
    return (x - kappa * (e ** 0.5) * eps - e * y) / (1 - e)


def x0_to_score(x: torch.Tensor, x0_hat: torch.Tensor, y: torch.Tensor, eta: Scalar, kappa: float) -> torch.Tensor:
    """score = -(x - m) / (kappa^2 eta) (the paper's kappa^2 alpha_t there is a typo)."""
    e = _b(eta, x)
    return -(x - marginal_mean(x0_hat, y, eta)) / (kappa ** 2 * e)


def x0_to_velocity(x: torch.Tensor, x0_hat: torch.Tensor, y: torch.Tensor, eta: Scalar) -> torch.Tensor:
    """dx/deta = (y - x0_hat) + (x - m) / (2 eta): the probability-flow ODE in eta-time."""
    e = _b(eta, x)
    return (y - x0_hat) + (x - marginal_mean(x0_hat, y, eta)) / (2 * e)


def x0_to_velocity_t(x: torch.Tensor, x0_hat: torch.Tensor, y: torch.Tensor, eta: Scalar,
                     alpha: Scalar) -> torch.Tensor:
    """dx/dt = alpha(t) dx/deta (the paper's eq. 1)."""
    return _b(alpha, x) * x0_to_velocity(x, x0_hat, y, eta)


def edm_sigma(eta: Scalar, kappa: float) -> Scalar:
    """sigma~ = kappa sqrt(eta) / (1 - eta)."""
    return kappa * eta ** 0.5 / (1 - eta)


def sqrt_eta_of_sigma(sigma: Any, kappa: float) -> Any:
    """The inverse of ``edm_sigma``: u = sqrt(eta) = 2 sigma~ / (kappa + sqrt(kappa^2 + 4 sigma~^2)) (no cancellation)."""
    return 2 * sigma / (kappa + (kappa ** 2 + 4 * sigma ** 2) ** 0.5)


def to_edm(x: torch.Tensor, y: torch.Tensor, eta: Scalar) -> torch.Tensor:
    """x~ = (x - y) / (1 - eta)."""
    return (x - y) / (1 - _b(eta, x))


def from_edm(x_tilde: torch.Tensor, y: torch.Tensor, eta: Scalar) -> torch.Tensor:
    """x = y + (1 - eta) x~."""
    return y + (1 - _b(eta, x_tilde)) * x_tilde


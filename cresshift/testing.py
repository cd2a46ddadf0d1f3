"""Analytic test problems with exact denoisers (used by the tests and the solver benchmark).

Each problem has ``schedule``, a fixed shift target ``y`` [1, D], ``denoiser(x, t) -> x0_hat``
(the exact posterior mean E[x0 | x_t], usable by any solver), ``prior(n, seed)`` (x_T drawn
from the model's own marginal at t = 1) and ``exact_output(x_T, t_T, t_min)`` (what a perfect
ODE solver returns: x0_hat at t_min of the probability-flow trajectory; closed form for
``GaussianProblem``, ``reference_output`` for the others).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from .converters import edm_sigma, sqrt_eta_of_sigma
from .schedules import as_continuous

__all__ = ["GaussianProblem", "GaussianMixtureProblem", "EmpiricalProblem", "reference_output"]


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


def reference_output(denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], y: torch.Tensor,
                     x_T: torch.Tensor, schedule: Any, t_T: float = 1.0, t_min: Optional[float] = None,
                     *, rtol: float = 1e-10, atol: float = 1e-12) -> torch.Tensor:
    """x0_hat at ``t_min`` of the probability-flow trajectory from ``x_T`` at ``t_T``, by scipy's DOP853.

    Integrated in EDM coordinates (design §4): ``x~ = (x - y)/(1 - eta)`` in
    ``lambda = -log sigma~``, where the ODE reads ``dx~/dlambda = D~ - x~`` with ``D~ = x0_hat - y``
    (smooth on the whole range, unlike eta near eta(1/T)). float64 throughout.
    """
    from scipy.integrate import solve_ivp

    sched = as_continuous(schedule)
    t_min = sched.t_min if t_min is None else t_min
    y64 = y.double().expand_as(x_T)
    eta_T, eta_min = float(sched.eta(t_T)), float(sched.eta(t_min))
    lam0, lam1 = -math.log(edm_sigma(eta_T, sched.kappa)), -math.log(edm_sigma(eta_min, sched.kappa))

    def t_eta(lam: float) -> tuple[float, float]:
        u = sqrt_eta_of_sigma(math.exp(-lam), sched.kappa)
        return float(sched.t_of_eta(u * u)), u * u

    def rhs(lam: float, z: np.ndarray) -> np.ndarray:
        t, eta = t_eta(lam)
        zt = torch.from_numpy(z).reshape(x_T.shape)
        x = y64 + (1 - eta) * zt
        d = denoiser(x, torch.full((x.shape[0],), t, dtype=torch.float64)).double() - y64
        return (d - zt).reshape(-1).numpy()

    z0 = ((x_T.double() - y64) / (1 - eta_T)).reshape(-1).numpy()
    sol = solve_ivp(rhs, (lam0, lam1), z0, method="DOP853", rtol=rtol, atol=atol)
    if not sol.success:  # pragma: no cover - DOP853 on a smooth field
        raise RuntimeError(f"reference integration failed: {sol.message}")
    x = y64 + (1 - eta_min) * torch.from_numpy(sol.y[:, -1]).reshape(x_T.shape)
    out = denoiser(x, torch.full((x.shape[0],), t_min, dtype=torch.float64))
    return out.to(x_T.dtype)


class _ProblemBase:
    """Shared by the non-Gaussian problems: the schedule, the prior draw and the reference output."""

    schedule: Any
    kappa: float
    y: torch.Tensor

    def _eta(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.schedule.eta(t.to(torch.float64)), dtype=torch.float64).reshape(-1, 1).to(like.dtype)

    def exact_output(self, x_T: torch.Tensor, t_T: float, t_min: float) -> torch.Tensor:
        """x0_hat at t_min of the trajectory from x_T, by ``reference_output`` (DOP853, rtol 1e-10)."""
        return reference_output(self.denoiser, self.y, x_T, self.schedule, t_T, t_min)

    def denoiser(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample_x0(self, n: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def prior(self, n: int, t_T: float = 1.0, seed: int = 1) -> torch.Tensor:
        """n samples of x_T from the model's marginal at t_T: x0 from the prior, then the forward process."""
        g = torch.Generator().manual_seed(seed)
        eta = float(self.schedule.eta(t_T))
        x0 = self.sample_x0(n, g)
        z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        return (x0 + eta * (self.y.double() - x0) + self.kappa * math.sqrt(eta) * z).to(self.y.dtype)


class GaussianMixtureProblem(_ProblemBase):
    """Per-dimension Gaussian-mixture prior with a fixed shift target y: the exact x0-denoiser.

    Dimension d has K_d in [k_min, k_max] components with weights w, means m ~ N(0, 1) and stds
    s in [s_min, s_max]. Given x0 the marginal is N((1 - eta) x0 + eta y, kappa^2 eta), so x_t is
    a mixture of N(mean_k, v_k), mean_k = (1 - eta) m_k + eta y, v_k = (1 - eta)^2 s_k^2 + kappa^2 eta,
    and ``E[x0 | x_t] = sum_k r_k (m_k + (1 - eta) s_k^2 / v_k (x_t - mean_k))`` with
    responsibilities ``r_k`` proportional to ``w_k N(x_t; mean_k, v_k)``.
    """

    def __init__(self, schedule: Any, dim: int = 64, *, seed: int = 0, components: tuple[int, int] = (2, 8),
                 std: tuple[float, float] = (0.02, 0.12), dtype: torch.dtype = torch.float64) -> None:
        g = torch.Generator().manual_seed(seed)
        self.schedule = schedule
        self.kappa = float(schedule.kappa)
        k_max = components[1]
        counts = torch.randint(components[0], k_max + 1, (dim,), generator=g)
        self.active = torch.arange(k_max)[None, :] < counts[:, None]  # [D, K]
        w = torch.rand(dim, k_max, generator=g, dtype=torch.float64) + 0.2
        w = torch.where(self.active, w, torch.zeros_like(w))
        self.w = w / w.sum(1, keepdim=True)
        self._log_w = torch.where(self.active, torch.log(self.w.clamp_min(1e-300)), torch.full_like(w, -math.inf))
        self.m = torch.randn(dim, k_max, generator=g, dtype=torch.float64)
        self.s = std[0] + (std[1] - std[0]) * torch.rand(dim, k_max, generator=g, dtype=torch.float64)
        self.y = (0.5 * torch.randn(1, dim, generator=g, dtype=torch.float64)).to(dtype)

    def denoiser(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The exact posterior mean E[x0 | x_t] (float64 inside, returned in x's dtype)."""
        eta = self._eta(t, x.double())[..., None]  # [B, 1, 1]
        xd, yd = x.double()[..., None], self.y.double()[..., None]  # [B, D, 1], [1, D, 1]
        mean = (1 - eta) * self.m + eta * yd
        v = (1 - eta) ** 2 * self.s ** 2 + self.kappa ** 2 * eta
        diff = xd - mean
        r = torch.softmax(self._log_w - 0.5 * torch.log(v) - 0.5 * diff ** 2 / v, dim=-1)
        post = self.m + (1 - eta) * self.s ** 2 / v * diff
        return (r * post).sum(-1).to(x.dtype)

    def sample_x0(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n draws from the mixture prior [n, D] (float64)."""
        k = torch.multinomial(self.w, n, replacement=True, generator=generator).T  # [n, D]
        m, s = self.m.gather(1, k.T).T, self.s.gather(1, k.T).T
        return m + s * torch.randn(m.shape, generator=generator, dtype=torch.float64)


class EmpiricalProblem(_ProblemBase):
    """The optimal denoiser for a finite set of patches (the closed-form "analytic diffusion" denoiser).

    With x0 uniform over patches p_j: ``E[x0 | x_t] = sum_j softmax_j(-|x_t - (1 - eta) p_j - eta y|^2
    / (2 kappa^2 eta)) p_j``. Shows how solvers behave on real image structure. ``from_image``
    cuts the patches from an image (default: a tile of cresshift's bundled test set).
    """

    def __init__(self, schedule: Any, patches: torch.Tensor, y: torch.Tensor) -> None:
        if patches.ndim != 2 or y.shape != (1, patches.shape[1]):
            raise ValueError(f"patches must be [N, D] and y [1, D], got {tuple(patches.shape)} and {tuple(y.shape)}")
        self.schedule = schedule
        self.kappa = float(schedule.kappa)
        self.patches = patches.double()
        self.y = y

    @classmethod
    def from_image(cls, schedule: Any, path: Union[str, Path, None] = None, *, patch: int = 8,
                   count: int = 512, seed: int = 0, dtype: torch.dtype = torch.float64) -> "EmpiricalProblem":
        """``count`` random grayscale ``patch`` x ``patch`` patches in [-1, 1] of an image; y = the 2x
        box-down/up-sampled (LR-like) version of their mean patch."""
        from .data.io import load_image

        if path is None:
            path = sorted((Path(__file__).parent / "bundled" / "testset").glob("*.png"))[0]
        img = load_image(path).double().mean(0)  # [H, W] grayscale in [-1, 1]
        g = torch.Generator().manual_seed(seed)
        h, w = img.shape
        ys = torch.randint(0, h - patch + 1, (count,), generator=g)
        xs = torch.randint(0, w - patch + 1, (count,), generator=g)
        patches = torch.stack([img[a:a + patch, b:b + patch].reshape(-1) for a, b in zip(ys.tolist(), xs.tolist())])
        mean = patches.mean(0).reshape(1, 1, patch, patch)
        low = torch.nn.functional.avg_pool2d(mean, 2).repeat_interleave(2, -1).repeat_interleave(2, -2)
        return cls(schedule, patches.to(dtype), low.reshape(1, -1).to(dtype))

    def denoiser(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The exact posterior mean over the patch set (float64 inside, returned in x's dtype)."""
        xd = x.double()
        eta = self._eta(t, xd)  # [B, 1]
        # |x - c_j|^2 with c_j = (1 - eta) p_j + eta y, expanded: |r|^2 - 2 (1 - eta) r.p_j + (1 - eta)^2 |p_j|^2, r = x - eta y.
        r = xd - eta * self.y.double()
        dist = ((r ** 2).sum(-1, keepdim=True) - 2 * (1 - eta) * r @ self.patches.T
                + (1 - eta) ** 2 * (self.patches ** 2).sum(-1)[None])
        logits = -dist / (2 * self.kappa ** 2 * eta)
        return (torch.softmax(logits, dim=-1) @ self.patches).to(x.dtype)

    def sample_x0(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n patches drawn uniformly from the set [n, D] (float64)."""
        return self.patches[torch.randint(0, len(self.patches), (n,), generator=generator)]

"""Continuous-time schedules eta(t), t in [0, 1], with rate alpha(t) = d eta / dt (design §3).

Every schedule offers ``eta(t)``, ``alpha(t)``, ``t_of_eta(eta)``, ``kappa`` and ``T``; the
methods take Python floats, numpy arrays or torch tensors of any shape and return the same
kind (tensors keep their dtype and device; the arithmetic is done in float64).
The chain's step k lives at ``t_k = k / T``; solvers never go below ``t_min = 1 / T``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .discrete import ResShiftSchedule

__all__ = ["ContinuousSchedule", "ExpAlphaSchedule", "ExactSchedule", "ScheduleMismatchWarning",
           "schedule_from_config", "as_continuous"]


class ScheduleMismatchWarning(UserWarning):
    """A continuous schedule's eta(1) misses the discrete table's eta_T by more than 1 %."""


def _apply(fn: Callable[[torch.Tensor], torch.Tensor], value: Any) -> Any:
    """Evaluate ``fn`` in float64 on ``value`` and return the result in the input's kind."""
    if isinstance(value, torch.Tensor):
        out = fn(value.detach().to(torch.float64))
        return out.to(dtype=value.dtype if value.is_floating_point() else torch.float64)
    if isinstance(value, np.ndarray):
        return fn(torch.from_numpy(value.astype(np.float64))).numpy()
    out = fn(torch.tensor(float(value), dtype=torch.float64))
    return float(out)


class ContinuousSchedule:
    """Base class: a continuous eta(t) with eta(0) = 0, increasing on [0, 1]."""

    kappa: float
    T: int
    #: integration variable a t-stepping solver should default to ("t" needs a finite alpha on [1/T, 1])
    default_variable: str = "t"

    # Subclasses implement these on float64 tensors.
    def _eta(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _t_of_eta(self, eta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def eta(self, t: Any) -> Any:
        """eta(t): the shift coefficient of the marginal x_t = x0 + eta (y - x0) + kappa sqrt(eta) z."""
        return _apply(self._eta, t)

    def alpha(self, t: Any) -> Any:
        """alpha(t) = d eta / dt (the paper's alpha(t))."""
        return _apply(self._alpha, t)

    def t_of_eta(self, eta: Any) -> Any:
        """The inverse of eta(t)."""
        return _apply(self._t_of_eta, eta)

    @property
    def t_min(self) -> float:
        """1 / T, where the chain's first step lives and every solver stops."""
        return 1.0 / self.T

    def step_etas(self) -> np.ndarray:
        """eta(k / T) for k = 1..T (float64): the discrete table this schedule implies."""
        return self.eta(np.arange(1, self.T + 1, dtype=np.float64) / self.T)

    def discrete_error(self, discrete: ResShiftSchedule | Sequence[float]) -> np.ndarray:
        """eta(k/T) - eta_k for k = 1..T against a discrete table."""
        etas = discrete.etas if isinstance(discrete, ResShiftSchedule) else np.asarray(discrete, np.float64)
        if len(etas) != self.T:
            raise ValueError(f"table has {len(etas)} steps, schedule has T={self.T}")
        return self.step_etas() - etas

    def check_end(self, discrete: ResShiftSchedule | Sequence[float], tol: float = 0.01) -> float:
        """Relative miss |eta(1) - eta_T| / eta_T; warns (ScheduleMismatchWarning) above ``tol``."""
        etas = discrete.etas if isinstance(discrete, ResShiftSchedule) else np.asarray(discrete, np.float64)
        rel = abs(self.eta(1.0) - etas[-1]) / etas[-1]
        if rel > tol:
            warnings.warn(
                f"{type(self).__name__}: eta(1) = {self.eta(1.0):.4f} misses the table's eta_T = "
                f"{etas[-1]:.4f} by {100 * rel:.1f} % (> {100 * tol:g} %): the prior x_T does not match "
                f"the marginals the network was trained on", ScheduleMismatchWarning, stacklevel=3)
        return float(rel)

    def to_config(self) -> dict[str, Any]:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExpAlphaSchedule(ContinuousSchedule):
    """The paper's alpha(t) = a (exp(lam t) - 1), eta(t) = a ((exp(lam t) - 1) / lam - t) (eq. 2)."""

    a: float
    lam: float
    kappa: float = 2.0
    T: int = 15
    #: eta(k/T) - eta_k of the fit that produced this schedule (None if not fitted)
    residuals: tuple[float, ...] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.a > 0 and self.lam > 0):
            raise ValueError(f"ExpAlphaSchedule needs a > 0 and lam > 0, got a={self.a}, lam={self.lam}")
        if not self.kappa > 0 or int(self.T) != self.T or self.T < 1:
            raise ValueError(f"bad kappa={self.kappa} or T={self.T}")

    def _eta(self, t: torch.Tensor) -> torch.Tensor:
        return self.a * (torch.expm1(self.lam * t) / self.lam - t)

    def _alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self.a * torch.expm1(self.lam * t)

    def _t_of_eta(self, eta: torch.Tensor) -> torch.Tensor:
        # Solve exp(u) - 1 - u = c with u = lam t, c = lam eta / a, by Newton from the upper
        # bound sqrt(2c) (exp(u) - 1 - u >= u^2 / 2); f is convex and increasing for u > 0, so
        # the iterates decrease monotonically to the root.
        c = (self.lam / self.a) * eta.clamp_min(0)
        u = torch.sqrt(2 * c)
        for _ in range(60):
            f = torch.expm1(u) - u - c
            fp = torch.expm1(u)
            step = torch.where(fp > 0, f / fp.clamp_min(1e-300), torch.zeros_like(u))
            u = u - step
            if bool((step.abs() <= 1e-15 * u.abs().clamp_min(1e-300)).all()):
                break
        return u / self.lam

    @classmethod
    def fit(cls, discrete: ResShiftSchedule, *, warn: bool = True) -> "ExpAlphaSchedule":
        """Least-squares fit of (a, lam) to eta(k/T) = eta_k, k = 1..T (preserves the marginals)."""
        from scipy.optimize import least_squares

        etas = discrete.etas
        T = discrete.T
        tk = np.arange(1, T + 1) / T

        def resid(p: np.ndarray) -> np.ndarray:
            a, lam = p
            return a * (np.expm1(lam * tk) / lam - tk) - etas

        # Start from the paper's construction: lam from the last increment, a by linear LS.
        sol = least_squares(resid, x0=np.array([1.1, 1.1]), bounds=([1e-8, 1e-6], [np.inf, 50.0]),
                            xtol=1e-15, ftol=1e-15, gtol=1e-15)
        a, lam = (float(v) for v in sol.x)
        sched = cls(a=a, lam=lam, kappa=discrete.kappa, T=T, residuals=tuple(resid(sol.x).tolist()))
        if warn:
            sched.check_end(discrete)
        return sched

    @classmethod
    def paper(cls, *, warn: bool = True) -> "ExpAlphaSchedule":
        """The constants the paper's authors ran (design §3): a = 1.1113, lam = ln(1 + 2.3178 / a).

        Their eta(1) = 0.946 misses realsr-v1's eta_T = 0.980 by 3.5 %, hence the warning.
        """
        a = 1.1113
        sched = cls(a=a, lam=math.log(1 + 2.3178 / a), kappa=2.0, T=15)
        if warn:
            sched.check_end(ResShiftSchedule.from_config("realsr-x4-v1"))
        return sched

    def to_config(self) -> dict[str, Any]:
        return dict(type="exp", a=self.a, lam=self.lam, kappa=self.kappa, T=self.T)


# ---------------------------------------------------------------------------------------
class ExactSchedule(ContinuousSchedule):
    """The official eta formula continued to a fractional index: eta(k/T) = eta_k exactly.

    With tau = T t - 1 in [0, T-1]:
    ``sqrt_eta(tau) = sqrt_eta_1 (etas_end / sqrt_eta_1) ** ((tau / (T-1)) ** power)``; below
    t = 1/T it continues as ``eta_1 (T t)^2`` down to eta(0) = 0. Its rate alpha(t) diverges
    (integrably) at t = 1/T from above when power < 1, so t-stepping solvers default to the
    sqrt(eta) variable on it (in eta, Heun's last step is unstable for the noise part of x:
    ``cresshift.solvers.ode.heun_noise_factors``). Given a bare table (no formula), it falls back to a monotone PCHIP
    interpolant through (0, 0), (k/T, eta_k).
    """

    default_variable = "sqrt_eta"

    def __init__(self, discrete: ResShiftSchedule | Sequence[float], kappa: float | None = None) -> None:
        if isinstance(discrete, ResShiftSchedule):
            self.discrete: ResShiftSchedule | None = discrete
            self.kappa = discrete.kappa if kappa is None else float(kappa)
            self.T = discrete.T
            self._etas = discrete.etas
            self._pchip = None
        else:
            etas = np.asarray(discrete, dtype=np.float64)
            if etas.ndim != 1 or len(etas) < 2:
                raise ValueError("ExactSchedule needs a ResShiftSchedule or a 1-D table of at least 2 etas")
            if not (np.all(np.diff(etas) > 0) and etas[0] > 0):
                raise ValueError("the eta table must be positive and strictly increasing")
            if kappa is None:
                raise ValueError("ExactSchedule on a bare eta table needs kappa=")
            from scipy.interpolate import PchipInterpolator

            self.discrete = None
            self.kappa = float(kappa)
            self.T = len(etas)
            self._etas = etas
            knots = np.concatenate([[0.0], np.arange(1, self.T + 1) / self.T])
            self._pchip = PchipInterpolator(knots, np.concatenate([[0.0], etas]), extrapolate=True)
            self.default_variable = "t"

    def __repr__(self) -> str:
        src = repr(self.discrete) if self.discrete is not None else f"table of {self.T} etas (PCHIP)"
        return f"ExactSchedule({src})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ExactSchedule) and other.kappa == self.kappa
                and np.array_equal(other._etas, self._etas))

    __hash__ = None  # type: ignore[assignment]

    # --- the official formula on a fractional index -------------------------------------
    def _formula_parts(self) -> tuple[float, float, float, int]:
        d = self.discrete
        assert d is not None
        start = d.sqrt_eta_1
        log_ratio = math.log(d.etas_end / start)
        increaser = math.exp(1 / (d.T - 1) * log_ratio)
        return start, log_ratio, increaser, d.T

    def _eta(self, t: torch.Tensor) -> torch.Tensor:
        if self._pchip is not None:
            return torch.from_numpy(self._pchip(t.cpu().numpy())).to(t.device)
        start, _, increaser, T = self._formula_parts()
        p = self.discrete.power  # type: ignore[union-attr]
        tau = (T * t - 1).clamp_min(0)
        # Same numeric path as the official table: increaser ** ((tau / (T-1)) ** p * (T-1)) * start.
        sqrt_eta = torch.pow(torch.as_tensor(increaser, dtype=t.dtype), (tau / (T - 1)) ** p * (T - 1)) * start
        above = sqrt_eta ** 2
        below = self._etas[0] * (T * t) ** 2
        return torch.where(T * t >= 1, above, below)

    def _alpha(self, t: torch.Tensor) -> torch.Tensor:
        if self._pchip is not None:
            return torch.from_numpy(self._pchip.derivative()(t.cpu().numpy())).to(t.device)
        start, log_ratio, _, T = self._formula_parts()
        p = self.discrete.power  # type: ignore[union-attr]
        tau = T * t - 1
        x = (tau / (T - 1)).clamp_min(0)
        # d eta / dt = eta * 2 log_ratio * p x^(p-1) * T / (T-1); 0 ** (p-1) = inf for p < 1.
        above = self._eta(t) * 2 * log_ratio * p * x ** (p - 1) * T / (T - 1)
        below = 2 * self._etas[0] * T * T * t
        return torch.where(tau >= 0, above, below)

    def _t_of_eta(self, eta: torch.Tensor) -> torch.Tensor:
        eta1 = float(self._etas[0])
        if self._pchip is not None:
            return torch.from_numpy(self._bisect(eta.cpu().numpy())).to(eta.device)
        start, log_ratio, _, T = self._formula_parts()
        p = self.discrete.power  # type: ignore[union-attr]
        q = (torch.log(eta.clamp_min(eta1)) - 2 * math.log(start)) / (2 * log_ratio)
        above = ((T - 1) * q.clamp_min(0) ** (1 / p) + 1) / T
        below = torch.sqrt(eta.clamp_min(0) / eta1) / T
        return torch.where(eta >= eta1, above, below)

    def _bisect(self, eta: np.ndarray) -> np.ndarray:
        lo = np.zeros_like(eta)
        hi = np.ones_like(eta)
        while np.any(self._pchip(hi) < eta):  # extend for eta beyond eta(1)
            hi = np.where(self._pchip(hi) < eta, hi * 2, hi)
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            below = self._pchip(mid) < eta
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def to_config(self) -> dict[str, Any]:
        if self.discrete is not None:
            return dict(type="exact", discrete=self.discrete.to_config())
        return dict(type="interp", etas=self._etas.tolist(), kappa=self.kappa)


# ---------------------------------------------------------------------------------------
def schedule_from_config(config: Mapping[str, Any]) -> ResShiftSchedule | ContinuousSchedule:
    """Rebuild a schedule from its ``to_config()`` dict (as stored in cresshift checkpoints)."""
    kind = config.get("type", "discrete")
    if kind == "exp":
        return ExpAlphaSchedule(a=float(config["a"]), lam=float(config["lam"]),
                                kappa=float(config["kappa"]), T=int(config["T"]))
    if kind == "exact":
        return ExactSchedule(ResShiftSchedule.from_config(config["discrete"]))
    if kind == "interp":
        return ExactSchedule(config["etas"], kappa=float(config["kappa"]))
    if kind in ("discrete", "exponential"):
        return ResShiftSchedule.from_config({k: v for k, v in config.items() if k != "type"})
    raise ValueError(f"unknown schedule type {kind!r} (expected exp, exact, interp or discrete)")


def as_continuous(schedule: ResShiftSchedule | ContinuousSchedule) -> ContinuousSchedule:
    """A continuous schedule for ODE/SDE solvers: a discrete table is continued exactly."""
    if isinstance(schedule, ContinuousSchedule):
        return schedule
    if isinstance(schedule, ResShiftSchedule):
        return ExactSchedule(schedule)
    raise TypeError(f"expected a ResShiftSchedule or a ContinuousSchedule, got {type(schedule).__name__}")

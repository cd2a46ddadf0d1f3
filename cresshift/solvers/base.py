"""What every solver shares: the denoiser protocol, NFE counting, integration variables.

Glossary (used across ``cresshift.solvers``):
``x`` the state, ``y`` the shift target (upsampled LR or its latent), ``x0_hat`` the
denoiser's estimate of the HR image, ``t`` continuous time in [1/T, 1], ``eta = eta(t)``,
``kappa`` the noise scale, ``t_cur`` / ``t_next`` the ends of one step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Union, runtime_checkable

import numpy as np
import torch

from ..converters import edm_sigma, sqrt_eta_of_sigma, x0_to_velocity

__all__ = ["Denoiser", "SampleResult", "NonFiniteError", "BudgetExceeded", "CountingDenoiser", "Variable",
           "VARIABLES", "Callback", "as_variable", "Chain", "TimeVariable", "EtaVariable", "SqrtEtaVariable", "SigmaVariable"]


@runtime_checkable
class Denoiser(Protocol):
    """``denoiser(x, t) -> x0_hat``; ``t`` is a float tensor of shape [B] with values in (0, 1]."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


Callback = Callable[[dict[str, Any]], None]


@dataclass
class SampleResult:
    """The output of ``cresshift.sample``: the sample ``x``, the network calls made, the grid used."""

    x: torch.Tensor
    nfe: int
    ts: np.ndarray
    solver: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Chain:
    """What a solver's grid hook prepares: the decreasing times it evaluates the network at
    (``SampleResult.ts``), eta at the first (for the prior draw) and the keyword arguments its
    function takes besides model, x, y (e.g. ``schedule`` and ``ts``)."""

    ts: np.ndarray
    eta_start: float
    kwargs: dict[str, Any]


class NonFiniteError(FloatingPointError):
    """The denoiser returned NaN or Inf."""


class BudgetExceeded(RuntimeError):
    """A solver asked for more network calls than its NFE budget."""


class CountingDenoiser:
    """Calls the denoiser with a [B] time tensor, counts every call, checks the output is finite.

    ``budget`` (if not None) is a hard cap: call number budget + 1 raises ``BudgetExceeded``.
    ``defer_finite_check=True`` keeps each call's finiteness as a device flag instead of reading it
    at once (a host sync per call); ``check_finite()`` then raises for the first bad call.
    """

    def __init__(self, denoiser: Denoiser, budget: Optional[int] = None, defer_finite_check: bool = False) -> None:
        self.denoiser = denoiser
        self.budget = budget
        self.calls = 0
        self.defer_finite_check = defer_finite_check
        self._finite_flags: list[tuple[torch.Tensor, str, float]] = []

    def __call__(self, x: torch.Tensor, t: float, step: Any = None) -> torch.Tensor:
        if self.budget is not None and self.calls >= self.budget:
            raise BudgetExceeded(f"the solver needs more than nfe={self.budget} network calls")
        t_vec = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
        x0_hat = self.denoiser(x, t_vec)
        self.calls += 1
        if not isinstance(x0_hat, torch.Tensor) or x0_hat.shape != x.shape:
            got = tuple(x0_hat.shape) if isinstance(x0_hat, torch.Tensor) else type(x0_hat).__name__
            raise ValueError(f"the denoiser must return x0_hat shaped like x {tuple(x.shape)}, got {got}")
        where = f"step {step}" if step is not None else f"call {self.calls}"
        finite = torch.isfinite(x0_hat).all()
        if self.defer_finite_check:
            self._finite_flags.append((finite, where, float(t)))
        elif not bool(finite):
            self._raise_non_finite(where, float(t), self.calls)
        return x0_hat

    def check_finite(self) -> None:
        """Raise ``NonFiniteError`` for the first deferred call whose output was not finite (one host sync)."""
        if not self._finite_flags:
            return
        flags = torch.stack([flag for flag, _, _ in self._finite_flags]).cpu()
        bad = (~flags).nonzero()
        if len(bad):
            call = int(bad[0])
            _, where, t = self._finite_flags[call]
            self._raise_non_finite(where, t, call + 1)

    @staticmethod
    def _raise_non_finite(where: str, t: float, call: int) -> None:
        raise NonFiniteError(f"the denoiser returned NaN/Inf at {where} (t = {t:.6g}, "
                             f"network call {call}); check the model, its dtype and its inputs")


class Variable:
    """An integration variable: the coordinate c a solver steps in, its inverse, the state and d state / dc.

    ``Variable(name)`` returns the registered variable (``VARIABLES``):

    * ``t``: state x, coordinate t, dx/dt = alpha(t) dx/deta (the paper's eq. 1);
    * ``eta``: state x, coordinate eta, dx/deta (no alpha: the same ODE, free of alpha's shape);
    * ``sigma``: the exact change of variables to the EDM ODE, state x~ = (x - y) / (1 - eta),
      coordinate sigma~ = kappa sqrt(eta) / (1 - eta), dx~/dsigma~ = (x~ - D~) / sigma~;
    * ``sqrt_eta``: state x, coordinate u = sqrt(eta), dx/du = 2 u dx/deta. The noise part of x
      (kappa u z) is linear in u, so Euler and Heun carry it exactly; in eta it is stiff near
      eta(1/T) (rate 1 / (2 eta); ``cresshift.solvers.ode.heun_noise_factors``).
    """

    name: str = ""
    #: whether ``derivative`` needs alpha(t) (the schedule's rate must be finite on the grid)
    needs_alpha: bool = False

    def __new__(cls, name: Optional[str] = None) -> "Variable":
        if cls is Variable:
            if name not in VARIABLES:
                raise ValueError(f"unknown integration variable {name!r}; valid: {', '.join(VARIABLES)}")
            cls = VARIABLES[name]
        return super().__new__(cls)

    def __init__(self, name: Optional[str] = None) -> None:
        pass

    def __repr__(self) -> str:
        return f"Variable({self.name!r})"

    def coords(self, ts: np.ndarray, etas: np.ndarray, kappa: float) -> np.ndarray:
        """The coordinate at each grid time (float64)."""
        raise NotImplementedError

    def inverse(self, c: float, schedule: Any) -> tuple[float, float]:
        """(t, eta) at coordinate ``c`` on a continuous schedule."""
        raise NotImplementedError

    def velocity_scale(self, eta: float, alpha: float, coord: float) -> float:
        """d eta / dc: the factor turning dx/deta into d state / dc (state x)."""
        raise NotImplementedError

    def derivative(self, z: torch.Tensor, x0_hat: torch.Tensor, y: torch.Tensor, eta: float,
                   alpha: float, coord: float) -> torch.Tensor:
        """d state / d coordinate at one grid point."""
        return self.velocity_scale(eta, alpha, coord) * x0_to_velocity(z, x0_hat, y, eta)

    def noise_rate(self, eta: np.ndarray, alpha: np.ndarray, coord: np.ndarray) -> np.ndarray:
        """k in dn/dc = k n for the state's noise part n (kappa sqrt(eta) z in x): (d eta / dc) / (2 eta)."""
        return self.velocity_scale(eta, alpha, coord) / (2 * eta)

    def state_scale(self, eta: np.ndarray) -> Any:
        """x - y = state_scale(eta) (state - y'): 1 for the x-state variables."""
        return np.ones_like(np.asarray(eta, np.float64))

    def to_state(self, x: torch.Tensor, y: torch.Tensor, eta: float) -> torch.Tensor:
        return x

    def from_state(self, z: torch.Tensor, y: torch.Tensor, eta: float) -> torch.Tensor:
        return z


class TimeVariable(Variable):
    """Coordinate t; dx/dt = alpha(t) dx/deta."""

    name = "t"
    needs_alpha = True

    def coords(self, ts: np.ndarray, etas: np.ndarray, kappa: float) -> np.ndarray:
        return np.asarray(ts, np.float64)

    def inverse(self, c: float, schedule: Any) -> tuple[float, float]:
        return c, float(schedule.eta(c))

    def velocity_scale(self, eta: Any, alpha: Any, coord: Any) -> Any:
        return alpha


class EtaVariable(Variable):
    """Coordinate eta; dx/deta."""

    name = "eta"

    def coords(self, ts: np.ndarray, etas: np.ndarray, kappa: float) -> np.ndarray:
        return np.asarray(etas, np.float64)

    def inverse(self, c: float, schedule: Any) -> tuple[float, float]:
        return float(schedule.t_of_eta(c)), c

    def velocity_scale(self, eta: Any, alpha: Any, coord: Any) -> Any:
        return 1.0 + 0 * coord


class SqrtEtaVariable(Variable):
    """Coordinate u = sqrt(eta); dx/du = 2 u dx/deta."""

    name = "sqrt_eta"

    def coords(self, ts: np.ndarray, etas: np.ndarray, kappa: float) -> np.ndarray:
        return np.sqrt(np.asarray(etas, np.float64))

    def inverse(self, c: float, schedule: Any) -> tuple[float, float]:
        return float(schedule.t_of_eta(c * c)), c * c

    def velocity_scale(self, eta: Any, alpha: Any, coord: Any) -> Any:
        return 2 * coord


class SigmaVariable(Variable):
    """EDM coordinates: state x~ = (x - y) / (1 - eta), coordinate sigma~, dx~/dsigma~ = (x~ - D~) / sigma~."""

    name = "sigma"

    def coords(self, ts: np.ndarray, etas: np.ndarray, kappa: float) -> np.ndarray:
        return edm_sigma(np.asarray(etas, np.float64), kappa)

    def inverse(self, c: float, schedule: Any) -> tuple[float, float]:
        u = sqrt_eta_of_sigma(c, schedule.kappa)
        return float(schedule.t_of_eta(u * u)), u * u

    def derivative(self, z: torch.Tensor, x0_hat: torch.Tensor, y: torch.Tensor, eta: float,
                   alpha: float, coord: float) -> torch.Tensor:
        return (z - (x0_hat - y)) / coord

    def noise_rate(self, eta: np.ndarray, alpha: np.ndarray, coord: np.ndarray) -> np.ndarray:
        return 1 / np.asarray(coord, np.float64)

    def state_scale(self, eta: np.ndarray) -> Any:
        return 1 - np.asarray(eta, np.float64)

    def to_state(self, x: torch.Tensor, y: torch.Tensor, eta: float) -> torch.Tensor:
        return (x - y) / (1 - eta)

    def from_state(self, z: torch.Tensor, y: torch.Tensor, eta: float) -> torch.Tensor:
        return y + (1 - eta) * z


VARIABLES: dict[str, type[Variable]] = {v.name: v for v in (TimeVariable, EtaVariable, SigmaVariable, SqrtEtaVariable)}


def as_variable(variable: Union[str, Variable]) -> Variable:
    """A Variable from its name (or itself)."""
    return variable if isinstance(variable, Variable) else Variable(variable)

"""The official ResShift discrete eta table (design §2).

Glossary: ``T`` chain length, ``eta_k`` (k = 1..T) the increasing shift schedule,
``kappa`` the noise scale, ``a_k = eta_k - eta_{k-1}`` the discrete increment (never a bare
``alpha``: that name is reserved for the continuous rate d eta / dt).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

__all__ = ["ResShiftSchedule", "PRESETS", "respaced_indices"]

# Official `diffusion.params` of the released configurations.
PRESETS: dict[str, dict[str, Any]] = {
    "realsr-x4-v1": dict(steps=15, kappa=2.0, min_noise_level=0.04, etas_end=0.99, schedule_kwargs={"power": 0.3}),
    "realsr-x4-v2": dict(steps=15, kappa=2.0, min_noise_level=0.04, etas_end=0.99, schedule_kwargs={"power": 0.3}),
    "realsr-x4-v3": dict(steps=4, kappa=2.0, min_noise_level=0.2, etas_end=0.99, schedule_kwargs={"power": 0.3}),
    "bicsr-x4": dict(steps=4, kappa=2.0, min_noise_level=0.2, etas_end=0.99, schedule_kwargs={"power": 0.3}),
}


def respaced_indices(T: int, steps: int) -> list[int]:
    """0-based indices of a T-step chain kept by the official respacing to ``steps`` steps: ``{int(T/S i) : i < S}``."""
    if not 1 <= steps <= T:
        raise ValueError(f"respacing needs 1 <= steps <= T={T}, got {steps}")
    return sorted({int(T / steps * i) for i in range(steps)})


@dataclass(frozen=True)
class ResShiftSchedule:
    """The official 'exponential' eta table of ResShift, reproduced to float64 round-off."""

    T: int
    kappa: float = 2.0
    min_noise_level: float = 0.04
    etas_end: float = 0.99
    power: float = 0.3

    def __post_init__(self) -> None:
        if int(self.T) != self.T or self.T < 2:
            raise ValueError(f"T must be an integer >= 2, got {self.T}")
        if not self.kappa > 0:
            raise ValueError(f"kappa must be positive, got {self.kappa}")
        if not 0 < self.min_noise_level:
            raise ValueError(f"min_noise_level must be positive, got {self.min_noise_level}")
        if not self.sqrt_eta_1 < self.etas_end < 1:
            raise ValueError(
                f"etas_end must lie in (sqrt_eta_1={self.sqrt_eta_1:g}, 1), got {self.etas_end}")
        if not self.power > 0:
            raise ValueError(f"power must be positive, got {self.power}")

    # --- construction -----------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Mapping[str, Any] | str) -> "ResShiftSchedule":
        """Build from an official ``diffusion.params`` dict or a preset name (``realsr-x4-v1`` ...)."""
        if isinstance(config, str):
            if config not in PRESETS:
                raise ValueError(f"unknown schedule preset {config!r}; valid presets: {', '.join(PRESETS)}")
            config = PRESETS[config]
        name = config.get("schedule_name", "exponential")
        if name != "exponential":
            raise ValueError(f"only the official 'exponential' schedule is supported, got schedule_name={name!r}")
        missing = [k for k in ("steps", "kappa", "min_noise_level", "etas_end") if k not in config]
        if missing:
            raise ValueError(f"schedule config lacks {', '.join(missing)} (official diffusion.params keys)")
        power = (config.get("schedule_kwargs") or {}).get("power", config.get("power", 0.3))
        return cls(T=int(config["steps"]), kappa=float(config["kappa"]),
                   min_noise_level=float(config["min_noise_level"]),
                   etas_end=float(config["etas_end"]), power=float(power))

    def to_config(self) -> dict[str, Any]:
        """The official ``diffusion.params`` keys describing this table."""
        return dict(schedule_name="exponential", steps=self.T, kappa=self.kappa,
                    min_noise_level=self.min_noise_level, etas_end=self.etas_end,
                    schedule_kwargs={"power": self.power})

    # --- the table --------------------------------------------------------------------
    @property
    def sqrt_eta_1(self) -> float:
        """sqrt(eta_1) = min(min_noise_level / kappa, min_noise_level)."""
        return min(self.min_noise_level / self.kappa, self.min_noise_level)

    @property
    def sqrt_etas(self) -> np.ndarray:
        """sqrt(eta_k), k = 1..T, computed along the official code's numeric path."""
        start = self.sqrt_eta_1
        increaser = math.exp(1 / (self.T - 1) * math.log(self.etas_end / start))
        base = np.ones([self.T]) * increaser
        power_timestep = np.linspace(0, 1, self.T, endpoint=True) ** self.power
        power_timestep *= self.T - 1
        return np.power(base, power_timestep) * start

    @property
    def etas(self) -> np.ndarray:
        """eta_k, k = 1..T (float64, length T)."""
        return self.sqrt_etas ** 2

    @property
    def increments(self) -> np.ndarray:
        """a_k = eta_k - eta_{k-1} with eta_0 = 0 (the paper's discrete alpha_t)."""
        etas = self.etas
        return etas - np.append(0.0, etas[:-1])

    def respaced_indices(self, steps: int) -> list[int]:
        """0-based indices kept by the official respacing to ``steps`` < T steps, ascending."""
        return respaced_indices(self.T, steps)

    def __repr__(self) -> str:
        return (f"ResShiftSchedule(T={self.T}, kappa={self.kappa}, min_noise_level={self.min_noise_level}, "
                f"etas_end={self.etas_end}, power={self.power})")

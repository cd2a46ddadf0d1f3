"""Time grids from t = 1 (the LR end) down to t_min = 1/T (design §6)."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["rho_grid", "uniform_grid"]


def rho_grid(n: int, rho: float, t_min: float) -> np.ndarray:
    """``n`` times from exactly 1 down to exactly ``t_min``, rho-spaced (float64, decreasing).

    ``s_i = (1 + i/(n-1) (t_min^(1/rho) - 1))^rho``. rho > 0 uses ``t_i = s_i`` (rho = 1 is
    uniform; larger rho crowds steps near the image end t_min); rho < 0 mirrors inside
    [t_min, 1], ``t_i = 1 + t_min - s_{n-1-i}``, crowding steps near t = 1 (the noisy LR end).
    """
    if int(n) != n or n < 2:
        raise ValueError(f"a grid needs n >= 2 points, got n={n}")
    if not 0 < t_min < 1:
        raise ValueError(f"t_min must lie in (0, 1), got {t_min}")
    if rho == 0 or not np.isfinite(rho):
        raise ValueError(f"rho must be a finite non-zero number (rho=1 is uniform), got rho={rho}")
    n = int(n)
    i = np.arange(n, dtype=np.float64)
    s = (1 + i / (n - 1) * (t_min ** (1 / rho) - 1)) ** rho
    t = s if rho > 0 else (1 + t_min - s[::-1])
    t = np.array(t, dtype=np.float64)
    t[0], t[-1] = 1.0, t_min  # exact endpoints, whatever the round-off
    return t


def uniform_grid(n: int, t_min: float) -> np.ndarray:
    """``n`` equally spaced times from 1 down to ``t_min`` (the same as ``rho_grid(n, 1, t_min)``)."""
    return rho_grid(n, 1.0, t_min)


def __getattr__(name: str) -> Any:
    """``optimize_grid`` lives in the solvers layer (it runs ``sample``); imported on first use, no cycle."""
    if name == "optimize_grid":
        from .solvers.optimize import optimize_grid

        return optimize_grid
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

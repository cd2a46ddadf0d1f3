"""Checks of user-facing numbers shared by the grids, the solvers, the bench rows and the CLI (bottom layer)."""
from __future__ import annotations

import math

__all__ = ["check_rho"]


def check_rho(rho: float) -> float:
    """``rho`` as a float if it is a finite non-zero number (rho = 1 is uniform), else ValueError."""
    if rho == 0 or not math.isfinite(rho):
        raise ValueError(f"rho must be a finite non-zero number (1 is uniform, > 1 crowds steps near the image end, "
                         f"< 0 near the noisy LR end), got rho={rho:g}")
    return float(rho)

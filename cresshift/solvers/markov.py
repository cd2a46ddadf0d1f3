"""The original ResShift ancestral (Markov) sampler, numerically identical to the official one."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from ..schedules import ContinuousSchedule, ResShiftSchedule
from ..schedules.discrete import respaced_indices
from .base import Callback, Chain, CountingDenoiser

__all__ = ["sample_markov", "markov_chain"]


def markov_chain(spec: Any, schedule: Union[ResShiftSchedule, ContinuousSchedule], nfe: Optional[int],
                 grid: Any = None, rho: Optional[float] = None) -> Chain:
    """The official chain respaced to ``nfe`` steps (design §2; rho does not apply): keep indices
    ``{int(T/S i) : i < S}`` of the table (a continuous schedule: of eta(k/T))."""
    if grid is not None and not (isinstance(grid, str) and grid == "auto"):
        raise ValueError("markov runs on the trained chain; it takes nfe, not an explicit ts grid or a grid family")
    if nfe is None:
        raise ValueError("markov needs nfe (the number of chain steps)")
    if isinstance(schedule, ResShiftSchedule):
        table, T, kappa = schedule.etas, schedule.T, schedule.kappa
    else:
        table, T, kappa = schedule.step_etas(), schedule.T, schedule.kappa
    if not 1 <= nfe <= T:
        raise ValueError(f"markov runs the trained chain of T={T} steps: nfe must be between 1 and {T}, got {nfe}")
    kept = np.asarray(respaced_indices(T, nfe))
    etas, t_chain = table[kept], (kept + 1) / T
    return Chain(ts=t_chain[::-1].copy(), eta_start=float(etas[-1]), kwargs=dict(etas=etas, ts=t_chain, kappa=kappa))


def sample_markov(model: CountingDenoiser, x: torch.Tensor, y: torch.Tensor, etas: Sequence[float],
                  ts: Sequence[float], kappa: float, *, generator: Optional[torch.Generator] = None,
                  callback: Optional[Callback] = None) -> torch.Tensor:
    """Ancestral sampling down the (respaced) chain; NFE = number of chain steps S (design §2).

    ``etas`` are the chain's eta values in ascending order (the full table, or the official
    respacing's kept entries) and ``ts`` the times where the network is evaluated for each,
    also ascending. Step from eta_k to eta_{k-1}: mean = (eta_{k-1}/eta_k) x_k + (a_k/eta_k) x0_hat,
    var = kappa^2 (eta_{k-1}/eta_k) a_k with a_k = eta_k - eta_{k-1}; the last step returns
    x0_hat exactly. Coefficients are formed in float64 and cast to x's dtype, as the official
    implementation does.
    """
    etas64 = np.asarray(etas, dtype=np.float64)
    etas_prev = np.append(0.0, etas64[:-1])
    incr = etas64 - etas_prev
    coef_x = etas_prev / etas64
    coef_x0 = incr / etas64
    std = np.sqrt(kappa ** 2 * etas_prev / etas64 * incr)
    for j in range(len(etas64) - 1, -1, -1):
        step = len(etas64) - 1 - j
        x0_hat = model(x, float(ts[j]), step=step)
        if callback is not None:
            callback(dict(i=step, t=float(ts[j]), x=x, x0_hat=x0_hat))
        if j == 0:
            # Last step: eta_prev = 0, the posterior collapses onto x0_hat.
            return x0_hat
        # Posterior mean and noise, coefficients cast to the sample's dtype.
        c_x = torch.tensor(coef_x[j], dtype=x.dtype, device=x.device)
        c_x0 = torch.tensor(coef_x0[j], dtype=x.dtype, device=x.device)
        s = torch.tensor(std[j], dtype=x.dtype, device=x.device)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = c_x * x + c_x0 * x0_hat + s * noise
    return x  # pragma: no cover - loop always returns

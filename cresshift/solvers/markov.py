"""The original ResShift ancestral (Markov) sampler, numerically identical to the official one."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .base import Callback, CountingDenoiser

__all__ = ["sample_markov"]


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

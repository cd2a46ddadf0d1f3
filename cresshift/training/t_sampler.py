"""Training times t in (1/T, 1]: uniform, or loss-aware importance sampling, and per-t-bin loss diagnostics.

Bins: ``bins`` equal-width intervals of (1/T, 1]; bin b is (1/T + b w, 1/T + (b + 1) w] with
w = (1 - 1/T) / bins (t = 1/T itself, the discrete chain's k = 1, counts in bin 0).

``LossAwareTSampler`` is the continuous analogue of improved-diffusion's loss-second-moment
resampler (Nichol & Dhariwal 2021, §3.3): keep the last ``history`` training losses of every
bin, draw a bin with probability p_b ∝ sqrt(E[loss²]) mixed with a uniform floor, then t
uniformly inside it. The density of t is p(t) = p_b / w, the uniform one u(t) = 1 / (B w), so
the weight u(t) / p(t) = 1 / (B p_b) makes E_p[weight · loss] = E_u[loss]: the objective stays
the uniform-t one, only its variance changes. Until every bin holds ``history`` losses the
sampler is uniform (all weights 1).
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["T_SAMPLERS", "t_bin_edges", "t_bin_of", "LossAwareTSampler", "TBinLoss"]

T_SAMPLERS = ("uniform", "loss-aware")


def t_bin_edges(T: int, bins: int) -> torch.Tensor:
    """The ``bins + 1`` edges 1/T = e_0 < ... < e_bins = 1 of the t bins, float64."""
    return torch.linspace(1 / T, 1, bins + 1, dtype=torch.float64)


def t_bin_of(t: torch.Tensor, T: int, bins: int) -> torch.Tensor:
    """Bin index of every t in (1/T, 1] (t = 1/T -> 0), int64."""
    width = (1 - 1 / T) / bins
    index = torch.ceil((t.double().cpu() - 1 / T) / width).long() - 1
    return index.clamp(0, bins - 1)


class LossAwareTSampler:
    """t with probability ∝ the per-bin RMS training loss (uniform floor ``floor``), and its inverse-density weights."""

    def __init__(self, T: int, bins: int = 15, history: int = 10, floor: float = 0.1) -> None:
        if bins < 1 or history < 1 or not 0 < floor <= 1:
            raise ValueError(f"bins and history must be >= 1 and floor in (0, 1], got {bins}, {history}, {floor}")
        self.T, self.bins, self.history, self.floor = int(T), int(bins), int(history), float(floor)
        self.losses = torch.zeros(self.bins, self.history, dtype=torch.float64)
        self.counts = torch.zeros(self.bins, dtype=torch.int64)

    @property
    def warm(self) -> bool:
        """Whether every bin holds ``history`` losses (before that the sampler is uniform)."""
        return bool((self.counts >= self.history).all())

    def probabilities(self) -> torch.Tensor:
        """p_b: (1 - floor) sqrt(E[loss_b²]) / sum + floor / B once warm, else uniform; float64 [bins]."""
        uniform = torch.full((self.bins,), 1 / self.bins, dtype=torch.float64)
        if not self.warm:
            return uniform
        rms = self.losses.pow(2).mean(1).sqrt()
        if not torch.isfinite(rms).all() or float(rms.sum()) <= 0:
            return uniform
        return (1 - self.floor) * rms / rms.sum() + self.floor * uniform

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n times: a bin b ~ p, then t uniform in (e_b, e_{b+1}]; float64 [n]."""
        edges = t_bin_edges(self.T, self.bins)
        b = torch.multinomial(self.probabilities(), n, replacement=True, generator=generator)
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return edges[b] + (1 - u) * (edges[b + 1] - edges[b])

    def weights(self, t: torch.Tensor) -> torch.Tensor:
        """u(t) / p(t) = 1 / (B p_b(t)): the importance weight of each t, float64 [n]."""
        return 1 / (self.bins * self.probabilities()[t_bin_of(t, self.T, self.bins)])

    def update(self, t: torch.Tensor, loss: torch.Tensor) -> None:
        """Add the (unweighted) per-sample losses at times t to their bins' histories (ring buffers)."""
        for b, value in zip(t_bin_of(t, self.T, self.bins).tolist(), loss.detach().double().cpu().tolist()):
            self.losses[b, int(self.counts[b]) % self.history] = value
            self.counts[b] += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"losses": self.losses.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if tuple(state["losses"].shape) != tuple(self.losses.shape):
            raise ValueError(f"t-sampler state of shape {tuple(state['losses'].shape)} does not fit "
                             f"{self.bins} bins x {self.history} losses")
        self.losses = state["losses"].double().clone()
        self.counts = state["counts"].long().clone()


class TBinLoss:
    """Mean training loss per t bin since the last ``pop()`` (the log's per-t diagnostics)."""

    def __init__(self, T: int, bins: int = 15) -> None:
        self.T, self.bins = int(T), int(bins)
        self.sums = torch.zeros(self.bins, dtype=torch.float64)
        self.counts = torch.zeros(self.bins, dtype=torch.int64)

    def add(self, t: torch.Tensor, loss: torch.Tensor) -> None:
        b = t_bin_of(t, self.T, self.bins)
        self.sums.index_add_(0, b, loss.detach().double().cpu())
        self.counts.index_add_(0, b, torch.ones_like(b))

    def pop(self) -> list[Optional[float]]:
        """Per-bin mean (None for an empty bin) and reset."""
        out = [float(s / c) if c else None for s, c in zip(self.sums, self.counts)]
        self.sums.zero_()
        self.counts.zero_()
        return out

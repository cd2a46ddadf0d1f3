"""Loss-aware sampling of continuous t (issue 18): unbiased weights, the sampled density, bins, state."""
from __future__ import annotations

import math

import pytest
import torch

from cresshift.training.t_sampler import LossAwareTSampler, TBinLoss, t_bin_edges, t_bin_of

T = 15


def synthetic_loss(t: torch.Tensor) -> torch.Tensor:
    """A loss that grows with t, as the ResShift x0 loss does, with a wiggle."""
    return torch.exp(3 * t) + 0.5 * torch.sin(20 * t) + 1


def uniform_objective() -> float:
    """E_{t ~ U(1/T, 1)}[synthetic_loss(t)] in closed form."""
    a, b = 1 / T, 1.0
    integral = (math.exp(3 * b) - math.exp(3 * a)) / 3 - 0.5 * (math.cos(20 * b) - math.cos(20 * a)) / 20 + (b - a)
    return integral / (b - a)


def warmed(floor: float = 0.1) -> LossAwareTSampler:
    """A sampler whose histories hold the synthetic loss at 10 points of every bin (non-uniform p)."""
    sampler = LossAwareTSampler(T, floor=floor)
    edges = t_bin_edges(T, sampler.bins)
    for b in range(sampler.bins):
        t = edges[b] + (edges[b + 1] - edges[b]) * (torch.arange(10, dtype=torch.float64) + 0.5) / 10
        sampler.update(t, synthetic_loss(t))
    assert sampler.warm
    return sampler


def test_bins_cover_the_training_interval():
    edges = t_bin_edges(T, 15)
    assert float(edges[0]) == pytest.approx(1 / T) and float(edges[-1]) == 1.0
    t = torch.tensor([1 / T, 1 / T + 1e-9, float(edges[1]), float(edges[1]) + 1e-9, 1.0], dtype=torch.float64)
    assert t_bin_of(t, T, 15).tolist() == [0, 0, 0, 1, 14]  # bins are (e_b, e_b+1]; 1/T joins bin 0


def test_weights_make_the_density_uniform_exactly():
    """p(t) * weight(t) = u(t) at every t: p_b / w * 1 / (B p_b) = 1 / (1 - 1/T)."""
    sampler = warmed()
    p = sampler.probabilities()
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(p.max() / p.min()) > 3  # the synthetic loss makes it far from uniform
    assert float(p.min()) >= 0.1 / 15 - 1e-15  # the uniform floor
    t = torch.linspace(1 / T + 1e-6, 1, 2001, dtype=torch.float64)
    width = (1 - 1 / T) / 15
    density = p[t_bin_of(t, T, 15)] / width
    torch.testing.assert_close(density * sampler.weights(t), torch.full_like(t, 1 / (1 - 1 / T)))


def test_weighted_loss_is_an_unbiased_estimate_of_the_uniform_objective():
    """Monte Carlo: E_p[weight * L(t)] equals the closed-form E_u[L(t)] within 4 standard errors."""
    sampler = warmed()
    gen = torch.Generator().manual_seed(5)
    t = sampler.sample(400_000, gen)
    assert float(t.min()) > 1 / T and float(t.max()) <= 1
    values = sampler.weights(t) * synthetic_loss(t)
    se = float(values.std()) / math.sqrt(len(values))
    assert abs(float(values.mean()) - uniform_objective()) < 4 * se
    # and the importance sampling lowers the variance of the estimate against uniform t
    u = 1 / T + (1 - 1 / T) * torch.rand(400_000, generator=gen, dtype=torch.float64)
    assert float(values.var()) < float(synthetic_loss(u).var())


def test_bins_are_drawn_with_their_probabilities():
    sampler = warmed(floor=0.3)
    t = sampler.sample(200_000, torch.Generator().manual_seed(1))
    freq = torch.bincount(t_bin_of(t, T, 15), minlength=15).double() / len(t)
    p = sampler.probabilities()
    assert float(((freq - p).abs() / (p * (1 - p) / len(t)).sqrt()).max()) < 5
    # the second moment, not the mean: p_b ∝ sqrt(mean(L²)) on the part above the floor
    rms = sampler.losses.pow(2).mean(1).sqrt()
    torch.testing.assert_close((p - 0.3 / 15) / 0.7, rms / rms.sum())


def test_uniform_until_every_bin_has_its_history():
    sampler = LossAwareTSampler(T, bins=3, history=2)
    sampler.update(torch.tensor([0.1, 0.2, 0.5, 0.6, 0.9]), torch.tensor([1.0, 1.0, 5.0, 5.0, 9.0]))
    assert not sampler.warm
    torch.testing.assert_close(sampler.weights(torch.tensor([0.1, 0.95], dtype=torch.float64)),
                               torch.ones(2, dtype=torch.float64))
    sampler.update(torch.tensor([0.95]), torch.tensor([9.0]))
    assert sampler.warm and not torch.allclose(sampler.probabilities(), torch.full((3,), 1 / 3, dtype=torch.float64))
    # ring buffer: the oldest loss of a full bin is replaced
    sampler.update(torch.tensor([0.1]), torch.tensor([7.0]))
    assert sorted(sampler.losses[0].tolist()) == [1.0, 7.0]


def test_state_round_trip_and_shape_check():
    sampler = warmed()
    other = LossAwareTSampler(T)
    other.load_state_dict(sampler.state_dict())
    torch.testing.assert_close(other.probabilities(), sampler.probabilities())
    with pytest.raises(ValueError, match="does not fit"):
        LossAwareTSampler(T, bins=5).load_state_dict(sampler.state_dict())
    with pytest.raises(ValueError):
        LossAwareTSampler(T, floor=0)


def test_bin_loss_means_and_reset():
    acc = TBinLoss(T, bins=3)
    acc.add(torch.tensor([0.1, 0.2, 0.9]), torch.tensor([1.0, 3.0, 4.0]))
    assert acc.pop() == [2.0, None, 4.0]
    assert acc.pop() == [None, None, None]

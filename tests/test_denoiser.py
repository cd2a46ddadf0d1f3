"""NetworkDenoiser: clock, input scaling, output parameterisations (design §4–5)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from cresshift.models import NetworkDenoiser
from cresshift.schedules import ExactSchedule


class Recorder(nn.Module):
    """A fake network that records its inputs and returns a chosen output."""

    def __init__(self, out_fn):
        super().__init__()
        self.out_fn, self.seen = out_fn, []

    def forward(self, x, s, lq=None):
        self.seen.append((x.clone(), s.clone(), lq))
        return self.out_fn(x, s)


@pytest.mark.parametrize("latent", [True, False])
def test_clock_and_scaling(v1, latent):
    net = Recorder(lambda x, s: torch.zeros_like(x))
    lq = torch.randn(2, 3, 4, 4)
    D = NetworkDenoiser(net, v1, lq=lq, latent=latent)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float32)
    t = torch.tensor([3 / 15, 0.5], dtype=torch.float32)  # a chain step and a fractional time
    D(x, t)
    x_in, s, lq_seen = net.seen[0]
    assert s.tolist()[0] == 2.0  # snapped to the integer index k - 1
    assert s.tolist()[1] == pytest.approx(15 * 0.5 - 1, abs=1e-6)
    assert lq_seen is lq
    eta = torch.tensor([v1.etas[2], ExactSchedule(v1).eta(0.5)], dtype=torch.float64)[:, None, None, None]
    ref = x.double() / (torch.sqrt(eta * 4 + 1) if latent else (3 * 2 * torch.sqrt(eta) + 1))
    torch.testing.assert_close(x_in.double(), ref, rtol=1e-6, atol=1e-7)


def test_output_types_map_to_x0(v1):
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    y = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    z = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.full((2,), 0.4, dtype=torch.float64)
    eta = float(ExactSchedule(v1).eta(0.4))
    x = x0 + eta * (y - x0) + 2.0 * math.sqrt(eta) * z
    outs = {"xstart": x0, "residual": y - x0, "epsilon": z, "epsilon_scale": 2.0 * math.sqrt(eta) * z}
    for predict, out in outs.items():
        D = NetworkDenoiser(Recorder(lambda xi, s, o=out: o), v1, latent=True, normalize_input=False,
                            predict=predict, y=y)
        torch.testing.assert_close(D(x, t), x0, rtol=1e-10, atol=1e-10)


def test_pixel_mode_clamps_latent_does_not(v1):
    big = lambda x, s: torch.full_like(x, 3.0)  # noqa: E731
    x = torch.zeros(1, 3, 2, 2)
    t = torch.full((1,), 0.5)
    assert NetworkDenoiser(Recorder(big), v1, latent=False)(x, t).max() == 1.0
    assert NetworkDenoiser(Recorder(big), v1, latent=True)(x, t).max() == 3.0


def test_bad_predict_and_missing_y(v1):
    with pytest.raises(ValueError, match="valid: xstart, residual"):
        NetworkDenoiser(Recorder(lambda x, s: x), v1, predict="v")
    D = NetworkDenoiser(Recorder(lambda x, s: x), v1, predict="residual")
    with pytest.raises(ValueError, match="needs the shift target y"):
        D(torch.zeros(1, 3, 2, 2), torch.full((1,), 0.5))


def test_marginal_and_loss(v1, exp_v1):
    """The forward marginal takes eta from the discrete table at t = k/T (the continuous schedule's eta(t) otherwise);
    the loss is the per-sample MSE of x0_hat at that marginal, with the network fed the same x_t."""
    g = torch.Generator().manual_seed(1)
    x0, y, z = (torch.randn(2, 3, 4, 4, generator=g) for _ in range(3))
    t = torch.tensor([3 / 15, 11 / 15], dtype=torch.float64)
    for schedule, etas in ((v1, v1.etas[[2, 10]]), (exp_v1, exp_v1.eta(t.numpy()))):
        eta = torch.tensor(etas, dtype=torch.float32).view(-1, 1, 1, 1)
        want = x0 + eta * (y - x0) + schedule.kappa * eta.sqrt() * z
        net = Recorder(lambda x, s: torch.zeros_like(x))
        D = NetworkDenoiser(net, schedule, latent=True, normalize_input=False, y=y)
        torch.testing.assert_close(D.marginal(x0, t, z), want, rtol=0, atol=0)
        torch.testing.assert_close(D.loss(x0, t, z), x0.pow(2).flatten(1).mean(1), rtol=0, atol=0)  # x0_hat = 0
        torch.testing.assert_close(net.seen[-1][0], want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="shift target y"):
        NetworkDenoiser(Recorder(lambda x, s: x), v1).marginal(x0, t, z)

"""The fast execution paths: static-shape replay (the CUDA-graph logic on its eager stand-in),
deferred NaN checks, and the fast pipeline path against the plain eager one."""
import math

import pytest
import torch

from cresshift.models.fastpath import StaticShapeCall, as_channels_last, buffered_capture
from cresshift.solvers import NonFiniteError, sample
from cresshift.solvers.base import CountingDenoiser
from cresshift.schedules import ExactSchedule, ResShiftSchedule
from cresshift.testing import GaussianProblem

from test_pipeline import latent_pipe, pixel_pipe  # noqa: F401  (fixtures)


def _affine(x, s, lq):
    return 2 * x + s[:, None, None, None] + lq.mean()


def test_static_shape_call_equals_direct_calls_and_captures_once_per_shape():
    call = StaticShapeCall(_affine)
    held = []
    for k in range(3):
        x, s, lq = torch.randn(2, 3, 8, 8), torch.full((2,), float(k)), torch.randn(2, 3, 8, 8)
        out = call(x, s, lq)
        assert torch.equal(out, _affine(x, s, lq))
        held.append((out, _affine(x, s, lq)))
    # Outputs are copies: later replays do not overwrite what a solver kept.
    assert all(torch.equal(out, want) for out, want in held)
    assert call.captures == 1
    x = torch.randn(1, 3, 16, 8)
    assert torch.equal(call(x, torch.zeros(1), x), _affine(x, torch.zeros(1), x)) and call.captures == 2


def test_static_shape_call_bounds_its_cache_and_falls_back_when_capture_fails():
    call = StaticShapeCall(_affine, max_programs=2)
    for size in (4, 8, 12):
        x = torch.randn(1, 3, size, size)
        call(x, torch.zeros(1), x)
    assert len(call._programs) == 1 and call.captures == 3

    def broken(fn, static):
        raise RuntimeError("operation not permitted when stream is capturing")
    call = StaticShapeCall(_affine, capture=broken)
    x = torch.randn(1, 3, 4, 4)
    with pytest.warns(UserWarning, match="graph capture failed"):
        out = call(x, torch.ones(1), x)
    assert torch.equal(out, _affine(x, torch.ones(1), x))


def test_buffered_capture_replays_into_one_static_output():
    static = (torch.zeros(3),)
    replay = buffered_capture(lambda v: v + 1, static)
    first = replay()
    static[0].copy_(torch.tensor([1.0, 2.0, 3.0]))
    second = replay()
    assert second is first and torch.equal(second, torch.tensor([2.0, 3.0, 4.0]))


def test_as_channels_last_keeps_values():
    t = torch.randn(2, 3, 5, 7)
    cl = as_channels_last(t)
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, t)
    assert as_channels_last(None) is None and as_channels_last(torch.ones(3)).shape == (3,)


def test_deferred_finite_check_names_the_first_bad_call():
    calls = []

    def denoiser(x, t):
        calls.append(float(t[0]))
        return x * math.nan if len(calls) >= 2 else x
    model = CountingDenoiser(denoiser, defer_finite_check=True)
    x = torch.ones(1, 3)
    for k in range(3):
        model(x, 1.0 - 0.1 * k)  # no error while the loop runs
    with pytest.raises(NonFiniteError, match="network call 2"):
        model.check_finite()


def test_sample_with_deferred_check_is_identical_and_still_reports_nan():
    schedule = ExactSchedule(ResShiftSchedule.from_config("realsr-x4-v1"))
    problem = GaussianProblem(schedule, dim=16)
    y = problem.y
    kw = dict(solver="dpmpp-2m", nfe=5, rho=1.0, generator=None, x_T=problem.prior(1))
    plain = sample(problem.denoiser, y, schedule, **kw)
    deferred = sample(problem.denoiser, y, schedule, defer_finite_check=True, **kw)
    assert torch.equal(plain.x, deferred.x) and plain.nfe == deferred.nfe
    with pytest.raises(NonFiniteError):
        sample(lambda x, t: x * math.nan, y, schedule, defer_finite_check=True, **kw)


@pytest.mark.parametrize("fixture", ["latent_pipe", "pixel_pipe"])
def test_fast_path_equals_the_eager_path(fixture, request):
    pipe = request.getfixturevalue(fixture)
    lr = torch.rand(1, 3, 16, 24) * 2 - 1
    eager = pipe.run(lr, solver="dpmpp-2m", nfe=3, seed=0, fast=False).sr
    fast = pipe.run(lr, solver="dpmpp-2m", nfe=3, seed=0, fast=True).sr
    torch.testing.assert_close(fast, eager, atol=1e-4, rtol=0)


def test_graph_replay_path_equals_the_eager_path(latent_pipe):
    lr = torch.rand(1, 3, 16, 24) * 2 - 1
    eager = latent_pipe.run(lr, solver="heun", nfe=5, seed=0, fast=False).sr
    latent_pipe.cuda_graphs = True
    try:
        graphed = latent_pipe.run(lr, solver="heun", nfe=5, seed=0).sr
        again = latent_pipe.run(lr, solver="heun", nfe=5, seed=0).sr
        assert latent_pipe._graphed.captures == 1  # one input shape: captured once, replayed 10 times
    finally:
        latent_pipe.cuda_graphs = False
    torch.testing.assert_close(graphed, eager, atol=1e-4, rtol=0)
    assert torch.equal(graphed, again)

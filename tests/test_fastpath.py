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
    """Without bfloat16 parts the fast path is the eager one within float round-off."""
    pipe = request.getfixturevalue(fixture)
    lr = torch.rand(1, 3, 16, 24) * 2 - 1
    eager = pipe.run(lr, solver="dpmpp-2m", nfe=3, seed=0, fast=False).sr
    pipe.cpu_bf16 = ()
    try:
        fast = pipe.run(lr, solver="dpmpp-2m", nfe=3, seed=0, fast=True).sr
    finally:
        pipe.cpu_bf16 = None
    torch.testing.assert_close(fast, eager, atol=1e-4, rtol=0)


def test_graph_replay_path_equals_the_eager_path(latent_pipe):
    lr = torch.rand(1, 3, 16, 24) * 2 - 1
    eager = latent_pipe.run(lr, solver="heun", nfe=5, seed=0, fast=False).sr
    latent_pipe.cuda_graphs, latent_pipe.cpu_bf16 = True, ()
    try:
        graphed = latent_pipe.run(lr, solver="heun", nfe=5, seed=0).sr
        again = latent_pipe.run(lr, solver="heun", nfe=5, seed=0).sr
        assert latent_pipe._graphed.captures == 1  # one input shape: captured once, replayed 10 times
    finally:
        latent_pipe.cuda_graphs, latent_pipe.cpu_bf16 = False, None
    torch.testing.assert_close(graphed, eager, atol=1e-4, rtol=0)
    assert torch.equal(graphed, again)


# --- bfloat16 copies on the CPU fast path, torch.compile fallback ------------------------------
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from cresshift.models.fastpath import CompiledOrEager, bf16_copy, weights_version  # noqa: E402
from cresshift.models.pipeline import DEFAULT_CPU_BF16, load_pipeline  # noqa: E402

PHOTOS = Path(__file__).resolve().parents[1] / "cresshift" / "bundled" / "photos"


def _psnr(a, b):
    mse = float(((a.double() - b.double()) ** 2).mean())
    return 10 * math.log10(4.0 / mse) if mse > 0 else math.inf


def _photo_lr(size=16, name="astronaut.png", y=40, x=140):
    """A real photograph's crop, bicubic-downscaled x4 to size x size, in [-1, 1]."""
    im = np.asarray(Image.open(PHOTOS / name).convert("RGB"), dtype=np.float32) / 127.5 - 1
    hr = torch.from_numpy(im).permute(2, 0, 1)[None, :, y:y + 4 * size, x:x + 4 * size]
    return F.interpolate(hr, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)


@pytest.fixture(scope="module")
def bundled_pipe():
    return load_pipeline("bundled")


def test_bundled_default_fast_path_stays_within_45_db_of_eager_on_a_photo(bundled_pipe):
    bundled_pipe.cpu_bf16 = DEFAULT_CPU_BF16["pixel"]  # the default where the CPU has native bfloat16
    assert bundled_pipe.cpu_bf16 == {"network"}
    lr = _photo_lr()
    eager = bundled_pipe.run(lr, solver="dpmpp-2m", nfe=5, seed=0, fast=False).sr
    fast = bundled_pipe.run(lr, solver="dpmpp-2m", nfe=5, seed=0).sr
    assert not torch.equal(fast, eager)  # the bfloat16 network really ran ...
    assert _psnr(fast, eager) >= 45.0  # ... within the tolerance (about 70 dB measured)
    assert fast.dtype == torch.float32 and fast.is_contiguous()


def test_flags_off_give_the_eager_results(latent_pipe):
    lr = torch.rand(1, 3, 16, 24) * 2 - 1
    kw = dict(solver="dpmpp-2m", nfe=3, seed=0)
    eager = latent_pipe.run(lr, fast=False, **kw).sr
    try:
        latent_pipe.cpu_bf16 = ()
        no_bf16 = latent_pipe.run(lr, **kw).sr
        latent_pipe.cpu_bf16 = "all"
        all_bf16 = latent_pipe.run(lr, **kw).sr
        latent_pipe.cpu_bf16 = False
        assert torch.equal(latent_pipe.run(lr, **kw).sr, no_bf16)
    finally:
        latent_pipe.cpu_bf16 = None
    torch.testing.assert_close(no_bf16, eager, atol=1e-5, rtol=0)  # float32 channels-last: round-off only
    assert torch.equal(latent_pipe.run(lr, fast=False, **kw).sr, eager)  # the eager path never uses the copies
    assert not torch.equal(all_bf16, eager) and _psnr(all_bf16, eager) > 25.0


def test_latent_default_runs_the_autoencoder_in_bf16(latent_pipe):
    latent_pipe.cpu_bf16 = DEFAULT_CPU_BF16["latent"]  # the default where the CPU has native bfloat16
    assert latent_pipe.cpu_bf16 == {"network", "encoder", "decoder"}
    lr = _photo_lr(16)
    try:
        with torch.no_grad():
            y32, _, _ = latent_pipe.shift_target(lr, fast=False)
            y16, _, _ = latent_pipe.shift_target(lr, fast=True)
            decoded32 = latent_pipe._decode(y32, None, 16, fast=False)
            decoded16 = latent_pipe._decode(y32, None, 16, fast=True)
        low = latent_pipe._bf16_part("decoder", True)
    finally:
        latent_pipe.cpu_bf16 = None
    assert y16.dtype == decoded16.dtype == torch.float32 and not torch.equal(y16, y32)
    assert float((y16 - y32).pow(2).mean().sqrt()) < 0.05 * float(y32.std())  # bfloat16 round-off (2.8 % here)
    assert 30.0 < _psnr(decoded16, decoded32) < math.inf
    assert low.decoder.mid.attn_1.q.weight.dtype == torch.float32  # the middle block stays float32
    assert low.decoder.up[0].block[0].conv1.weight.dtype == torch.bfloat16


def test_realsr_autoencoder_in_bf16_stays_within_45_db_on_a_photo():
    """The official VQ-f4 architecture (seeded random weights): encode + decode of a photograph crop."""
    torch.manual_seed(0)
    pipe = load_pipeline("realsr-x4-v1", random_weights=True, cpu_bf16=DEFAULT_CPU_BF16["latent"])
    assert pipe.cpu_bf16 == {"network", "encoder", "decoder"}
    img = F.interpolate(_photo_lr(16), scale_factor=4, mode="bicubic", align_corners=False)  # 64 x 64 pixels
    with torch.no_grad():
        eager = pipe._decode(pipe._encode(img, None, 16, fast=False), None, 16, fast=False)
        fast = pipe._decode(pipe._encode(img, None, 16, fast=True), None, 16, fast=True)
    assert not torch.equal(fast, eager)
    assert _psnr(fast.clamp(-1, 1), eager.clamp(-1, 1)) >= 45.0


def test_cpu_bf16_default_follows_the_cpus_native_bf16(latent_pipe, pixel_pipe, monkeypatch):
    import cresshift.models.pipeline as pipeline

    try:
        for native, pixel, latent in [(True, {"network"}, {"network", "encoder", "decoder"}), (False, set(), set())]:
            monkeypatch.setattr(pipeline, "cpu_has_native_bf16", lambda native=native: native)
            pixel_pipe.cpu_bf16 = latent_pipe.cpu_bf16 = None
            assert pixel_pipe.cpu_bf16 == pixel and latent_pipe.cpu_bf16 == latent
            latent_pipe.cpu_bf16 = "decoder"  # an explicit choice holds either way
            assert latent_pipe.cpu_bf16 == {"decoder"}
    finally:
        monkeypatch.undo()
        pixel_pipe.cpu_bf16 = latent_pipe.cpu_bf16 = None


def test_cpu_bf16_values_and_errors(latent_pipe, pixel_pipe):
    for value, parts in [(True, {"network", "encoder", "decoder"}), ("all", {"network", "encoder", "decoder"}),
                         ("network,decoder", {"network", "decoder"}), (["encoder"], {"encoder"}),
                         ("none", set()), (False, set())]:
        latent_pipe.cpu_bf16 = value
        assert latent_pipe.cpu_bf16 == parts
    latent_pipe.cpu_bf16 = None
    with pytest.raises(ValueError, match="cpu_bf16 parts"):
        latent_pipe.cpu_bf16 = "network,unet"


def test_bf16_copy_keeps_the_original_and_the_norms_in_float32(latent_pipe):
    net = latent_pipe.net
    before = {k: v.clone() for k, v in net.state_dict().items()}
    low = bf16_copy(net, ("time_embed",), ("out",))
    assert all(torch.equal(v, before[k]) and v.dtype == before[k].dtype for k, v in net.state_dict().items())
    assert low.input_blocks[0][0].weight.dtype == torch.bfloat16
    assert low.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    norms = [m for m in low.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)
    assert low.out[2].weight.dtype == torch.float32 and low.time_embed[0].weight.dtype == torch.float32
    x, s, lq = torch.randn(1, 3, 16, 16), torch.tensor([2.0]), torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        out, want = low(x, s, lq=lq), net(x, s, lq=lq)
    assert out.dtype == torch.float32
    assert float((out - want).pow(2).mean().sqrt()) < 0.02 * float(want.std())


def test_bf16_copies_follow_weight_updates(pixel_pipe):
    pixel_pipe.cpu_bf16 = "network"
    first = pixel_pipe._bf16_part("network", True)
    assert pixel_pipe._bf16_part("network", True) is first  # made once ...
    assert pixel_pipe._bf16_part("network", False) is None
    version = weights_version(pixel_pipe.net)
    w = pixel_pipe.net.input_blocks[0][0].weight
    saved = w.detach().clone()
    try:
        with torch.no_grad():
            w.add_(1.0)  # an optimiser step or load_state_dict writes in place
        assert weights_version(pixel_pipe.net) != version
        second = pixel_pipe._bf16_part("network", True)  # ... and remade after the weights change
        assert second is not first
        assert torch.equal(second.input_blocks[0][0].weight, (saved + 1).bfloat16())
    finally:
        with torch.no_grad():
            w.copy_(saved)
        pixel_pipe.cpu_bf16 = None


def test_compile_falls_back_to_eager_when_compiling_fails(monkeypatch, pixel_pipe):
    def broken_compile(module, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("InductorError: no C++ compiler")
        return run
    monkeypatch.setattr(torch, "compile", broken_compile)
    wrapped = CompiledOrEager(lambda x: x + 1)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        assert torch.equal(wrapped(torch.zeros(2)), torch.ones(2))
    assert wrapped.compiled is None and isinstance(wrapped.failed, RuntimeError)
    assert torch.equal(wrapped(torch.ones(2)), 2 * torch.ones(2))  # no second warning needed

    def refusing_compile(module, **kwargs):
        raise RuntimeError("torch.compile is not supported on this platform")
    monkeypatch.setattr(torch, "compile", refusing_compile)
    lr = torch.rand(1, 3, 8, 8) * 2 - 1
    kw = dict(solver="dpmpp-2m", nfe=2, seed=0)
    want = pixel_pipe.run(lr, **kw).sr
    try:
        with pytest.warns(UserWarning, match="torch.compile failed"):
            pixel_pipe.compile()
            got = pixel_pipe.run(lr, **kw).sr
    finally:
        pixel_pipe.compile(disable=True)
    assert torch.equal(got, want)


def test_latent_network_copy_keeps_its_full_resolution_blocks_float32(latent_pipe):
    from cresshift.models.pipeline import full_resolution_blocks

    net = latent_pipe.net
    full, rest = full_resolution_blocks(net)
    assert full == ("input_blocks.0", "input_blocks.1", "output_blocks.4", "output_blocks.5")  # before the first
    assert "middle_block" in rest and not set(full) & set(rest)  # Downsample, after the last Upsample
    latent_pipe.cpu_bf16 = "network"
    try:
        low = latent_pipe._bf16_part("network", True)
    finally:
        latent_pipe.cpu_bf16 = None
    for name in full:  # float32 with the original values (not bfloat16-rounded)
        for (k, v), (_, w) in zip(low.get_submodule(name).state_dict().items(),
                                  net.get_submodule(name).state_dict().items()):
            assert v.dtype == torch.float32 and torch.equal(v, w), k
    assert low.input_blocks[1][0].out_layers[-1].weight.dtype == torch.float32
    assert low.middle_block[0].out_layers[-1].weight.dtype == torch.bfloat16
    x, s, lq = torch.randn(1, 3, 16, 16), torch.tensor([2.0]), torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        out, want = low(x, s, lq=lq), net(x, s, lq=lq)
    assert out.dtype == torch.float32 and not torch.equal(out, want)
    assert float((out - want).pow(2).mean().sqrt()) < 0.02 * float(want.std())

"""SRPipeline end to end on tiny random-weight models: shapes, padding, tiling, seeds, I/O round trips."""
import pytest
import torch

import cresshift
from cresshift.models.checkpoints import CheckpointError
from cresshift.models.pipeline import SRPipeline, build_pipeline, load_pipeline
from cresshift.models.unet import small_pixel_config
from cresshift.schedules import ExpAlphaSchedule, ResShiftSchedule

DIFF = {**ResShiftSchedule.from_config("realsr-x4-v1").to_config(), "sf": 4, "predict_type": "xstart",
        "normalize_input": True}
TINY_NET = small_pixel_config(model_channels=32, swin_embed_dim=32, num_head_channels=16, num_res_blocks=[1, 1, 1])
TINY_VQ = dict(embed_dim=3, n_embed=64, ddconfig=dict(double_z=False, z_channels=3, resolution=32, in_channels=3,
                                                     out_ch=3, ch=32, ch_mult=[1, 2, 2], num_res_blocks=1,
                                                     attn_resolutions=[], dropout=0.0))


def _randomise(module):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)


@pytest.fixture(scope="module")
def pixel_pipe():
    torch.manual_seed(0)
    pipe = build_pipeline({"model": {"class": "UNetModelSwin", "params": TINY_NET}, "autoencoder": None,
                           "diffusion": {**DIFF, "latent_flag": False}})
    _randomise(pipe.net)
    return pipe


@pytest.fixture(scope="module")
def latent_pipe():
    torch.manual_seed(0)
    params = small_pixel_config(model_channels=32, swin_embed_dim=32, num_head_channels=16, num_res_blocks=[1, 1, 1],
                                image_size=16, lq_size=16, attention_resolutions=[4])
    pipe = build_pipeline({"model": {"class": "UNetModelSwin", "params": params}, "autoencoder": TINY_VQ,
                           "diffusion": DIFF})
    _randomise(pipe.net)
    return pipe


def test_pixel_pipeline_shapes_and_padding(pixel_pipe):
    lr = torch.rand(2, 3, 12, 20) * 2 - 1  # not a multiple of the network's 8-px LR unit: padded, cropped
    res = pixel_pipe.run(lr, solver="heun", nfe=5, rho=-8.0, seed=0)
    assert res.sr.shape == (2, 3, 48, 80) and res.nfe == 5
    assert float(res.sr.abs().max()) <= 1.0
    assert set(res.seconds) == {"network", "solver", "autoencoder"}


def test_latent_pipeline(latent_pipe):
    lr = torch.rand(1, 3, 20, 24) * 2 - 1
    assert latent_pipe.lr_multiple == 32  # window 8 x 2^2 at latent (= LR) resolution
    sr = latent_pipe(lr, solver="dpmpp-2m", nfe=4, seed=1)
    assert sr.shape == (1, 3, 80, 96)


def test_seed_reproducible(pixel_pipe):
    lr = torch.rand(1, 3, 16, 16) * 2 - 1
    a = pixel_pipe(lr, solver="markov", nfe=4, seed=3)
    b = pixel_pipe(lr, solver="markov", nfe=4, seed=3)
    c = pixel_pipe(lr, solver="markov", nfe=4, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_compiled_network_gives_the_same_output_and_saves_plain_weights(tmp_path, pixel_pipe):
    """compile() swaps only what run() calls (backend "eager" here: no C++ toolchain needed in CI).

    Float32 fast path (cpu_bf16=()): the default CPU fast path compiles the network's bfloat16 copy."""
    lr = torch.rand(1, 3, 16, 16) * 2 - 1
    pixel_pipe.cpu_bf16 = ()
    eager = pixel_pipe(lr, solver="dpmpp-2m", nfe=4, seed=2)
    calls = []
    try:
        pixel_pipe.compile(backend="eager")
        compiled_forward = pixel_pipe._forward
        assert compiled_forward is not pixel_pipe.net
        compiled_forward.register_forward_pre_hook(lambda *a: calls.append(1))
        out = pixel_pipe(lr, solver="dpmpp-2m", nfe=4, seed=2)
        pixel_pipe.save(tmp_path / "c.safetensors")
    finally:
        pixel_pipe.compile(disable=True)
        pixel_pipe.cpu_bf16 = None
    assert calls, "run() did not call the compiled network"
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    assert pixel_pipe._forward is pixel_pipe.net
    from cresshift.models.checkpoints import load_cresshift
    groups, _ = load_cresshift(tmp_path / "c.safetensors")
    assert not any(k.startswith("_orig_mod.") for k in groups["model"])


class LocalNet(torch.nn.Module):
    """A network whose output is local (receptive radius 2): tiling must not change it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Conv2d(6, 16, 3, padding=1)
        self.b = torch.nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x, s, lq=None):
        return x * 0.5 + 0.1 * self.b(torch.tanh(self.a(torch.cat([x, lq], 1)))) * (1 + s[:, None, None, None] / 15)


def test_tiled_equals_untiled_for_a_local_model():
    from cresshift.models.pipeline import SRPipeline
    pipe = SRPipeline(LocalNet(), ResShiftSchedule.from_config("realsr-x4-v1"), sf=4,
                      config={"model": {"params": {"channel_mult": [1, 2, 2], "window_size": 8}}})
    lr = torch.rand(1, 3, 40, 56) * 2 - 1
    for solver in ("heun", "markov"):  # the noise per pixel does not depend on tiling either
        full = pipe(lr, solver=solver, nfe=5, seed=0)
        tiled = pipe(lr, solver=solver, nfe=5, seed=0, tile=16, tile_overlap=8)
        torch.testing.assert_close(tiled, full, rtol=0, atol=1e-4)


def test_save_load_round_trip_bit_for_bit(tmp_path, pixel_pipe):
    path = tmp_path / "m.safetensors"
    pixel_pipe.schedule = ExpAlphaSchedule.fit(ResShiftSchedule.from_config("realsr-x4-v1"), warn=False)
    try:
        pixel_pipe.save(path, training={"steps": 0})
        other = load_pipeline(path)
        assert isinstance(other.schedule, ExpAlphaSchedule) and other.schedule.a == pixel_pipe.schedule.a
        lr = torch.rand(1, 3, 16, 16) * 2 - 1
        assert torch.equal(other(lr, solver="euler", nfe=3, seed=0), pixel_pipe(lr, solver="euler", nfe=3, seed=0))
    finally:
        pixel_pipe.schedule = ResShiftSchedule.from_config("realsr-x4-v1")


def test_official_layout_round_trip(tmp_path, latent_pipe):
    # Weights saved the way official checkpoints are distributed load back unchanged.
    torch.save({"state_dict": {f"module.{k}": v for k, v in latent_pipe.net.state_dict().items()}}, tmp_path / "net.pth")
    torch.save(latent_pipe.autoencoder.state_dict(), tmp_path / "ae.pth")
    from cresshift.models import pipeline as pl
    loaded_sd = pl.load_official_state_dict(tmp_path / "net.pth")
    for k, v in latent_pipe.net.state_dict().items():
        assert torch.equal(loaded_sd[k], v)


def test_errors(tmp_path, pixel_pipe):
    with pytest.raises(CheckpointError, match="not in the cache .*run 'cresshift fetch realsr-x4-v1'"):
        load_pipeline("realsr-x4-v1")
    with pytest.raises(CheckpointError, match="no such model file or preset"):
        load_pipeline(tmp_path / "missing.safetensors")
    torch.save(pixel_pipe.net.state_dict(), tmp_path / "small.pth")
    with pytest.raises(CheckpointError, match="say which preset"):
        load_pipeline(tmp_path / "small.pth")
    with pytest.raises(CheckpointError, match="latent model: pass autoencoder"):
        load_pipeline(tmp_path / "small.pth", preset="realsr-x4-v1")
    torch.save({}, tmp_path / "ae.pth")
    with pytest.raises(CheckpointError, match=r"does not fit the network: .*missing.*model_channels=32"):
        load_pipeline(tmp_path / "small.pth", preset="realsr-x4-v1", autoencoder=tmp_path / "ae.pth")
    with pytest.raises(ValueError, match="at least 8x8"):
        pixel_pipe(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\[B, 3, h, w\]"):
        pixel_pipe(torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="NaN"):
        pixel_pipe(torch.full((1, 3, 8, 8), float("nan")))


def test_top_level_load_pipeline_is_lazy():
    assert callable(cresshift.load_pipeline)


# --- mirrored context at the image border -------------------------------------------------
class _BlurLq(torch.nn.Module):
    """x0_hat = 3x3 box blur of lq with zero padding (a border-sensitive 'network'); records input sizes."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, x, s, lq=None):
        self.sizes.append(tuple(x.shape[-2:]))
        return torch.nn.functional.conv2d(lq, torch.full((3, 1, 3, 3), 1 / 9), padding=1, groups=3)


def _blur_pipe(sampling=None):
    config = {"diffusion": {**DIFF, "latent_flag": False}}
    if sampling is not None:
        config["sampling"] = sampling
    return SRPipeline(_BlurLq(), ResShiftSchedule.from_config("realsr-x4-v1"), sf=4, config=config)


def test_context_pad_mirrors_the_border_and_crops_it_off():
    pipe = _blur_pipe()
    assert pipe.context_pad == 0  # official behaviour unless the model's config asks for it
    flat = torch.full((1, 3, 16, 16), 0.8)
    plain = pipe(flat, solver="markov", nfe=3, seed=0)
    assert float((plain[..., 0, :] - 0.8).abs().max()) > 0.1  # zero padding darkens the border
    mirrored = pipe(flat, solver="markov", nfe=3, seed=0, context_pad=16)
    torch.testing.assert_close(mirrored, torch.full_like(mirrored, 0.8))
    # Every call saw the image plus 16 px each side, rounded up to the network's multiple (64).
    assert all(h % 64 == 0 and w % 64 == 0 and h >= 64 + 32 for h, w in pipe.net.sizes[-3:])

    lr = torch.rand(2, 3, 16, 16) * 2 - 1
    y = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(y, (1, 1, 1, 1), mode="reflect"),
                                          torch.full((3, 1, 3, 3), 1 / 9), groups=3).clamp(-1, 1)
    got = pipe(lr, solver="markov", nfe=3, seed=0, context_pad=16)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    interior = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    torch.testing.assert_close(pipe(lr, solver="markov", nfe=3, seed=0)[interior], got[interior], atol=1e-6, rtol=0)


def test_context_pad_comes_from_the_model_config_and_is_checked():
    assert _blur_pipe({"context_pad": 16}).context_pad == 16
    with pytest.raises(ValueError, match="context_pad must be a whole number"):
        _blur_pipe({"context_pad": -1})
    with pytest.raises(ValueError, match="context_pad must be a whole number"):
        _blur_pipe().run(torch.zeros(1, 3, 16, 16), solver="markov", nfe=2, context_pad=2.5)
    tiled = _blur_pipe({"context_pad": 16})(torch.rand(1, 3, 24, 40) * 2 - 1, solver="markov", nfe=2, tile=16)
    assert tiled.shape == (1, 3, 96, 160)


def test_bundled_models_use_mirrored_context():
    assert load_pipeline("bundled").context_pad == 16 and load_pipeline("bundled-discrete").context_pad == 16


@pytest.mark.parametrize("name,schedule", [("bundled-discrete", None), ("bundled", None), ("bundled-discrete", "exp")])
def test_network_denoiser_is_the_predictor_run_samples_with(name, schedule):
    """pipe.network_denoiser(y, lq)(x, t) gives the x0_hat that run() hands its solver at the same x and t."""
    from cresshift.models.pipeline import upsample_lr

    pipe = load_pipeline(name)
    lr = torch.rand(2, 3, 16, 16) * 2 - 1
    seen = []
    pipe.run(lr, solver="ddim", nfe=4, seed=1, schedule=schedule, callback=seen.append)
    y = upsample_lr(lr, pipe.sf)
    den = pipe.network_denoiser(y, y, schedule=schedule)
    assert den.net.context == pipe.context_pad == 16
    for step in seen[:2]:
        t = torch.full((2,), float(step["t"]))
        torch.testing.assert_close(den(step["x"], t), step["x0_hat"], atol=0, rtol=0)
    other = pipe.network_denoiser(y, y, schedule=schedule, context_pad=0)(seen[0]["x"], torch.full((2,), float(seen[0]["t"])))
    assert not torch.equal(other, seen[0]["x0_hat"])  # the border context changes the prediction


def test_decode_is_the_decoder_run_applies(latent_pipe, pixel_pipe):
    """decode() maps the solver's output to the SR pixels exactly as run() does; pixel models pass through."""
    lr = torch.rand(1, 3, 32, 32) * 2 - 1  # a multiple of lr_multiple: nothing is padded or cropped
    res = latent_pipe.run(lr, solver="euler", nfe=2, seed=3)
    z = res.sample.x
    assert z.shape[-2:] == (128 // 4, 128 // 4)
    img = latent_pipe.decode(z)
    assert img.shape == (1, 3, 128, 128)
    assert torch.equal(img.clamp(-1, 1), res.sr)
    x = torch.rand(1, 3, 16, 16)
    assert pixel_pipe.decode(x) is x

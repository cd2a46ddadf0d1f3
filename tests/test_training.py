"""The trainer (issue 4): loss, continuous t, exact resume, atomic checkpoints, DDP, bad input, bundled models."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cresshift.data.io import save_image
from cresshift.models.checkpoints import atomic_write
from cresshift.models.pipeline import load_pipeline
from cresshift.training import Trainer, TrainSettings
from cresshift.training.cli import finetune
from cresshift.training.data import CropSampler

T = 15


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """Six 96x96 crops of two real training photographs (scikit-image's rocket, scikit-learn's china)."""
    from cresshift.data.photos import photo_catalog, _to_tensor

    folder = tmp_path_factory.mktemp("photos")
    photos = {p.name: p for p in photo_catalog()}
    for name in ("rocket", "china"):
        img = _to_tensor(photos[name].load())
        for i, (r, c) in enumerate([(100, 100), (200, 300), (300, 150)]):
            save_image(img[:, r:r + 96, c:c + 96], folder / f"{name}_{i}.png")
    return folder


def tiny(folder: Path, out: Path, **kw) -> TrainSettings:
    """A seconds-long run: 32 px crops, the small pixel model with one block per level."""
    base = dict(out=str(out), data=str(folder), val=None, crop=32, batch=4, micro_batch=2, steps=4, lr=1e-3,
                model_overrides={"num_res_blocks": [1, 1, 1]}, save_every=1000, val_every=1000, ema=0.9, seed=3)
    base.update(kw)
    return TrainSettings(**base)


def fixed_loss(tr: Trainer, hr: torch.Tensor, lr: torch.Tensor) -> float:
    """The training loss on a fixed batch with fixed noise and t (the trainer's RNG left untouched)."""
    state = tr.noise.get_state()
    tr.noise.manual_seed(1234)
    with torch.no_grad():
        value = float(tr.loss_on(tr.net, hr, lr))
    tr.noise.set_state(state)
    return value


def test_loss_decreases_on_real_photographs(photo_folder, tmp_path):
    tr = Trainer(tiny(photo_folder, tmp_path, predict="xstart", steps=40, lr=2e-3))
    hr, lr = CropSampler([torch.zeros(3, 32, 32)], crop=32, sf=4).batch(1)  # shape check of the sampler
    assert hr.shape == (1, 3, 32, 32) and lr.shape == (1, 3, 8, 8)
    hr, lr = tr.sampler.batch(8)
    before = fixed_loss(tr, hr, lr)
    for _ in range(40):
        tr.train_step()
    after = fixed_loss(tr, hr, lr)
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("time_mode", ["continuous", "discrete"])
def test_training_times_and_network_clock(photo_folder, tmp_path, time_mode):
    """continuous: t ~ U(1/T, 1), the network sees s = T t - 1 in (0, T-1]; discrete: integer s = k - 1."""
    tr = Trainer(tiny(photo_folder, tmp_path, time=time_mode, predict="residual"))
    drawn, seen = [], []
    sample_t = tr.sample_t

    def spy_t(n: int) -> torch.Tensor:
        drawn.append(sample_t(n))
        return drawn[-1]
    tr.sample_t = spy_t  # type: ignore[method-assign]
    hook = tr.net.register_forward_pre_hook(lambda mod, args: seen.append(args[1].detach().double().clone()))
    for _ in range(3):
        tr.train_step()
    hook.remove()
    t = torch.cat(drawn)
    s = torch.cat(seen)
    assert len(t) == 3 * 4 and s.shape == t.shape
    torch.testing.assert_close(s, T * t - 1, atol=1e-5, rtol=0)  # the network runs in float32
    assert float(t.min()) >= 1 / T and float(t.max()) <= 1
    if time_mode == "continuous":
        assert not torch.allclose(s, s.round()), "continuous t must feed fractional indices"
        big = tr.sample_t(20000)
        assert float(big.min()) > 1 / T and float(big.max()) <= 1
        assert abs(float(big.mean()) - (1 + 1 / T) / 2) < 0.01  # uniform on (1/T, 1]
    else:
        torch.testing.assert_close(s, s.round())
        assert set(s.round().long().tolist()) <= set(range(T))


def test_continuous_eta_follows_the_schedule(photo_folder, tmp_path):
    """x_t = x0 + eta(t) (y - x0) + kappa sqrt(eta(t)) z with eta from the fitted exp-alpha schedule."""
    from cresshift.schedules import ExpAlphaSchedule

    tr = Trainer(tiny(photo_folder, tmp_path, time="continuous", schedule="exp", predict="xstart"))
    assert isinstance(tr.schedule, ExpAlphaSchedule)
    tr.sample_t = lambda n: torch.full((n,), 0.5, dtype=torch.float64)  # type: ignore[method-assign]
    seen = []
    hook = tr.net.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    hr, lr = tr.sampler.batch(2)
    state = tr.noise.get_state()
    tr.loss_on(tr.net, hr, lr)
    hook.remove()
    tr.noise.set_state(state)
    z = torch.randn(hr.shape, generator=tr.noise)
    from cresshift.models.pipeline import upsample_lr

    eta = float(tr.schedule.eta(torch.tensor(0.5, dtype=torch.float64)))
    kappa = tr.schedule.kappa
    y = upsample_lr(lr, 4)
    x_t = hr + eta * (y - hr) + kappa * eta ** 0.5 * z
    torch.testing.assert_close(seen[0], x_t / (3 * kappa * eta ** 0.5 + 1), atol=1e-5, rtol=1e-5)  # design §5


def test_resume_matches_an_uninterrupted_run(photo_folder, tmp_path):
    """Killed (Ctrl-C) at step 3 and resumed == 6 uninterrupted steps, bit for bit (weights, EMA, optimiser)."""
    settings = tiny(photo_folder, tmp_path / "a", steps=6, predict="residual", warmup=2, cosine=True)
    full = Trainer(settings)
    full.run(progress=False)

    killed = Trainer(tiny(photo_folder, tmp_path / "b", steps=6, predict="residual", warmup=2, cosine=True))
    step = killed.train_step

    def interrupt_at_3() -> float:
        if killed.step == 3:
            raise KeyboardInterrupt
        return step()
    killed.train_step = interrupt_at_3  # type: ignore[method-assign]
    result = killed.run(progress=False)
    assert result["interrupted"] and result["step"] == 3
    ckpt = tmp_path / "b" / "ckpt-0000003.pt"
    torch.load(ckpt, map_location="cpu", weights_only=True)  # plain tensors only

    resumed = Trainer(tiny(photo_folder, tmp_path / "b", steps=6, predict="residual", warmup=2, cosine=True))
    resumed.resume(ckpt)
    assert resumed.step == 3
    resumed.run(progress=False)
    for a, b in [(full.net, resumed.net), (full.ema, resumed.ema)]:
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(va, vb), k
    sa, sb = full.opt.state_dict()["state"], resumed.opt.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    assert torch.equal(full.sampler.generator.get_state(), resumed.sampler.generator.get_state())


def test_checkpoints_keep_last_k_and_export(photo_folder, tmp_path):
    tr = Trainer(tiny(photo_folder, tmp_path, steps=4, save_every=1, keep_last=2, predict="residual"))
    tr.run(progress=False)
    assert sorted(p.name for p in tmp_path.glob("ckpt-*.pt")) == ["ckpt-0000003.pt", "ckpt-0000004.pt"]
    assert not list(tmp_path.glob(".*.tmp"))
    import cresshift

    pipe = cresshift.load_pipeline(tmp_path / "last.safetensors")
    assert pipe.config["training"]["step"] == 4
    assert pipe.config["training"]["settings"]["predict"] == "residual"
    assert "torch" in pipe.config["training"]["versions"]
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 4 and "loss" in lines[-1] and "lr" in lines[-1]


def test_a_crash_mid_save_leaves_the_previous_checkpoint(photo_folder, tmp_path, monkeypatch):
    tr = Trainer(tiny(photo_folder, tmp_path, predict="residual"))
    tr.train_step()
    path = tr.save("latest.pt")
    assert path is not None
    before = torch.load(path, weights_only=True)["step"]
    tr.train_step()

    def dying_save(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("the disk went away mid-write")
    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="mid-write"):
        tr.save("latest.pt")
    monkeypatch.undo()
    st = torch.load(path, weights_only=True)
    assert st["step"] == before == 1
    assert not list(tmp_path.glob(".*.tmp"))
    # And the primitive itself: a failure after a partial write never replaces the target.
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")

    def partial(tmp: str) -> None:
        Path(tmp).write_bytes(b"new but incomplete")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, partial)
    assert target.read_bytes() == b"old"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, folder: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    tr = Trainer(tiny(Path(folder), Path(out), steps=3, save_every=3, predict="residual"))
    tr.run(progress=False)
    torch.save({"net": tr.net.state_dict(), "ema": tr.ema.state_dict(),
                "data_rng": tr.sampler.generator.get_state()}, Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_ddp_two_gloo_processes_hold_identical_weights(photo_folder, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(photo_folder), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for group in ("net", "ema"):
        for k, v in r0[group].items():
            assert torch.equal(v, r1[group][k]), (group, k)
    assert not torch.equal(r0["data_rng"], r1["data_rng"]), "ranks must draw different crops"
    # Rank 0 alone wrote the checkpoint, with both ranks' RNG states.
    st = torch.load(tmp_path / "ckpt-0000003.pt", weights_only=True)
    assert st["world_size"] == 2 and len(st["data_rng"]) == 2
    assert torch.equal(st["data_rng"][1], r1["data_rng"])
    changed = any(v.abs().sum() > 0 for k, v in r0["net"].items() if k.startswith("out.2"))
    assert changed, "the zero-initialised output layer never moved"


def test_bad_input_fails_before_training(photo_folder, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images"):
        Trainer(tiny(empty, tmp_path / "o"))
    with pytest.raises(ValueError, match="not found"):
        Trainer(tiny(tmp_path / "missing", tmp_path / "o"))
    with pytest.raises(ValueError, match="not divisible"):
        Trainer(tiny(photo_folder, tmp_path / "o", crop=30))
    with pytest.raises(ValueError, match="smaller than the crop"):
        Trainer(tiny(photo_folder, tmp_path / "o", crop=128, model_overrides={"num_res_blocks": [1, 1, 1]}))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError):
        Trainer(tiny(broken, tmp_path / "o"))
    with pytest.raises(ValueError, match="multiple of --micro-batch"):
        Trainer(tiny(photo_folder, tmp_path / "o", batch=5, micro_batch=2))
    # A resume file from another configuration.
    tr = Trainer(tiny(photo_folder, tmp_path / "r", predict="residual"))
    ckpt = tr.save()
    other = Trainer(tiny(photo_folder, tmp_path / "r2", predict="residual", time="continuous"))
    with pytest.raises(ValueError, match="time"):
        other.resume(ckpt)
    wider = Trainer(tiny(photo_folder, tmp_path / "r3", predict="residual",
                         model_overrides={"num_res_blocks": [1, 1, 2]}))
    with pytest.raises(ValueError, match="another model configuration"):
        wider.resume(ckpt)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="cannot read"):
        wider.resume(garbage)


def test_schedule_overrides_reach_the_model_and_the_training_noise(photo_folder, tmp_path):
    """--kappa / --min-noise-level (from scratch) change the discrete table the model is trained and saved with."""
    from cresshift.schedules import ResShiftSchedule

    tr = Trainer(tiny(photo_folder, tmp_path / "o", kappa=0.1, min_noise_level=0.01, predict="residual"))
    assert tr.discrete.kappa == 0.1 and tr.discrete.min_noise_level == 0.01
    want = ResShiftSchedule(T=15, kappa=0.1, min_noise_level=0.01, etas_end=0.99, power=0.3).etas
    assert tr.discrete.etas == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="min-noise-level must be in"):
        Trainer(tiny(photo_folder, tmp_path / "o2", min_noise_level=1.5))
    # a saved cresshift model keeps its schedule: overriding it when fine-tuning is refused
    best = tmp_path / "init.safetensors"
    tr.export_pipeline().save(best)
    assert ResShiftSchedule.from_config(load_pipeline(str(best)).config["diffusion"]).min_noise_level == 0.01
    with pytest.raises(ValueError, match="keeps its schedule"):
        Trainer(tiny(photo_folder, tmp_path / "o3", init=str(best), min_noise_level=0.02))


def test_context_pad_is_stored_with_the_model(photo_folder, tmp_path):
    """From scratch the model samples with 16 px of mirrored border context; --context-pad overrides it, also when fine-tuning."""
    tr = Trainer(tiny(photo_folder, tmp_path / "o"))
    path = tmp_path / "scratch.safetensors"
    tr.export_pipeline().save(path)
    assert load_pipeline(str(path)).context_pad == 16
    assert Trainer(tiny(photo_folder, tmp_path / "o2", context_pad=0)).export_pipeline().context_pad == 0
    assert Trainer(tiny(photo_folder, tmp_path / "o3", init=str(path))).export_pipeline().context_pad == 16
    assert Trainer(tiny(photo_folder, tmp_path / "o4", init=str(path), context_pad=32)).export_pipeline().context_pad == 32
    with pytest.raises(ValueError, match="--context-pad must be >= 0"):
        Trainer(tiny(photo_folder, tmp_path / "o5", context_pad=-1))


def test_trainable_time_moves_only_the_time_conditioning(photo_folder, tmp_path):
    """--trainable time: time_embed and every emb_layers change, every other weight (and its EMA) stays bit-identical."""
    from cresshift.training.trainer import is_time_parameter

    # a briefly trained start (from scratch every block's last convolution is zero, so no gradient reaches emb_layers)
    first = Trainer(tiny(photo_folder, tmp_path / "a", predict="xstart", time="continuous", schedule="exact"))
    for _ in range(3):
        first.train_step()
    start = tmp_path / "start.safetensors"
    first.export_pipeline().save(start)
    tr = Trainer(tiny(photo_folder, tmp_path / "o", init=str(start), time="continuous", schedule="exact",
                      trainable="time", lr=1e-2))
    before = {n: p.detach().clone() for n, p in tr.net.named_parameters()}
    time_names = {n for n in before if is_time_parameter(n)}
    assert time_names and len(time_names) < len(before)
    assert {n for n in before if n.startswith("time_embed.")} <= time_names
    assert all(".emb_layers." in n for n in time_names - {n for n in before if n.startswith("time_embed.")})
    for _ in range(3):
        tr.train_step()
    after = dict(tr.net.named_parameters())
    ema = dict(tr.ema.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == time_names
    assert all(torch.equal(ema[n], before[n]) for n in before if n not in time_names)
    assert not any(torch.equal(ema[n], before[n]) for n in time_names)
    assert {id(p) for g in tr.opt.param_groups for p in g["params"]} == {id(after[n]) for n in time_names}
    # a resume file from a run that trained all parameters is refused
    ckpt = first.save()
    with pytest.raises(ValueError, match="trainable"):
        tr.resume(ckpt)
    # checkpoints written before --trainable existed count as "all"
    st = torch.load(ckpt, map_location="cpu", weights_only=True)
    settings = json.loads(st["settings"])
    del settings["trainable"]
    st["settings"] = json.dumps(settings)
    older = tmp_path / "older.pt"
    torch.save(st, older)
    again = Trainer(tiny(photo_folder, tmp_path / "a2", predict="xstart", time="continuous", schedule="exact"))
    again.resume(older)
    assert again.step == first.step
    with pytest.raises(ValueError, match="trainable='all'"):
        tr.resume(older)
    with pytest.raises(ValueError, match="--trainable must be all or time"):
        Trainer(tiny(photo_folder, tmp_path / "b", trainable="norms"))


def test_finetune_command_reports_bad_input_in_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(finetune, ["--data", str(empty), "--out", str(tmp_path / "o"), "--val", "none"])
    assert res.exit_code == 2
    assert "no images" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(finetune, ["--help"])
    assert res.exit_code == 0 and "--time" in res.output and "torchrun" in res.output


def test_finetune_command_trains_and_resumes(photo_folder, tmp_path):
    args = ["--data", str(photo_folder), "--val", "none", "--out", str(tmp_path), "--crop", "32", "--batch", "2",
            "--micro-batch", "1", "--save-every", "1", "--predict", "residual", "--quiet", "--time", "continuous"]
    res = CliRunner().invoke(finetune, args + ["--steps", "2"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "last.safetensors").is_file() and (tmp_path / "ckpt-0000002.pt").is_file()
    res = CliRunner().invoke(finetune, args + ["--steps", "3", "--resume", "auto"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "ckpt-0000003.pt").is_file()
    # --trainable reaches the settings: resuming an all-parameter run with it is refused in one line
    res = CliRunner().invoke(finetune, args + ["--steps", "4", "--resume", "auto", "--trainable", "time"])
    assert res.exit_code != 0 and "trainable='all'" in res.output and not (tmp_path / "ckpt-0000004.pt").exists()


def _bundled_or_skip(name: str) -> Path:
    from cresshift.models.pipeline import bundled_path

    path = bundled_path(name)
    if not path.is_file():
        pytest.skip(f"{path} is not there yet (python benchmarks/train_bundled.py --install writes it)")
    return path


@pytest.mark.parametrize("name", ["bundled", "bundled-discrete"])
def test_bundled_models_load_and_super_resolve(name):
    import cresshift
    from cresshift.data.io import bicubic_down, list_images, load_image
    from cresshift.metrics import psnr_y

    path = _bundled_or_skip(name)
    assert path.stat().st_size < 10 * 2 ** 20
    pipe = cresshift.load_pipeline(name)
    assert pipe.latent is False and pipe.sf == 4
    training = pipe.config["training"]
    assert training["settings"]["time"] == ("continuous" if name == "bundled" else "discrete")
    if name == "bundled":  # continuous t on the fitted exp-alpha schedule, only the time conditioning trained
        from cresshift.training.trainer import is_time_parameter

        assert pipe.config["schedule"]["type"] == "exp" and training["settings"]["trainable"] == "time"
        base = cresshift.load_pipeline("bundled-discrete").net.state_dict()
        own = pipe.net.state_dict()
        assert all(torch.equal(own[k], base[k]) for k in base if not is_time_parameter(k))
        assert not all(torch.equal(own[k], base[k]) for k in base if is_time_parameter(k))
    else:
        assert pipe.config["schedule"] is None
    tiles = list_images([path.parent / "testset"])
    assert len(tiles) >= 3
    hr = torch.stack([load_image(p) for p in tiles[:2]])
    lr = bicubic_down(hr, 4)
    res = pipe.run(lr, solver="markov" if name == "bundled-discrete" else "ddim", nfe=15, seed=0)
    assert res.sr.shape == hr.shape and bool(torch.isfinite(res.sr).all()) and res.nfe <= 15
    assert float(psnr_y(res.sr, hr).mean()) > 20


def test_degradation_is_reproducible_and_light():
    from cresshift.training.data import Degradation

    lr = torch.rand(6, 3, 16, 16) * 2 - 1
    a = Degradation()(lr, torch.Generator().manual_seed(5))
    b = Degradation()(lr, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == lr.shape and float(a.abs().max()) <= 1
    smooth = torch.linspace(-0.5, 0.5, 16).expand(2, 3, 16, 16).contiguous()
    out = Degradation()(smooth, torch.Generator().manual_seed(0))
    assert float((out - smooth).abs().mean()) < 0.1  # a light degradation of a smooth image


def test_paired_folders(tmp_path):
    from cresshift.training.data import load_paired

    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    img = torch.rand(3, 64, 48) * 2 - 1
    save_image(img, hr_dir / "a.png")
    save_image(img[:, ::4, ::4], lr_dir / "a.png")
    hrs, lrs = load_paired(hr_dir, lr_dir, 4)
    assert hrs[0].shape == (3, 64, 48) and lrs[0].shape == (3, 16, 12)
    sampler = CropSampler(hrs, lrs=lrs, crop=32, sf=4)
    hr, lr = sampler.batch(3)
    assert hr.shape == (3, 3, 32, 32) and lr.shape == (3, 3, 8, 8)
    save_image(img[:, ::2, ::2], lr_dir / "a.png")
    with pytest.raises(ValueError, match="expected HR/4"):
        load_paired(hr_dir, lr_dir, 4)


def test_scale_augmentation_shrinks_the_photograph_by_a_random_factor(tmp_path):
    """On a linear ramp the crop's slope is the ramp's divided by the drawn scale s in [min_scale, 1]."""
    slope = 0.004  # per HR pixel, along x
    ramp = (torch.arange(400, dtype=torch.float32) * slope - 0.8).expand(3, 300, 400).contiguous()

    def slopes(sampler: CropSampler) -> torch.Tensor:
        hr, _ = sampler.batch(64)
        inner = hr[:, :, 4:-4, 4:-4]  # away from the resampling's edge effects
        dx = (inner[..., :, 1:] - inner[..., :, :-1]).abs().mean(dim=(1, 2, 3))
        dy = (inner[..., 1:, :] - inner[..., :-1, :]).abs().mean(dim=(1, 2, 3))
        return torch.maximum(dx, dy)  # rot90 may have turned the ramp

    plain = slopes(CropSampler([ramp], crop=32, sf=4, seed=1))
    assert torch.allclose(plain, torch.full_like(plain, slope), rtol=1e-4)
    scaled = slopes(CropSampler([ramp], crop=32, sf=4, seed=1, min_scale=0.5))
    factor = scaled / slope  # = 1 / s, up to rounding the square to whole pixels
    assert float(factor.min()) > 0.97 and float(factor.max()) < 2.05
    assert float(factor.max()) > 1.6 and float(factor.min()) < 1.2  # spread over the range, not one scale
    again = slopes(CropSampler([ramp], crop=32, sf=4, seed=1, min_scale=0.5))
    assert torch.equal(scaled, again)  # reproducible from the seed
    hr, lr = CropSampler([ramp], crop=32, sf=4, seed=1, min_scale=0.5).batch(2)
    assert hr.shape == (2, 3, 32, 32) and lr.shape == (2, 3, 8, 8) and float(hr.abs().max()) <= 1
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        CropSampler([ramp], crop=32, sf=4, min_scale=0)
    with pytest.raises(ValueError, match="HR-only"):
        CropSampler([ramp], crop=32, sf=4, lrs=[ramp[:, ::4, ::4]], min_scale=0.5)


def test_scale_augmentation_is_a_training_setting(photo_folder, tmp_path):
    with pytest.raises(ValueError, match="--scale-aug"):
        Trainer(tiny(photo_folder, tmp_path / "o", scale_aug=1.5))
    tr = Trainer(tiny(photo_folder, tmp_path / "r", predict="residual", scale_aug=0.5))
    assert tr.sampler.min_scale == 0.5
    ckpt = tr.save()
    other = Trainer(tiny(photo_folder, tmp_path / "r2", predict="residual"))
    with pytest.raises(ValueError, match="scale_aug=0.5"):
        other.resume(ckpt)
    result = CliRunner().invoke(finetune, ["--data", str(photo_folder), "--scale-aug", "0", "--out", str(tmp_path / "c")])
    assert result.exit_code != 0 and "--scale-aug" in result.output


def _interrupted_at(trainer: Trainer, step: int) -> None:
    """Make ``trainer.run`` stop (as by Ctrl-C) when it reaches ``step``."""
    train_step = trainer.train_step

    def interrupt() -> float:
        if trainer.step == step:
            raise KeyboardInterrupt
        return train_step()
    trainer.train_step = interrupt  # type: ignore[method-assign]


def test_loss_aware_t_sampler_is_part_of_the_resume_state(photo_folder, tmp_path):
    """Loss-aware t: interrupted at step 3 and resumed == 6 uninterrupted steps (weights, sampler histories)."""
    from cresshift.training.t_sampler import LossAwareTSampler

    def make(out: Path) -> Trainer:
        tr = Trainer(tiny(photo_folder, out, steps=6, time="continuous", t_sampler="loss-aware", predict="residual"))
        tr.t_sampler = LossAwareTSampler(T, bins=3, history=2)  # warm after a few samples: p changes within the run
        return tr
    full = make(tmp_path / "a")
    full.run(progress=False)
    assert full.t_sampler.warm and int(full.t_sampler.counts.sum()) == 6 * 4
    killed = make(tmp_path / "b")
    _interrupted_at(killed, 3)
    assert killed.run(progress=False)["interrupted"]
    resumed = make(tmp_path / "b")
    resumed.resume(tmp_path / "b" / "ckpt-0000003.pt")
    assert int(resumed.t_sampler.counts.sum()) == 3 * 4
    resumed.run(progress=False)
    for (k, va), vb in zip(full.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(va, vb), k
    assert torch.equal(full.t_sampler.losses, resumed.t_sampler.losses)
    # a uniform-t checkpoint does not resume a loss-aware run
    uniform = Trainer(tiny(photo_folder, tmp_path / "c", steps=2, time="continuous", predict="residual"))
    uniform.run(progress=False)
    with pytest.raises(ValueError, match="t_sampler"):
        make(tmp_path / "d").resume(tmp_path / "c" / "ckpt-0000002.pt")


def test_loss_aware_objective_weights_each_crop_by_the_inverse_density(photo_folder, tmp_path):
    tr = Trainer(tiny(photo_folder, tmp_path, time="continuous", t_sampler="loss-aware", predict="residual"))
    edges = torch.linspace(1 / T, 1, 16, dtype=torch.float64)
    for b in range(15):  # a warm sampler that favours large t
        tr.t_sampler.update(torch.full((10,), float(edges[b] + edges[b + 1]) / 2), torch.full((10,), float(b + 1)))
    assert tr.t_sampler.warm
    hr, lr = tr.sampler.batch(4)
    state = tr.noise.get_state()
    with torch.no_grad():
        t, err = tr.sample_losses(tr.net, hr, lr)
        tr.noise.set_state(state)
        weighted = float(tr.loss_on(tr.net, hr, lr))
    w = 1 / (15 * tr.t_sampler.probabilities()[((t - 1 / T) / ((1 - 1 / T) / 15)).ceil().long() - 1])
    assert not torch.allclose(w, torch.ones_like(w))
    assert weighted == pytest.approx(float((err.double() * w).mean()), rel=1e-5)


def test_log_has_per_t_losses_and_tensorboard_gets_the_run(photo_folder, tmp_path):
    pytest.importorskip("tensorboard")
    tr = Trainer(tiny(photo_folder, tmp_path, steps=10, time="continuous", t_sampler="loss-aware", predict="residual",
                      val=str(photo_folder), val_every=10, tensorboard=True))
    tr.run(progress=False)
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    train_line = next(x for x in lines if "loss" in x)
    per_t = train_line["loss_per_t"]
    assert len(per_t) == 15 and sum(v is not None for v in per_t) >= 5  # 40 crops over 15 bins
    assert all(v is None or v >= 0 for v in per_t) and train_line["grad_norm"] > 0
    assert len(train_line["t_sampler_p"]) == 15
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "train/grad_norm", "val/psnr_y"} <= set(tags["scalars"])
    assert any(t.startswith("loss_per_t/bin_") for t in tags["scalars"]) and "val/images" in tags["images"]
    assert events.Scalars("train/loss")[-1].value == pytest.approx(train_line["loss"], rel=1e-6)


def test_t_sampler_and_tensorboard_settings_are_checked(photo_folder, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="needs --time continuous"):
        Trainer(tiny(photo_folder, tmp_path, time="discrete", t_sampler="loss-aware"))
    with pytest.raises(ValueError, match="--t-sampler"):
        Trainer(tiny(photo_folder, tmp_path, time="continuous", t_sampler="importance"))
    from cresshift.training import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "tensorboard_available", lambda: False)
    with pytest.raises(ValueError, match="pip install tensorboard"):
        Trainer(tiny(photo_folder, tmp_path, tensorboard=True))

"""Fault injection (issue 16): kills and resumes, a full disk, concurrent writers, read-only and
symlinked targets, non-finite weights and losses, and a battery of bad inputs.

Extend it by adding a row to a table (``WRITE_CASES``, ``BAD_INPUTS``, ``KILL_POINTS``) or a
test that uses the helpers below. SIGKILL tests start real processes; the ones that take more
than a few seconds carry ``@pytest.mark.slow``, one fast kill/resume case always runs.
"""
from __future__ import annotations

import errno
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from cresshift.cli import main
from cresshift.data.io import (OutputError, atomic_write, lock_folder, remove_stale_temps, restore_nonfinite,
                               save_image, strict_json)
from test_cli import assert_one_line_error, make_tiny_model, photo
from test_training import photo_folder, tiny  # noqa: F401  (photo_folder is a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


# --- helpers -------------------------------------------------------------------------------------
def same_threads_env() -> dict:
    """The environment for a subprocess whose results a test compares with this process's: as many threads
    (sums split over other thread counts differ in the last bits)."""
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}


def cli(*args, **kw):
    """Run ``cresshift ARGS`` in-process (standalone, as from a shell): stdout, stderr, exit code."""
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def strict_load(text: str):
    """json.loads that refuses NaN / Infinity tokens, as strict parsers do."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.name.endswith("tmp")]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def ckpt_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a training checkpoint (weights, EMA, optimiser state, RNG), flattened by name."""
    st = torch.load(path, map_location="cpu", weights_only=True)
    flat = {f"net.{k}": v for k, v in st["net"].items()}
    flat.update({f"ema.{k}": v for k, v in st["ema"].items()})
    for i, state in st["opt"]["state"].items():
        flat.update({f"opt.{i}.{k}": v for k, v in state.items() if isinstance(v, torch.Tensor)})
    flat.update({f"data_rng.{i}": v for i, v in enumerate(st["data_rng"])})
    flat.update({f"noise_rng.{i}": v for i, v in enumerate(st["noise_rng"])})
    return flat


def assert_same_checkpoint(a: Path, b: Path) -> None:
    ta, tb = ckpt_tensors(a), ckpt_tensors(b)
    assert ta.keys() == tb.keys()
    differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not differ, f"{len(differ)} of {len(ta)} tensors differ, e.g. {differ[:3]}"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    lr = root / "lr"
    save_image(photo(8, 8), lr / "a.png")
    save_image(photo(8, 8, 300, 100), lr / "b.png")
    save_image(photo(32, 32), root / "hr32" / "a.png")
    return {"root": root, "model": str(make_tiny_model(root / "tiny.safetensors")), "lr": lr, "hr32": root / "hr32"}


def sample_args(files, out, *extra):
    return ["sample", files["lr"], "-o", out, "--model", files["model"], "--solver", "euler", "--nfe", "2", "-q",
            *extra]


# --- the one writer: atomic, no-clobber, mode, symlinks, read-only, full disk ---------------------
def _write_mode(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    target.chmod(0o600)
    atomic_write(target, b"new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() == b"new"


def _write_symlink(tmp_path):
    real = tmp_path / "real" / "f.bin"
    real.parent.mkdir()
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    atomic_write(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"


def _write_read_only(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    target.chmod(0o444)
    with pytest.raises(OutputError, match="read-only"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"


def _write_no_clobber_at_the_write(tmp_path):
    target = tmp_path / "f.bin"

    def racing(tmp):  # another process creates the target while we write ours
        Path(tmp).write_bytes(b"ours")
        target.write_bytes(b"theirs")
    with pytest.raises(OutputError, match="exists"):
        atomic_write(target, racing, overwrite=False)
    assert target.read_bytes() == b"theirs"


def _write_full_disk(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def full(tmp):
        Path(tmp).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError) as info:
        atomic_write(target, full)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_bytes() == b"old"


WRITE_CASES = [_write_mode, _write_symlink, _write_read_only, _write_no_clobber_at_the_write, _write_full_disk]


@pytest.mark.parametrize("case", WRITE_CASES, ids=lambda f: f.__name__[len("_write_"):])
def test_atomic_write(case, tmp_path):
    case(tmp_path)
    assert temps(tmp_path) == []  # never a temp file left behind


def test_stale_temps_of_dead_processes_are_removed(tmp_path):
    stale = tmp_path / f".a.png.{dead_pid()}-abc123.cresshift-tmp"
    live = tmp_path / f".b.png.{os.getpid()}-abc123.cresshift-tmp"
    foreign = tmp_path / ".c.png.tmp"
    for p in (stale, live, foreign):
        p.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and foreign.exists()


def test_strict_json_round_trip():
    record = {"psnr_y": float("inf"), "lpips": float("nan"), "ssim_y": 0.5, "rows": [float("-inf"), 1.0]}
    text = strict_json(record)
    parsed = strict_load(text)
    assert parsed["psnr_y"] is None and parsed["psnr_y_nonfinite"] == "inf" and parsed["rows"] == [None, 1.0]
    back = restore_nonfinite(parsed)
    assert back["psnr_y"] == float("inf") and back["lpips"] != back["lpips"] and back["ssim_y"] == 0.5
    assert "psnr_y_nonfinite" not in back


# --- sample: names, inputs, concurrency ------------------------------------------------------------
def test_trajectory_never_overwrites_an_input(files, tmp_path):
    """The issue's reproducer: an input named like another input's trajectory, in the output tree."""
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "out" / "sub").mkdir(parents=True)
    save_image(photo(8, 8), tmp_path / "in" / "sub" / "a.png")
    victim = tmp_path / "out" / "sub" / "a_trajectory.png"
    save_image(photo(8, 8, 300, 100), victim)
    before = victim.read_bytes()
    r = cli("sample", tmp_path / "in", tmp_path / "out" / "sub", "-o", tmp_path / "out", "--model", files["model"],
            "--save-trajectory", "--solver", "euler", "--nfe", "2")
    assert_one_line_error(r, "would overwrite an input", "a_trajectory.png")
    assert victim.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.png")) == ["a_trajectory.png"]


def test_output_and_trajectory_names_may_not_collide(files, tmp_path):
    save_image(photo(8, 8), tmp_path / "in" / "x.png")
    save_image(photo(8, 8, 300, 100), tmp_path / "in" / "x_trajectory.png")
    r = cli("sample", tmp_path / "in", "-o", tmp_path / "out", "--model", files["model"], "--save-trajectory",
            "--solver", "euler", "--nfe", "2")
    assert_one_line_error(r, "two outputs", "x_trajectory.png")
    assert not list((tmp_path / "out").glob("*.png"))


def test_a_broken_input_stops_the_batch_before_any_output(files, tmp_path):
    inputs = tmp_path / "in"
    save_image(photo(8, 8), inputs / "a.png")
    (inputs / "z.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    r = cli("sample", inputs, "-o", tmp_path / "out", "--model", files["model"], "--solver", "euler", "--nfe", "2")
    assert_one_line_error(r, "cannot read image", "z.png")
    assert not list((tmp_path / "out").glob("*.png"))


def test_an_output_created_after_the_checks_is_not_replaced(files, tmp_path, monkeypatch):
    """No-clobber at the moment of the write: a file that appears while the model loads survives."""
    import cresshift.models.pipeline as pipeline

    real = pipeline.load_pipeline
    intruder = tmp_path / "out" / "a.png"

    def racing(*args, **kwargs):
        intruder.write_bytes(b"theirs")
        return real(*args, **kwargs)
    monkeypatch.setattr(pipeline, "load_pipeline", racing)
    assert_one_line_error(cli(*sample_args(files, tmp_path / "out")), "exists", "--overwrite")
    assert intruder.read_bytes() == b"theirs" and temps(tmp_path) == []


def test_a_second_run_into_a_locked_folder_is_refused(files, tmp_path):
    with lock_folder(tmp_path / "out"):
        assert_one_line_error(cli(*sample_args(files, tmp_path / "out")), "another cresshift run")
    assert not list((tmp_path / "out").glob("*.png"))
    assert cli(*sample_args(files, tmp_path / "out")).exit_code == 0  # the lock went with its holder


def test_stale_temps_are_cleaned_by_the_next_sample(files, tmp_path):
    stale = tmp_path / "out" / "sub" / f".a.png.{dead_pid()}-qwerty12.cresshift-tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half an image")
    assert cli(*sample_args(files, tmp_path / "out")).exit_code == 0
    assert not stale.exists()


def test_sample_full_disk_is_one_line_and_leaves_no_temp(files, tmp_path, monkeypatch):
    import cresshift.data.io as io

    def full(tmp, target):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(io.os, "replace", full)
    monkeypatch.setattr(io.os, "link", full)
    assert_one_line_error(cli(*sample_args(files, tmp_path / "out")), "no space left", "a.png")
    assert temps(tmp_path) == [] and not list((tmp_path / "out").glob("*.png"))


@pytest.mark.slow
def test_two_concurrent_sample_runs_one_wins_nothing_mixed(files, tmp_path):
    """Two processes, two seeds, one folder: one exits 0, the other 2, and every output is the winner's."""
    cmd = [sys.executable, "-m", "cresshift", *map(str, sample_args(files, tmp_path / "out"))]
    procs = [subprocess.Popen(cmd + ["--seed", str(seed)], stderr=subprocess.PIPE, text=True, env=same_threads_env())
             for seed in (0, 100)]
    codes = [p.wait(timeout=300) for p in procs]
    errs = [p.stderr.read() for p in procs]
    assert sorted(codes) == [0, 2], (codes, errs)
    winner = (0, 100)[codes.index(0)]
    assert errs[codes.index(2)].count("\n") == 1
    assert cli(*sample_args(files, tmp_path / "ref"), "--seed", winner).exit_code == 0
    for name in ("a.png", "b.png"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()


# --- fit-schedule --write: symlinks, modes, read-only ---------------------------------------------
def test_fit_schedule_write_keeps_links_and_modes_and_refuses_read_only(files, tmp_path):
    import shutil

    real = tmp_path / "real" / "m.safetensors"
    real.parent.mkdir()
    shutil.copy(files["model"], real)
    real.chmod(0o600)
    link = tmp_path / "m.safetensors"
    link.symlink_to(real)
    assert cli("fit-schedule", link, "--write", "-q").exit_code == 0
    assert link.is_symlink() and stat.S_IMODE(real.stat().st_mode) == 0o600
    from cresshift.models.checkpoints import load_cresshift
    assert "fitted_schedule" in load_cresshift(real)[1]
    real.chmod(0o444)
    before = real.read_bytes()
    assert_one_line_error(cli("fit-schedule", link, "--write", "-q"), "read-only")
    assert real.read_bytes() == before and temps(tmp_path) == []


# --- the bad-input battery (item 7 and 8): one line, exit 2, nothing written ---------------------
def _malformed_config(root: Path) -> Path:
    from safetensors.torch import save_file

    path = root / "malformed.safetensors"
    save_file({"model.w": torch.zeros(1)}, str(path), metadata={"cresshift_config": json.dumps({"format": "cresshift"})})
    return path


def _evil_pickle(root: Path) -> Path:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(root / "pwned"),))
    path = root / "evil.pth"
    torch.save({"state_dict": Evil()}, path)
    return path


BAD_INPUTS = [  # (id, argv from the fixture paths, needles in the one line, words it must not contain)
    ("seed-overflow", lambda f, out: sample_args(f, out, "--seed", 2 ** 64 - 1), ["--seed", "2^64"], []),
    ("malformed-config", lambda f, out: ["sample", f["lr"], "-o", out, "--model", _malformed_config(f["root"])],
     ["malformed", "model"], ["KeyError"]),
    ("evil-pickle", lambda f, out: ["sample", f["lr"], "-o", out, "--model", _evil_pickle(f["root"]), "--preset",
                                    "realsr-x4-v1", "--autoencoder", _evil_pickle(f["root"])],
     ["never runs code"], ["weights_only set to False", "Re-running"]),
    ("sde-noise-above-1", lambda f, out: sample_args(f, out, "--solver", "sde", "-O", "noise=2"),
     ["noise", "between 0"], []),
    ("finetune-missing-data", lambda f, out: ["finetune", "--data", "/nonexistent", "--out", out, "--val", "none"],
     ["/nonexistent"], []),
    ("finetune-amp-on-cpu", lambda f, out: ["finetune", "--amp", "fp16", "--out", out], ["--amp fp16", "GPU"], []),
    ("finetune-evil-resume", lambda f, out: ["finetune", "--data", f["hr32"], "--val", "none", "--crop", "32",
                                             "--out", out, "--resume", _evil_pickle(f["root"])],
     ["never runs code"], ["weights_only set to False"]),
]
if not torch.cuda.is_available():
    BAD_INPUTS.append(("finetune-cuda-without-gpu", lambda f, out: ["finetune", "--device", "cuda", "--out", out],
                       ["no CUDA GPU"], []))


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_line_and_writes_nothing(case, files, tmp_path):
    _, argv, needles, forbidden = case
    out = tmp_path / "out"
    r = cli(*argv(files, out))
    assert_one_line_error(r, *needles)
    assert not any(word in r.stderr for word in forbidden), r.stderr
    assert not (files["root"] / "pwned").exists()
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def test_cpu_out_of_memory_is_one_line(files, tmp_path, monkeypatch):
    import cresshift.models.pipeline as pipeline

    def oom(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 999999999999 bytes.")
    monkeypatch.setattr(pipeline.SRPipeline, "run", oom)
    assert_one_line_error(cli(*sample_args(files, tmp_path / "out")), "out of memory")


def test_finetune_errors_exit_2_and_debug_shows_the_traceback(tmp_path):
    assert_one_line_error(cli("finetune", "--data", "/nonexistent", "--out", tmp_path / "o", "--val", "none"),
                          "/nonexistent")
    r = cli("--debug", "finetune", "--data", "/nonexistent", "--out", tmp_path / "o", "--val", "none")
    assert isinstance(r.exception, ValueError)
    r = cli("finetune", "--debug", "--data", "/nonexistent", "--out", tmp_path / "o", "--val", "none")
    assert isinstance(r.exception, ValueError)


@pytest.mark.parametrize("command, patch, hint", [
    ("sample", "cresshift.models.pipeline.load_pipeline", "--overwrite"),
    ("finetune", "cresshift.training.trainer.Trainer", "--resume auto"),
])
def test_ctrl_c_message_names_the_command(command, patch, hint, files, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(patch, interrupted)
    argv = sample_args(files, tmp_path / "o") if command == "sample" else \
        ["finetune", "--data", files["lr"], "--out", tmp_path / "o", "--val", "none", "--crop", "8"]
    r = cli(*argv)
    assert r.exit_code == 130 and hint in r.stderr and "bench" not in r.stderr, r.stderr


# --- training: non-finite weights and losses, a full disk, double Ctrl-C ---------------------------
def test_nan_initial_weights_are_refused(files, tmp_path):
    from cresshift.models.checkpoints import load_cresshift, save_cresshift

    groups, config = load_cresshift(files["model"])
    name = next(iter(groups["model"]))
    groups["model"][name] = groups["model"][name].clone().fill_(float("nan"))
    save_cresshift(tmp_path / "nan.safetensors", groups, config)
    r = cli("finetune", "--init", tmp_path / "nan.safetensors", "--data", files["lr"], "--crop", "8", "--val", "none",
            "--out", tmp_path / "o")
    assert_one_line_error(r, "NaN", name)
    assert not list((tmp_path / "o").glob("ckpt-*.pt"))


def test_a_nan_loss_stops_training_and_keeps_the_last_finite_checkpoint(photo_folder, tmp_path):  # noqa: F811
    from cresshift.training import Trainer
    from cresshift.training.trainer import NonFiniteTrainingError

    tr = Trainer(tiny(photo_folder, tmp_path, steps=6, save_every=1, keep_last=1, predict="residual"))
    real = tr.sample_losses  # what train_step calls: (t, per-crop losses)

    def diverging(net, hr, lr):
        t, err = real(net, hr, lr)
        return t, (err * float("nan") if tr.step >= 3 else err)
    tr.sample_losses = diverging
    with pytest.raises(NonFiniteTrainingError, match="step 4") as info:
        tr.run(progress=False)
    assert "ckpt-0000003.pt" in str(info.value) and len(str(info.value).splitlines()) == 1
    assert [p.name for p in tmp_path.glob("ckpt-*.pt")] == ["ckpt-0000003.pt"]  # never pruned by a NaN one
    st = torch.load(tmp_path / "ckpt-0000003.pt", weights_only=True)
    assert all(bool(torch.isfinite(v).all()) for v in st["net"].values())
    for line in (tmp_path / "log.jsonl").read_text().splitlines():
        strict_load(line)


def test_a_diverging_learning_rate_exits_2_naming_the_step(photo_folder, tmp_path):  # noqa: F811
    r = cli("finetune", "--data", photo_folder, "--val", "none", "--crop", "32", "--batch", "2", "--micro-batch", "2",
            "--lr", "1e30", "--grad-clip", "0", "--steps", "20", "--save-every", "1", "--keep-last", "1",
            "--predict", "residual", "--out", tmp_path, "--quiet")
    assert_one_line_error(r, "training stopped", "at step")
    step = int(r.stderr.split("at step ")[1].split()[0].rstrip(";,"))
    kept = sorted(tmp_path.glob("ckpt-*.pt"))
    assert [p.name for p in kept] == ([f"ckpt-{step - 1:07d}.pt"] if step > 1 else [])
    for line in (tmp_path / "log.jsonl").read_text().splitlines():
        strict_load(line)


def test_full_disk_during_finetune_is_one_line(photo_folder, tmp_path, monkeypatch):  # noqa: F811
    """ENOSPC from the file system while torch.save writes (it used to surface as inline_container.cc:672)."""
    import builtins

    import cresshift.training.checkpoint as checkpoint

    class FullFile:  # the file system fills up after 1000 bytes, as /dev/full would at once
        def __init__(self, path, mode):
            self.fh = builtins.open(path, mode)
            self.written = 0

        def write(self, data):
            self.written += len(data)
            if self.written > 1000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(data)

        def flush(self):
            self.fh.flush()

        def close(self):
            self.fh.close()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()
    monkeypatch.setattr(checkpoint, "open", FullFile, raising=False)  # where torch_save opens the file
    r = cli("finetune", "--data", photo_folder, "--val", "none", "--crop", "32", "--batch", "2", "--micro-batch", "2",
            "--steps", "1", "--predict", "residual", "--out", tmp_path, "--quiet")
    assert_one_line_error(r, "no space left", "ckpt-0000001.pt")
    assert not list(tmp_path.glob("ckpt-*.pt")) and temps(tmp_path) == []


def _double_sigint_in_step(tr):
    real = tr.sample_losses  # what train_step calls

    def sample_losses(net, hr, lr):
        if tr.step == 3 and not getattr(tr, "_fired", False):
            tr._fired = True
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real(net, hr, lr)
    tr.sample_losses = sample_losses


def _double_sigint_in_save(tr):
    import cresshift.training.checkpoint as checkpoint

    real = checkpoint.torch_save

    def save(obj, path):
        if obj["step"] == 3 and not getattr(tr, "_fired", False):
            tr._fired = True
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        real(obj, path)
    tr._restore = (checkpoint, real)
    checkpoint.torch_save = save


@pytest.mark.parametrize("inject", [_double_sigint_in_step, _double_sigint_in_save],
                         ids=["during-a-step", "during-a-save"])
def test_a_second_ctrl_c_waits_for_the_step_or_save(inject, photo_folder, tmp_path):  # noqa: F811
    """Two Ctrl-C inside a step (or a save): the step completes, its checkpoint resumes to the uninterrupted run."""
    from cresshift.training import Trainer

    settings = dict(steps=5, save_every=3, predict="residual", warmup=1, cosine=True)
    Trainer(tiny(photo_folder, tmp_path / "full", **settings)).run(progress=False)
    tr = Trainer(tiny(photo_folder, tmp_path / "cut", **settings))
    inject(tr)
    try:
        result = tr.run(progress=False)
    finally:
        if hasattr(tr, "_restore"):
            tr._restore[0].torch_save = tr._restore[1]
    assert result["interrupted"]
    saved = sorted((tmp_path / "cut").glob("ckpt-*.pt"))
    assert saved[-1].name == f"ckpt-{result['step']:07d}.pt"
    resumed = Trainer(tiny(photo_folder, tmp_path / "cut", **settings))
    resumed.resume(saved[-1])
    resumed.run(progress=False)
    assert_same_checkpoint(tmp_path / "full" / "ckpt-0000005.pt", tmp_path / "cut" / "ckpt-0000005.pt")


# --- kills at random points, then resume == uninterrupted ----------------------------------------
FINETUNE = ["--val", "none", "--crop", "32", "--batch", "2", "--micro-batch", "2", "--steps", "4", "--save-every", "1",
            "--predict", "residual", "--threads", "1", "--quiet", "--seed", "5"]


def _kill_when(proc: subprocess.Popen, ready, delay: float, timeout: float = 240) -> None:
    """SIGKILL ``proc`` ``delay`` seconds after ``ready()`` first holds (or leave it if it ended)."""
    t0 = time.time()
    while not ready() and proc.poll() is None and time.time() - t0 < timeout:
        time.sleep(0.02)
    time.sleep(delay)
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _finetune_killed_then_resumed(photo_folder: Path, tmp_path: Path, after_ckpt: int, delay: float) -> None:
    ref = cli("finetune", "--data", photo_folder, "--out", tmp_path / "ref", *FINETUNE)
    assert ref.exit_code == 0, ref.stderr
    assert "last.safetensors" in ref.stderr and "best.safetensors" not in ref.stderr  # --val none: no best model
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "cresshift", "finetune", "--data", str(photo_folder), "--out",
                             str(out), *FINETUNE], stderr=subprocess.DEVNULL,
                            env=same_threads_env())
    _kill_when(proc, lambda: (out / f"ckpt-{after_ckpt:07d}.pt").exists(), delay)
    resumed = cli("finetune", "--data", photo_folder, "--out", out, *FINETUNE, "--resume", "auto")
    assert resumed.exit_code == 0, resumed.stderr
    assert_same_checkpoint(tmp_path / "ref" / "ckpt-0000004.pt", out / "ckpt-0000004.pt")
    assert temps(out) == []  # a temp file of the killed writer is removed by the resume
    for line in (out / "log.jsonl").read_text().splitlines():
        strict_load(line) if line.strip() else None


def test_finetune_sigkill_then_resume_equals_an_uninterrupted_run(photo_folder, tmp_path):  # noqa: F811
    _finetune_killed_then_resumed(photo_folder, tmp_path, after_ckpt=1, delay=random.Random(16).uniform(0, 0.3))


KILL_POINTS = [(1, 0.0), (2, 0.05), (2, 0.3), (3, 0.15)]  # (after which checkpoint, then seconds)


@pytest.mark.slow
@pytest.mark.parametrize("after_ckpt, delay", KILL_POINTS)
def test_finetune_sigkill_at_many_points(photo_folder, tmp_path, after_ckpt, delay):  # noqa: F811
    _finetune_killed_then_resumed(photo_folder, tmp_path, after_ckpt, delay + random.Random(after_ckpt).uniform(0, 0.1))


@pytest.fixture(scope="module")
def bench_data(files):
    import skimage.data

    hr = files["root"] / "hr"
    img = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float() / 127.5 - 1
    save_image(img[:, 100:132, 180:212], hr / "a.png")
    save_image(img[:, 300:332, 100:132], hr / "b.png")
    return str(hr)


BENCH = ["--solvers", "euler,heun", "--rhos", "1,-4", "--nfe", "3", "--no-baseline", "--device", "cpu"]


def _table(folder: Path) -> list[dict]:
    table = strict_load((folder / "results.json").read_text())["table"]
    return [{k: e[k] for k in ("label", "rho", "nfe", "psnr_y", "psnr_rgb", "ssim_y", "lpips")} for e in table]


@pytest.mark.slow
@pytest.mark.parametrize("after_lines", [1, 3, 6])
def test_bench_sigkill_then_rerun_gives_the_same_table(files, bench_data, tmp_path, after_lines, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # LPIPS offline, as in CI
    args = ["bench", "--model", files["model"], "--hr", bench_data, *BENCH]
    assert cli(*args, "--out", tmp_path / "ref").exit_code == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "cresshift", *map(str, args), "--out", str(out)],
                            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=same_threads_env())
    jsonl = out / "results.jsonl"
    _kill_when(proc, lambda: jsonl.exists() and jsonl.read_text().count("\n") >= after_lines,
               random.Random(after_lines).uniform(0, 0.2))
    assert cli(*args, "--out", out).exit_code == 0
    assert _table(out) == _table(tmp_path / "ref")


# --- bench: strict results, a failed first run ------------------------------------------------------
class Perfect:
    """A pipeline that returns a flat HR of value ``grey`` exactly (PSNR = inf), and can fail on request."""

    def __init__(self, pipe, grey, fail=False):
        self.pipe, self.grey, self.fail = pipe, grey, fail

    def run(self, lr, **kwargs):
        if self.fail:
            raise RuntimeError("the network failed")
        sr = torch.full((lr.shape[0], 3, lr.shape[-2] * self.pipe.sf, lr.shape[-1] * self.pipe.sf), self.grey)
        return SimpleNamespace(sr=sr, nfe=1, seconds={})

    def __getattr__(self, name):
        return getattr(self.pipe, name)


def test_bench_results_are_strict_json_and_a_failed_run_does_not_block_the_next(files, tmp_path, monkeypatch):
    from cresshift.bench import BenchSettings, run_bench, sweep_rows
    from cresshift.data.io import load_image
    from cresshift.models.pipeline import load_pipeline

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # LPIPS offline
    flat = tmp_path / "flat"
    save_image(torch.full((3, 32, 32), 0.2), flat / "grey.png")
    grey = float(load_image(flat / "grey.png")[0, 0, 0])
    pipe = load_pipeline(files["model"])
    rows = sweep_rows(["euler"], [1], [2], baseline=False)
    out = tmp_path / "b"
    with pytest.raises(RuntimeError):  # a failed first run (wrong settings, a crash) leaves run.json
        run_bench(BenchSettings(model=files["model"], hr=str(flat), out=str(out), seed=7), rows,
                  pipelines={"model": Perfect(pipe, grey, fail=True)})
    assert (out / "run.json").is_file()
    result = run_bench(BenchSettings(model=files["model"], hr=str(flat), out=str(out)), rows,
                       pipelines={"model": Perfect(pipe, grey)})  # the corrected rerun (another seed) is not refused
    assert result.records[0]["psnr_y"] == float("inf")
    saved = strict_load((out / "results.json").read_text())
    assert saved["table"][0]["psnr_y"] is None and saved["table"][0]["psnr_y_nonfinite"] == "inf"
    for line in (out / "results.jsonl").read_text().splitlines():
        strict_load(line)
    again = run_bench(BenchSettings(model=files["model"], hr=str(flat), out=str(out)), rows,
                      pipelines={"model": Perfect(pipe, grey, fail=True)})  # resumed: nothing recomputed
    assert again.computed == 0 and again.records[0]["psnr_y"] == float("inf")


def test_bench_reads_every_input_before_the_first_result(files, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    hr = tmp_path / "hr"
    save_image(photo(32, 32), hr / "a.png")
    (hr / "z.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    r = cli("bench", "--model", files["model"], "--hr", hr, "--solvers", "euler", "--rhos", "1", "--nfe", "2",
            "--no-baseline", "--out", tmp_path / "b")
    assert_one_line_error(r, "cannot read image", "z.png")
    jsonl = tmp_path / "b" / "results.jsonl"
    assert not jsonl.exists() or not jsonl.read_text().strip()

"""The ``cresshift`` command line: sample, fit-schedule, lazy finetune, help, errors (tiny random models)."""
import errno
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cresshift import cli
from cresshift.cli import main
from cresshift.data.io import load_image, save_image

REPO = Path(__file__).resolve().parents[1]


# --- fixtures ----------------------------------------------------------------------------------
pytestmark = pytest.mark.usefixtures("one_thread")


def make_tiny_model(path: Path) -> Path:
    """A 0.3 M-parameter pixel-space x4 model (two levels, no attention) with random weights, T = 15."""
    from cresshift.models.pipeline import build_pipeline
    from cresshift.models.unet import small_pixel_config
    from cresshift.schedules import ResShiftSchedule

    torch.manual_seed(0)
    params = small_pixel_config(model_channels=32, swin_embed_dim=32, num_head_channels=16, num_res_blocks=[1, 1],
                                channel_mult=[1, 1], attention_resolutions=[])
    pipe = build_pipeline({"model": {"class": "UNetModelSwin", "params": params}, "autoencoder": None,
                           "diffusion": {**ResShiftSchedule.from_config("realsr-x4-v1").to_config(), "sf": 4,
                                         "predict_type": "xstart", "normalize_input": True, "latent_flag": False}})
    with torch.no_grad():  # zero-initialised output layers would make every sample the same
        for p in pipe.net.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    pipe.save(path)
    return path


def photo(h: int, w: int, top: int = 100, left: int = 180) -> torch.Tensor:
    import skimage.data

    img = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float() / 127.5 - 1
    return img[:, top:top + h, left:left + w].contiguous()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = make_tiny_model(root / "tiny.safetensors")
    lr = root / "lr"
    save_image(photo(8, 8), lr / "a.png")
    save_image(photo(8, 12, 300, 100), lr / "sub" / "b.png")
    return {"root": root, "model": str(model), "lr": lr}


def run(*args, env=None, catch=True):
    """Invoke the CLI in-process; stdout and stderr separately."""
    runner = CliRunner()
    return runner.invoke(main, [str(a) for a in args], env=env, catch_exceptions=catch)


def assert_one_line_error(result, *needles):
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and "Traceback" not in result.stderr
    for n in needles:
        assert n in lines[0], lines[0]


# --- help, registration, names -----------------------------------------------------------------
def test_help_is_fast_and_imports_no_torch():
    code = ("import sys\nfrom cresshift.cli import main\n"
            "for args in (['--help'], ['sample', '--help'], ['bench', '--help'], ['fit-schedule', '--help'], ['demo', '--help']):\n"
            "    try:\n        main(args)\n    except SystemExit as e:\n        assert e.code == 0, e.code\n"
            "heavy = [m for m in ('torch', 'numpy', 'PIL', 'rich', 'matplotlib', 'cresshift.models', 'cresshift.bench')"
            " if m in sys.modules]\nheavy += [m for m in ('starlette', 'uvicorn') if m in sys.modules]\nprint('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout[-300:]
    assert "sample" in out.stdout and "fit-schedule" in out.stdout and "bench" in out.stdout


def test_python_m_cresshift_and_version():
    out = subprocess.run([sys.executable, "-m", "cresshift", "--version"], capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert out.returncode == 0 and "0.1.0" in out.stdout
    # torchrun's form, "-m cresshift.cli finetune ...", runs the same group
    out = subprocess.run([sys.executable, "-m", "cresshift.cli", "finetune", "--help"], capture_output=True,
                         text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0 and "--time" in out.stdout and "torchrun" in out.stdout


def test_static_names_match_the_registries():
    from cresshift.models.pipeline import SCHEDULE_CHOICES
    from cresshift.models.presets import OFFICIAL_PRESETS
    from cresshift.schedules import PRESETS
    from cresshift.solvers import SOLVERS

    assert cli.SOLVER_NAMES == tuple(SOLVERS)
    assert set(cli.PRESET_NAMES) == set(PRESETS) == set(OFFICIAL_PRESETS)
    assert cli.SCHEDULE_NAMES == tuple(SCHEDULE_CHOICES)


def test_finetune_is_registered_lazily(monkeypatch):
    import click

    ctx = click.Context(main)
    if (REPO / "cresshift" / "training" / "cli.py").is_file():
        assert "finetune" in main.list_commands(ctx)
        cmd = main.get_command(ctx, "finetune")
        assert isinstance(cmd, click.Command) and cmd.name == "finetune"
        assert "Usage" in run("finetune", "--help").stdout
    # A missing module: not listed, and invoking it is one clear line, not a crash.
    monkeypatch.setitem(cli.LAZY_COMMANDS, "finetune", ("cresshift.training.no_such_cli", "finetune", "x"))
    assert "finetune" not in main.list_commands(ctx)
    assert_one_line_error(run("finetune", "--steps", "1"), "not available")


# --- sample ------------------------------------------------------------------------------------
def test_sample_writes_sf_times_larger_pngs_and_a_summary(files, tmp_path):
    out = tmp_path / "sr"
    r = run("sample", files["lr"], "-o", out, "--model", files["model"], "--solver", "heun", "--rho", "-8",
            "--nfe", "5", "--seed", "3")
    assert r.exit_code == 0, r.stderr
    a, b = out / "a.png", out / "sub" / "b.png"  # folder inputs keep their sub-folders
    assert load_image(a).shape == (3, 32, 32) and load_image(b).shape == (3, 32, 48)
    assert r.stdout.split() == [str(a), str(b)]  # data (written paths) on stdout
    assert "heun" in r.stderr and "3 points" in r.stderr and "NFE 5 used of 5" in r.stderr and "s/image" in r.stderr


def test_sample_seeds_are_per_image_and_reproducible(files, tmp_path):
    outs = []
    for seed, name in ((0, "s0"), (0, "s0b"), (1, "s1")):
        r = run("sample", files["lr"] / "a.png", "-o", tmp_path / name, "--model", files["model"], "--nfe", "3",
                "--seed", seed, "-q")
        assert r.exit_code == 0, r.stderr
        assert r.stderr == ""  # --quiet: no log lines
        outs.append(load_image(tmp_path / name / "a.png"))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])


def test_sample_glob_json_and_env_defaults(files, tmp_path):
    r = run("sample", str(files["lr"] / "*.png"), "-o", tmp_path, "--model", files["model"], "--json",
            env={"CRESSHIFT_SAMPLE_NFE": "3", "CRESSHIFT_SAMPLE_SOLVER": "euler"})
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["solver"] == "euler" and info["nfe_budget"] == 3 and info["nfe"] == [3]
    assert [Path(i["output"]).name for i in info["images"]] == ["a.png"]
    assert len(info["grid"]) == 3 and info["grid"][0] == 1.0


def test_sample_batches_same_size_images(files, tmp_path):
    src = tmp_path / "in"
    save_image(photo(8, 8), src / "x.png")
    save_image(photo(8, 8, 300, 100), src / "y.png")
    # float32 fast path: bfloat16 kernels' results depend on the batch size (about 1e-2 per network call here)
    r = run("sample", src, "-o", tmp_path / "o", "--model", files["model"], "--nfe", "3", "--batch-size", "2",
            "--seed", "5", "--json", "--cpu-bf16", "none")
    assert r.exit_code == 0, r.stderr
    images = json.loads(r.stdout)["images"]
    assert [Path(i["output"]).name for i in images] == ["x.png", "y.png"]
    assert [i["seed"] for i in images] == [5, 5]  # one batch: the seed of its first image
    single = run("sample", src / "x.png", "-o", tmp_path / "s", "--model", files["model"], "--nfe", "3",
                 "--seed", "5", "-q", "--cpu-bf16", "none")
    assert single.exit_code == 0
    # The first image of the batch gets the same prior noise as alone (the batch's noise is drawn in order).
    assert torch.equal(load_image(tmp_path / "o" / "x.png"), load_image(tmp_path / "s" / "x.png"))


def test_sample_groups_mixed_sizes_into_batches_and_eager_matches(files, tmp_path):
    src = tmp_path / "in"
    for name, (h, w) in {"a": (8, 8), "b": (8, 12), "c": (8, 8)}.items():
        save_image(photo(h, w, 100 + h * w, 50), src / f"{name}.png")
    r = run("sample", src, "-o", tmp_path / "o", "--model", files["model"], "--nfe", "3", "--batch-size", "2",
            "--seed", "5", "--json")
    assert r.exit_code == 0, r.stderr
    seeds = {Path(i["output"]).stem: i["seed"] for i in json.loads(r.stdout)["images"]}
    assert seeds == {"a": 5, "c": 5, "b": 6}  # a and c (one size) share a batch; b, input 1, goes alone
    eager = run("sample", src, "-o", tmp_path / "e", "--model", files["model"], "--nfe", "3", "--batch-size", "2",
                "--seed", "5", "--eager", "-q")
    assert eager.exit_code == 0, eager.stderr
    for name in "abc":
        diff = load_image(tmp_path / "o" / f"{name}.png") - load_image(tmp_path / "e" / f"{name}.png")
        # 8-bit outputs of the two paths close: the fast path runs the network in bfloat16, which keeps the
        # bundled (trained) model >= 45 dB from eager (test_fastpath); this tiny random network gives ~40 dB
        assert 10 * math.log10(1 / max(float(diff.pow(2).mean()), 1e-12)) >= 35.0


def test_sample_cpu_bf16_none_is_the_float32_fast_path(files, tmp_path):
    args = ["sample", files["lr"] / "a.png", "--model", files["model"], "--nfe", "3", "--seed", "5", "-q"]
    assert run(*args, "-o", tmp_path / "n", "--cpu-bf16", "none").exit_code == 0
    assert run(*args, "-o", tmp_path / "e", "--eager").exit_code == 0
    diff = load_image(tmp_path / "n" / "a.png") - load_image(tmp_path / "e" / "a.png")
    assert float(diff.abs().max()) <= 2.5 / 127.5  # float32 channels-last: at most one 8-bit level apart
    assert_one_line_error(run(*args, "-o", tmp_path / "x", "--cpu-bf16", "network,unet"), "--cpu-bf16", "network")
    assert not (tmp_path / "x").exists()


def test_sample_refuses_to_overwrite(files, tmp_path):
    args = ["sample", files["lr"] / "a.png", "-o", tmp_path, "--model", files["model"], "--nfe", "3", "-q"]
    assert run(*args).exit_code == 0
    before = (tmp_path / "a.png").stat().st_mtime_ns
    assert_one_line_error(run(*args), "exists", "--overwrite")
    assert (tmp_path / "a.png").stat().st_mtime_ns == before
    assert run(*args, "--overwrite").exit_code == 0
    # Writing next to the input under the same name would destroy it: refused even with --overwrite.
    src = tmp_path / "in" / "c.png"
    save_image(photo(8, 8), src)
    data = src.read_bytes()
    assert_one_line_error(run("sample", src, "-o", src.parent, "--model", files["model"], "--overwrite"),
                          "overwrite an input")
    assert src.read_bytes() == data


def test_sample_trajectory_strip(files, tmp_path):
    r = run("sample", files["lr"] / "a.png", "-o", tmp_path, "--model", files["model"], "--solver", "heun",
            "--nfe", "5", "--save-trajectory", "-q")
    assert r.exit_code == 0, r.stderr
    strip = load_image(tmp_path / "a_trajectory.png")
    # Heun at NFE 5: 3 grid points, 2 steps -> 2 x0_hat frames, then the output.
    assert strip.shape == (3, 32, 3 * 32)
    assert torch.equal(strip[:, :, -32:], load_image(tmp_path / "a.png"))


def test_sample_example(files, tmp_path, monkeypatch):
    import cresshift.demo.samples as samples

    photos = tmp_path / "photos"
    save_image(photo(32, 32), photos / "astronaut.png")
    monkeypatch.setattr(samples, "photos_dir", lambda: photos)
    r = run("sample", "--example", "-o", tmp_path / "ex", "--model", files["model"], "--nfe", "3")
    assert r.exit_code == 0, r.stderr
    lr, sr, hr = (load_image(tmp_path / "ex" / f"example_{k}.png") for k in ("lr", "sr", "hr"))
    assert lr.shape == (3, 8, 8) and sr.shape == hr.shape == (3, 32, 32)
    # the side-by-side: LR nearest | bicubic | result | HR, the result's pixels unchanged in the third panel
    figure = load_image(tmp_path / "ex" / "example_side_by_side.png")
    pad, line = 12, 26
    panel = lambda j: figure[:, pad + line: pad + line + 32, pad + j * (32 + pad): pad + j * (32 + pad) + 32]
    assert torch.equal(panel(2), sr) and torch.equal(panel(3), hr)
    assert torch.equal(panel(0), lr.repeat_interleave(4, 1).repeat_interleave(4, 2))
    # no clobbering: a second run refuses, --overwrite replaces
    assert_one_line_error(run("sample", "--example", "-o", tmp_path / "ex", "--model", files["model"], "--nfe", "3"),
                          "exists", "--overwrite")
    r = run("sample", "--example", "-o", tmp_path / "ex", "--model", files["model"], "--nfe", "3", "--overwrite")
    assert r.exit_code == 0, r.stderr
    # a bad solver option fails in one line and leaves no example files behind
    assert_one_line_error(run("sample", "--example", "-o", tmp_path / "ex3", "--model", files["model"], "--nfe", "3",
                              "--solver", "heun", "-O", "variable=bogus"), "variable")
    assert not (tmp_path / "ex3").exists() or not any((tmp_path / "ex3").iterdir())
    monkeypatch.setattr(samples, "photos_dir", lambda: tmp_path / "missing")
    assert_one_line_error(run("sample", "--example", "-o", tmp_path / "ex2", "--model", files["model"]),
                          "example photograph is missing")


def test_sample_example_settings(files, tmp_path, monkeypatch):
    """--example runs EXAMPLE_SETTINGS unless the command line (or the environment) says otherwise."""
    import cresshift.demo.samples as samples

    save_image(photo(32, 32), tmp_path / "photos" / "astronaut.png")
    monkeypatch.setattr(samples, "photos_dir", lambda: tmp_path / "photos")
    r = run("sample", "--example", "-o", tmp_path / "a", "--model", files["model"], "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert (summary["solver"], summary["nfe_budget"], summary["rho"]) == (
        samples.EXAMPLE_SETTINGS["solver"], samples.EXAMPLE_SETTINGS["nfe"], samples.EXAMPLE_SETTINGS["rho"])
    settings = samples.EXAMPLE_SETTINGS
    assert f"default to {settings['solver']}, {settings['nfe']}, {settings['rho']:g}" in " ".join(
        run("sample", "--help").stdout.split())
    r = run("sample", "--example", "-o", tmp_path / "b", "--model", files["model"], "--json", "--solver", "ddim",
            "--rho", "2", env={"CRESSHIFT_SAMPLE_NFE": "3"})
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert (summary["solver"], summary["nfe_budget"], summary["rho"]) == ("ddim", 3, 2.0)


def test_sample_context_pad_option(files, tmp_path):
    """--context-pad overrides the model's own (0 for a model whose config does not set it)."""
    outs = {}
    for c in (None, "0", "32"):
        extra = [] if c is None else ["--context-pad", c]
        r = run("sample", files["lr"] / "a.png", "-o", tmp_path / str(c), "--model", files["model"], "--solver", "ddim",
                "--nfe", "3", *extra)
        assert r.exit_code == 0, r.stderr
        outs[c] = load_image(tmp_path / str(c) / "a.png")
    assert torch.equal(outs[None], outs["0"])
    assert outs["32"].shape == outs["0"].shape and float((outs["0"] - outs["32"]).abs().max()) > 0.01


def test_sample_default_model_missing_is_one_line(files, tmp_path, monkeypatch):
    import cresshift.models.pipeline as pipeline

    monkeypatch.setattr(pipeline, "bundled_path", lambda name: tmp_path / "nowhere.safetensors")
    assert_one_line_error(run("sample", files["lr"] / "a.png", "-o", tmp_path / "o"), "bundled model", "missing")


@pytest.mark.parametrize("args, needles", [
    (["missing.png"], ["no images found", "missing.png"]),
    (["{lr}/a.png", "--rho", "0"], ["--rho", "non-zero"]),
    (["{lr}/a.png", "--solver", "heun", "--nfe", "2"], ["--nfe", "at least 3"]),
    (["{lr}/a.png", "--solver", "markov", "--nfe", "16"], ["between 1 and 15"]),
    (["{lr}/a.png", "--scale", "2"], ["x4", "--scale 2"]),
    (["{lr}/a.png", "-O", "bogus=1"], ["does not take bogus"]),
    (["{lr}/a.png", "-O", "novalue"], ["KEY=VALUE"]),
    (["{lr}/a.png", "--solver", "nope"], ["--solver"]),
    ([], ["INPUT"]),
    (["--example", "{lr}/a.png"], ["no INPUT"]),
    (["{lr}/a.png", "--context-pad", "-1"], ["--context-pad"]),
])
def test_sample_usage_errors(files, tmp_path, args, needles):
    args = [a.format(lr=files["lr"]) for a in args]
    assert_one_line_error(run("sample", *args, "-o", tmp_path, "--model", files["model"]), *needles)


def test_sample_unreadable_image_and_bad_checkpoints(files, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    assert_one_line_error(run("sample", bad, "-o", tmp_path / "o", "--model", files["model"]), "cannot read image")
    pth = tmp_path / "net.pth"
    torch.save({"input_blocks.0.0.weight": torch.zeros(4, 6, 3, 3)}, pth)
    lr = files["lr"] / "a.png"
    assert_one_line_error(run("sample", lr, "-o", tmp_path / "o", "--model", pth), "preset")
    assert_one_line_error(run("sample", lr, "-o", tmp_path / "o", "--model", tmp_path / "none.safetensors"),
                          "no such model")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    assert_one_line_error(run("sample", lr, "-o", tmp_path / "o", "--model", corrupt), "safetensors")


def test_sample_checkpoint_that_does_not_fit_the_preset(files, tmp_path):
    pth = tmp_path / "net.pth"
    torch.save({"input_blocks.0.0.weight": torch.zeros(4, 6, 3, 3)}, pth)
    r = run("sample", files["lr"] / "a.png", "-o", tmp_path / "o", "--model", pth, "--preset", "realsr-x4-v1",
            "--autoencoder", pth)
    assert_one_line_error(r, "does not fit")


def test_no_disk_space_is_one_line(files, tmp_path, monkeypatch):
    import shutil

    import cresshift.data.io as io

    def full(img, path, **options):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(io, "save_image", full)
    assert_one_line_error(run("sample", files["lr"] / "a.png", "-o", tmp_path / "o", "--model", files["model"],
                              "--nfe", "3"), "no space left")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 10))
    assert_one_line_error(run("sample", files["lr"] / "a.png", "-o", tmp_path / "o", "--model", files["model"]),
                          "not enough disk space")


def test_debug_shows_the_traceback(files, tmp_path):
    r = run("sample", "missing.png", "-o", tmp_path, "--debug")
    assert r.exit_code != 2 and isinstance(r.exception, ValueError)
    r = run("--debug", "sample", "missing.png", "-o", tmp_path)
    assert isinstance(r.exception, ValueError)


# --- fit-schedule ------------------------------------------------------------------------------
def test_fit_schedule_preset_matches_the_design_numbers():
    r = run("fit-schedule", "--preset", "realsr-x4-v1", "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["a"] == pytest.approx(1.098, abs=2e-3) and rep["lam"] == pytest.approx(1.162, abs=2e-3)
    fit, exact = rep["schedules"]["exp-alpha fit"], rep["schedules"]["exact"]
    assert 1e-3 < fit["max_abs_error"] < 6e-3
    assert exact["max_abs_error"] < 1e-12 and exact["end_rel_miss"] < 1e-12
    assert rep["schedules"]["paper (a=1.1113)"]["eta_1"] == pytest.approx(0.946, abs=1e-3)
    assert len(rep["eta_k"]) == 15 and rep["fitted_schedule"]["type"] == "exp"
    text = run("fit-schedule", "--preset", "realsr-x4-v1").stdout
    assert "1.098" in text and "1.16" in text and "exact" in text


def test_fit_schedule_from_flags_plot_and_warning(tmp_path):
    r = run("fit-schedule", "--steps", "4", "--min-noise-level", "0.2", "--plot", tmp_path / "fit.png", "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["T"] == 4 and rep["discrete"]["min_noise_level"] == 0.2
    assert (tmp_path / "fit.png").stat().st_size > 1000
    miss = rep["schedules"]["exp-alpha fit"]["end_rel_miss"]
    assert ("warning:" in r.stderr) == (miss > 0.01)


def test_fit_schedule_write_stores_the_fit_atomically(files, tmp_path):
    from cresshift.models.checkpoints import load_cresshift
    from cresshift.models.pipeline import load_pipeline
    from cresshift.schedules import ExpAlphaSchedule, ResShiftSchedule

    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(Path(files["model"]).read_bytes())
    before, _ = load_cresshift(ckpt)
    r = run("fit-schedule", ckpt, "--write", "-q")
    assert r.exit_code == 0, r.stderr
    after, config = load_cresshift(ckpt)
    expected = ExpAlphaSchedule.fit(ResShiftSchedule.from_config("realsr-x4-v1"), warn=False).to_config()
    assert config["fitted_schedule"] == pytest.approx(expected) or config["fitted_schedule"] == expected
    assert before.keys() == after.keys()
    assert all(torch.equal(before["model"][k], after["model"][k]) for k in before["model"])
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind
    sched = load_pipeline(str(ckpt)).schedule_for("exp")  # what `sample --schedule exp` uses
    assert sched.a == pytest.approx(expected["a"]) and sched.lam == pytest.approx(expected["lam"])


@pytest.mark.parametrize("args, needles", [
    ([], ["CHECKPOINT", "--preset"]),
    (["{pth}"], [".pth", "--preset"]),
    (["--preset", "realsr-x4-v1", "--write"], ["--write", "CHECKPOINT"]),
    (["{model}", "--preset", "realsr-x4-v1"], ["not both"]),
    (["{model}", "--kappa", "1"], ["--kappa"]),
    (["--preset", "nope"], ["--preset"]),
    (["missing.safetensors"], ["missing.safetensors"]),
    (["--steps", "4", "--etas-end", "1.5"], ["--etas-end"]),
])
def test_fit_schedule_errors(files, tmp_path, args, needles):
    pth = tmp_path / "official.pth"
    torch.save({"w": torch.zeros(1)}, pth)
    args = [a.format(pth=pth, model=files["model"]) for a in args]
    assert_one_line_error(run("fit-schedule", *args), *needles)

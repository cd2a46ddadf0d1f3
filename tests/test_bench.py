"""The benchmark engine and ``cresshift bench``: Table 1 layout, outputs, resume, seeds, sharding (tiny models)."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cresshift import bench
from cresshift.bench import BenchSettings, run_bench, sweep_rows, table1_rows
from cresshift.cli import main
from cresshift.data.io import save_image

REPO = Path(__file__).resolve().parents[1]
METRIC_COLUMNS = ("label", "solver", "rho", "nfe", "lpips", "ssim_y", "psnr_y", "psnr_rgb", "images")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _no_lpips_weights(tmp_path, monkeypatch):
    """LPIPS backbone weights are never on disk in the tests (the offline path), unless a test asks."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("CRESSHIFT_LPIPS_BACKBONE", raising=False)


def make_tiny_model(path: Path, seed: int = 0) -> Path:
    """A 0.3 M-parameter pixel-space x4 model (two levels, no attention) with random weights, T = 15."""
    from cresshift.models.pipeline import build_pipeline
    from cresshift.models.unet import small_pixel_config
    from cresshift.schedules import ResShiftSchedule

    torch.manual_seed(seed)
    params = small_pixel_config(model_channels=32, swin_embed_dim=32, num_head_channels=16, num_res_blocks=[1, 1],
                                channel_mult=[1, 1], attention_resolutions=[])
    pipe = build_pipeline({"model": {"class": "UNetModelSwin", "params": params}, "autoencoder": None,
                           "diffusion": {**ResShiftSchedule.from_config("realsr-x4-v1").to_config(), "sf": 4,
                                         "predict_type": "xstart", "normalize_input": True, "latent_flag": False}})
    with torch.no_grad():
        for p in pipe.net.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    pipe.save(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    import skimage.data

    root = tmp_path_factory.mktemp("bench")
    img = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float() / 127.5 - 1
    save_image(img[:, 100:132, 180:212], root / "hr" / "a.png")
    save_image(img[:, 300:332, 100:132], root / "hr" / "b.png")
    return {"root": root, "hr": str(root / "hr"), "model": str(make_tiny_model(root / "tiny.safetensors"))}


def run(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def read_csv(path):
    with open(path, newline="") as fh:
        return [{k: r[k] for k in METRIC_COLUMNS} for r in csv.DictReader(fh)]


def assert_error(result, *needles):
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.stderr, result.stderr
    for n in needles:
        assert n in lines[0], lines[0]


class Counting:
    """A pipeline that counts (and can interrupt) its runs."""

    def __init__(self, pipe, fail_at=None):
        self.pipe, self.calls, self.fail_at = pipe, 0, fail_at

    def run(self, *args, **kwargs):
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt  # a kill between two results
        self.calls += 1
        return self.pipe.run(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.pipe, name)


# --- rows --------------------------------------------------------------------------------------
def test_table1_layout():
    rows = table1_rows(T=15)
    assert [(r.label, r.solver, r.rho, r.nfe) for r in rows] == (
        [("Baseline", "markov", None, 15)]
        + [("euler", "euler", rho, 15) for rho in (1, 4, 8, -4, -8)]
        + [("heun", "heun", rho, 15) for rho in (1, 4, 8, -4, -8)])
    assert rows[0].baseline and rows[0].schedule == "discrete"
    assert len({r.key for r in rows}) == len(rows)


def test_sweep_rows_options_and_errors():
    rows = sweep_rows(["markov", "sde", "heun"], [1, -8], [5, 10], baseline=False, options={"noise": 0.5})
    assert [(r.solver, r.nfe, r.rho) for r in rows] == [
        ("markov", 5, None), ("markov", 10, None), ("sde", 5, 1), ("sde", 5, -8), ("sde", 10, 1), ("sde", 10, -8),
        ("heun", 5, 1), ("heun", 5, -8), ("heun", 10, 1), ("heun", 10, -8)]
    assert all(dict(r.options) == ({"noise": 0.5} if r.solver == "sde" else {}) for r in rows)
    with pytest.raises(ValueError, match="rho"):
        sweep_rows(["euler"], [0], [5])
    with pytest.raises(ValueError, match="unknown solver"):
        sweep_rows(["rk4"], [1], [5])
    with pytest.raises(ValueError, match="option"):
        sweep_rows(["euler"], [1], [5], options={"noise": 1.0})


def test_default_sweep_is_table1_with_the_models_T(data):
    r = run("bench", "--model", data["model"], "--hr", data["hr"], "--dry-run")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("2 images") and "11 rows" in lines[0]
    assert [ln.strip() for ln in lines[1:]] == (
        ["Baseline (markov) nfe=15"] + [f"euler rho={rho} nfe=15" for rho in (1, 4, 8, -4, -8)]
        + [f"heun rho={rho} nfe=15" for rho in (1, 4, 8, -4, -8)])


def test_default_sweep_runs_in_table1_order_at_nfe_15(data, tmp_path):
    out = tmp_path / "t1"
    r = run("bench", "--model", data["model"], "--hr", data["hr"], "--limit", "1", "--out", out, "-q")
    assert r.exit_code == 0, r.stderr
    rows = read_csv(out / "table.csv")
    assert [(x["label"], x["rho"]) for x in rows] == (
        [("Baseline", "")] + [("euler", f"{rho:.1f}") for rho in (1, 4, 8, -4, -8)]
        + [("heun", f"{rho:.1f}") for rho in (1, 4, 8, -4, -8)])
    assert {x["nfe"] for x in rows} == {"15"}  # NFE-matched: markov 15 steps, euler 15 points, heun 8 points
    md = (out / "table.md").read_text()
    assert md.splitlines()[0].startswith("| solver | rho | NFE | LPIPS-alex ↓ | SSIM-Y ↑ | PSNR-Y ↑")
    assert r.stdout == md  # the table is data: on stdout even with --quiet (Markdown when piped)


def test_baseline_auto_uses_the_bundled_discrete_model(data, tmp_path, monkeypatch):
    import cresshift.models.pipeline as pipeline

    discrete = make_tiny_model(tmp_path / "discrete.safetensors", seed=1)  # other weights than the main model
    files = {"bundled": data["model"], "bundled-continuous": data["model"], "bundled-discrete": str(discrete)}
    monkeypatch.setattr(pipeline, "bundled_path", lambda name: Path(files[name]))
    args = ["bench", "--hr", data["hr"], "--limit", "1", "--solvers", "euler", "--rhos", "1", "--nfe", "2", "-q"]
    auto = run(*args, "--out", tmp_path / "auto")
    same = run(*args, "--baseline-model", "same", "--out", tmp_path / "same")
    assert auto.exit_code == 0 and same.exit_code == 0, auto.stderr + same.stderr
    assert "Baseline: the Markov sampler at NFE = T on bundled-discrete" in auto.stdout
    a, s = read_csv(tmp_path / "auto" / "table.csv"), read_csv(tmp_path / "same" / "table.csv")
    assert a[0]["label"] == "Baseline" and a[0]["psnr_y"] != s[0]["psnr_y"]  # another network ran the baseline
    assert a[1] == s[1]  # the solver rows use --model either way


# --- one run, every output ---------------------------------------------------------------------
def test_bench_two_images_two_rows_writes_every_output(data, tmp_path):
    out = tmp_path / "b"
    r = run("bench", "--model", data["model"], "--hr", data["hr"], "--solvers", "euler,heun", "--rhos", "1",
            "--nfe", "3", "--no-baseline", "--out", out)
    assert r.exit_code == 0, r.stderr
    for name in ("results.json", "results.jsonl", "table.md", "table.csv", "plot_psnr_y.png", "plot_ssim_y.png",
                 "plot_psnr_rgb.png"):
        assert (out / name).is_file(), name
    assert not (out / "plot_lpips.png").exists() and not (out / "plot_pd.png").exists()  # no LPIPS, no LPIPS plots
    res = json.loads((out / "results.json").read_text())
    assert set(res["conventions"]) == {"psnr_y", "psnr_rgb", "ssim_y"} and res["settings"]["crop_border"] == 0
    assert "quantised to 8 bit" in res["conventions"]["psnr_y"] and "no border crop" in res["conventions"]["ssim_y"]
    assert [(e["solver"], e["nfe"], e["images"]) for e in res["table"]] == [("euler", 3, 2), ("heun", 3, 2)]
    assert len(res["records"]) == 4 and {x["image"] for x in res["records"]} == {"a.png", "b.png"}
    for key in ("settings", "versions", "device", "images", "rows", "lpips"):
        assert key in res
    assert torch.__version__.startswith(res["versions"]["torch"].split("+")[0])
    assert res["device"]["device"] == "cpu" and res["settings"]["hr"] == data["hr"]
    # Table means are the means of the per-image values.
    euler = [x for x in res["records"] if "|euler|" in x["row"]]
    assert res["table"][0]["psnr_y"] == pytest.approx(sum(x["psnr_y"] for x in euler) / 2)
    # LPIPS offline: "n/a", a note on how to get the weights, never a number.
    assert all(e["lpips"] is None for e in res["table"]) and all(x["lpips"] is None for x in res["records"])
    assert "| n/a |" in r.stdout and "note: LPIPS" in r.stderr and "TORCH_HOME" in r.stderr
    assert res["table"][0]["images_per_s"] > 0 and res["table"][0]["seconds"] > 0
    assert "Command: `cresshift bench" in (out / "table.md").read_text()


def test_bicubic_row_scores_the_bicubic_upsampling_of_the_lr(data, tmp_path):
    """--bicubic: a first row 'bicubic' at NFE 0 whose metrics are those of the bicubic image itself, in every output."""
    import torch.nn.functional as F

    from cresshift.metrics import psnr_y, ssim_y

    out = tmp_path / "bic"
    r = run("bench", "--model", data["model"], "--hr", data["hr"], "--solvers", "euler", "--rhos", "1", "--nfe", "2",
            "--bicubic", "--lpips-backbone", "random", "--out", out, "--json", "-q")
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.stdout)
    bic = res["table"][0]
    assert (bic["label"], bic["nfe"], bic["images"]) == ("bicubic", 0, 2)
    assert [e["label"] for e in res["table"]] == ["bicubic", "Baseline", "euler"]
    assert bic["vs_baseline"]["psnr_y"] is not None  # paired with the Baseline like every row
    records = {x["image"]: x for x in res["records"] if "|bicubic|" in x["row"]}
    direct = {}
    for item in bench.dataset(data["hr"]):
        lr, hr = bench.load_item(item, 4)
        sr = F.interpolate(lr[None], scale_factor=4, mode="bicubic", align_corners=False).clamp(-1, 1)
        direct[item.name] = (float(psnr_y(sr, hr[None])[0]), float(ssim_y(sr, hr[None])[0]))
        assert (records[item.name]["psnr_y"], records[item.name]["ssim_y"]) == direct[item.name]
        assert records[item.name]["nfe"] == 0
    assert bic["psnr_y"] == pytest.approx(sum(v[0] for v in direct.values()) / 2, rel=1e-12)
    csv_rows = read_csv(out / "table.csv")
    assert csv_rows[0]["label"] == "bicubic" and float(csv_rows[0]["psnr_y"]) == pytest.approx(bic["psnr_y"])
    md = (out / "table.md").read_text()
    assert md.splitlines()[2].startswith("| bicubic |  | 0 |") and "bicubic: the bicubic x4 upsampling" in md
    assert (out / "plot_pd.png").is_file()
    # Without --bicubic the table is as before.
    plain = json.loads(run("bench", "--model", data["model"], "--hr", data["hr"], "--solvers", "euler", "--rhos", "1",
                           "--nfe", "2", "--out", tmp_path / "plain", "--json", "-q").stdout)
    assert [e["label"] for e in plain["table"]] == ["Baseline", "euler"]


def test_bench_json_and_random_lpips_backbone(data, tmp_path):
    r = run("bench", "--model", data["model"], "--hr", data["hr"], "--solvers", "ddim", "--rhos", "2", "--nfe", "3",
            "--no-baseline", "--limit", "1", "--lpips-backbone", "random", "--out", tmp_path / "j", "--json", "-q")
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["table"][0]["lpips"] is not None and 0 <= res["table"][0]["lpips"]
    assert "random" in res["lpips"]["name"]
    assert (tmp_path / "j" / "plot_lpips.png").is_file() and (tmp_path / "j" / "plot_pd.png").is_file()
    assert "[-1, 1], not quantised" in res["conventions"]["lpips"]


def test_bench_crop_border_is_recorded_and_changes_psnr(data, tmp_path):
    args = ["bench", "--model", data["model"], "--hr", data["hr"], "--solvers", "euler", "--rhos", "1", "--nfe", "2",
            "--no-baseline", "--limit", "1", "--json", "-q"]
    whole = json.loads(run(*args, "--out", tmp_path / "w").stdout)
    cropped = json.loads(run(*args, "--crop-border", "4", "--out", tmp_path / "c").stdout)
    assert cropped["settings"]["crop_border"] == 4 and "4 px cropped" in cropped["conventions"]["psnr_y"]
    assert cropped["records"][0]["psnr_y"] != whole["records"][0]["psnr_y"]


def test_plots_are_skipped_with_a_note_without_matplotlib(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    r = run("bench", "--model", data["model"], "--hr", data["hr"], "--solvers", "euler", "--rhos", "1", "--nfe", "2",
            "--no-baseline", "--limit", "1", "--out", tmp_path / "np")
    assert r.exit_code == 0, r.stderr
    assert not list((tmp_path / "np").glob("*.png"))
    assert "plots skipped: matplotlib" in r.stderr


# --- resume ------------------------------------------------------------------------------------
def test_killed_and_resumed_gives_the_same_table_and_skips_done_work(data, tmp_path):
    from cresshift.models.pipeline import load_pipeline

    pipe = load_pipeline(data["model"])
    rows = sweep_rows(["euler", "heun"], [1, -4], [3], baseline=True)  # 5 rows x 2 images = 10 results
    full = run_bench(BenchSettings(model=data["model"], hr=data["hr"], out=str(tmp_path / "full")), rows,
                     pipelines={"model": pipe})
    assert full.computed == 10

    settings = BenchSettings(model=data["model"], hr=data["hr"], out=str(tmp_path / "resumed"))
    killed = Counting(pipe, fail_at=4)
    with pytest.raises(KeyboardInterrupt):
        run_bench(settings, rows, pipelines={"model": killed})
    assert killed.calls == 4
    with open(tmp_path / "resumed" / "results.jsonl", "a") as fh:
        fh.write('{"row": "model|euler|nfe=3|rho=1|sche')  # a line cut short by the kill
    again = Counting(pipe)
    resumed = run_bench(settings, rows, pipelines={"model": again})
    assert again.calls == 6 and resumed.computed == 6  # only the missing results were computed
    strip = lambda t: [{k: e[k] for k in ("label", "rho", "nfe", "psnr_y", "psnr_rgb", "ssim_y", "lpips")} for e in t]
    assert strip(resumed.table) == strip(full.table)

    third = Counting(pipe)
    assert run_bench(settings, rows, pipelines={"model": third}).computed == 0 and third.calls == 0


def test_cli_resume_reuses_and_refuses_another_runs_results(data, tmp_path):
    args = ["bench", "--model", data["model"], "--hr", data["hr"], "--solvers", "euler", "--rhos", "1", "--nfe", "2",
            "--no-baseline", "--out", tmp_path / "r"]
    first = run(*args)
    assert first.exit_code == 0 and "2 results computed, 0 reused" in first.stderr
    second = run(*args)
    assert second.exit_code == 0 and "0 results computed, 2 reused" in second.stderr
    assert read_csv(tmp_path / "r" / "table.csv")[0]["psnr_y"]
    assert_error(run(*args, "--seed", "1"), "another run", "seed")
    assert_error(run(*args, "--context-pad", "32"), "another run", "context_pad")
    fresh = run(*args, "--seed", "1", "--fresh")
    assert fresh.exit_code == 0 and "2 results computed, 0 reused" in fresh.stderr
    # new weights under the same file name (a retrained model installed in place) are another run too
    model = make_tiny_model(tmp_path / "m.safetensors")
    args_m = ["bench", "--model", model, "--hr", data["hr"], "--solvers", "euler", "--rhos", "1", "--nfe", "2",
              "--no-baseline", "--out", tmp_path / "m"]
    assert run(*args_m).exit_code == 0
    make_tiny_model(model, seed=1)
    assert_error(run(*args_m), "another run", "model_sha256")


def test_context_pad_reaches_every_row(data, tmp_path):
    """--context-pad changes the pixels the network sees: the numbers move, the row layout does not."""
    args = ["bench", "--model", data["model"], "--hr", data["hr"], "--solvers", "ddim", "--rhos", "1", "--nfe", "3",
            "--no-baseline"]
    plain, padded = run(*args, "--out", tmp_path / "a"), run(*args, "--out", tmp_path / "b", "--context-pad", "32")
    assert plain.exit_code == 0 and padded.exit_code == 0, (plain.stderr, padded.stderr)
    a, b = read_csv(tmp_path / "a" / "table.csv"), read_csv(tmp_path / "b" / "table.csv")
    assert [r["solver"] for r in a] == [r["solver"] for r in b]
    assert a[0]["psnr_y"] != b[0]["psnr_y"]


# --- seeds -------------------------------------------------------------------------------------
def test_same_seed_per_image_across_rows_and_independent_of_limit(data, tmp_path):
    from cresshift.models.pipeline import load_pipeline

    pipe = load_pipeline(data["model"])
    rows = sweep_rows(["euler", "heun"], [1], [3], baseline=True)
    res = run_bench(BenchSettings(model=data["model"], hr=data["hr"], seed=7), rows, pipelines={"model": pipe})
    for rec in res.records:
        assert rec["seed"] == 7 + {"a.png": 0, "b.png": 1}[rec["image"]]
    one = run_bench(BenchSettings(model=data["model"], hr=data["hr"], seed=7, limit=1), rows,
                    pipelines={"model": pipe})
    first = {r["row"]: r["psnr_y"] for r in res.records if r["image"] == "a.png"}
    assert {r["row"]: r["psnr_y"] for r in one.records} == first
    # The seed matters: another seed gives other samples.
    other = run_bench(BenchSettings(model=data["model"], hr=data["hr"], seed=8, limit=1), rows,
                      pipelines={"model": pipe})
    assert {r["row"]: r["psnr_y"] for r in other.records} != first


def test_one_seed_reproduces_single_seed_numbers_and_more_seeds_extend_the_run(data, tmp_path):
    """--seeds 1: the mean of one pipeline call per image at seed + i, exactly; --seeds 2 reuses those and adds draw 1."""
    from cresshift.metrics import evaluate_pair

    pipe = load_pipeline_of(data)
    rows = sweep_rows(["euler"], [1], [3], baseline=True)
    one = run_bench(BenchSettings(model=data["model"], hr=data["hr"], seed=7, out=str(tmp_path / "s")), rows,
                    pipelines={"model": pipe})
    direct = []
    for i, item in enumerate(bench.dataset(data["hr"])):
        lr, hr = bench.load_item(item, 4)
        sr = pipe.run(lr[None], solver="euler", nfe=3, rho=1.0, seed=7 + i).sr
        direct.append(float(evaluate_pair(sr.float().cpu(), hr[None], None)["psnr_y"][0]))
    assert one.table[1]["psnr_y"] == sum(direct) / 2
    assert one.table[1]["images"] == 2 and one.table[1]["samples"] == 2
    counter = Counting(pipe)
    two = run_bench(BenchSettings(model=data["model"], hr=data["hr"], seed=7, seeds=2, out=str(tmp_path / "s")),
                    rows, pipelines={"model": counter})
    assert counter.calls == 4 and two.computed == 4  # draw 1 only: 2 rows x 2 images
    draw1 = [r for r in two.records if r.get("draw") == 1]
    assert {r["image"]: r["seed"] for r in draw1} == {"a.png": bench.draw_seed(7, 0, 1), "b.png": bench.draw_seed(7, 1, 1)}
    assert len({r["seed"] for r in draw1}) == 2 and not {r["seed"] for r in draw1} & {7, 8}
    assert two.table[1]["samples"] == 4 and two.table[1]["images"] == 2 and two.table[1]["complete"]
    mean = sum(r["psnr_y"] for r in two.records if "|euler|" in r["row"]) / 4
    assert two.table[1]["psnr_y"] == pytest.approx(mean)
    lo, hi = two.table[1]["psnr_y_ci"]
    assert lo <= two.table[1]["psnr_y"] <= hi
    diff = two.table[1]["vs_baseline"]["psnr_y"]
    assert diff["diff"] == pytest.approx(two.table[1]["psnr_y"] - two.table[0]["psnr_y"])
    assert "vs_baseline" not in two.table[0]
    text = (tmp_path / "s" / "table.md").read_text()
    assert " ± " in text and "bootstrap" in text and "2 noise seeds per image" in text


def load_pipeline_of(data):
    from cresshift.models.pipeline import load_pipeline

    return load_pipeline(data["model"])


def test_significance_marks_a_shift_and_not_noise():
    """summarize + table cells on synthetic records: a row shifted by +0.5 dB on every (image, seed) gets *, noise not."""
    import numpy as np

    rng = np.random.default_rng(0)
    items = [bench.Item(i, f"{i}.png", f"{i}.png", None, i) for i in range(12)]
    rows = [bench.Row("markov", 15, baseline=True, schedule="discrete"), bench.Row("euler", 15, 1.0),
            bench.Row("heun", 15, 1.0)]
    base = rng.normal(30, 3, size=(12, 2))
    values = {rows[0]: base, rows[1]: base + 0.5 + rng.normal(0, 0.05, size=base.shape),
              rows[2]: base + rng.normal(0, 0.05, size=base.shape)}
    records = [{"row": row.key, "image": it.name, "draw": k, "nfe": 15, "seconds": 1.0, "psnr_y": float(v[i, k]),
                "psnr_rgb": float(v[i, k]), "ssim_y": 0.9, "lpips": None}
               for row, v in values.items() for i, it in enumerate(items) for k in range(2)]
    table = bench.summarize(rows, records, items, seeds=2)
    shifted, noise = bench.table_cells(table[1]), bench.table_cells(table[2])
    assert shifted[5].endswith(" *") and not noise[5].endswith("*")  # PSNR-Y column
    assert table[1]["vs_baseline"]["psnr_y"]["ci"][0] < 0.5 < table[1]["vs_baseline"]["psnr_y"]["ci"][1]
    assert table[1]["vs_baseline"]["lpips"] is None and table[1]["vs_baseline"]["ssim_y"]["significant"] is False
    half = float(shifted[5].split(" ± ")[1].split()[0])
    lo, hi = table[1]["psnr_y_ci"]
    assert half == pytest.approx((hi - lo) / 2, abs=0.006) and hi - lo > 1  # the image spread (sd 3 dB over 12 images)


# --- data and errors ---------------------------------------------------------------------------
def test_paired_lr_folder(data, tmp_path):
    from cresshift.data.io import bicubic_down, load_image

    lr = tmp_path / "lr"
    for name in ("a", "b"):
        save_image(bicubic_down(load_image(Path(data["hr"]) / f"{name}.png"), 4), lr / f"{name}.png")
    args = ["bench", "--model", data["model"], "--hr", data["hr"], "--solvers", "euler", "--rhos", "1", "--nfe", "2",
            "--no-baseline"]
    paired = run(*args, "--lr", lr, "--out", tmp_path / "p")
    assert paired.exit_code == 0, paired.stderr
    assert read_csv(tmp_path / "p" / "table.csv")[0]["images"] == "2"
    (lr / "b.png").unlink()
    assert_error(run(*args, "--lr", lr, "--out", tmp_path / "p2"), "no LR image", "b.png")
    save_image(load_image(Path(data["hr"]) / "a.png"), lr / "b.png")  # not the x4 LR of b.png
    assert_error(run(*args, "--lr", lr, "--out", tmp_path / "p3"), "b.png")


@pytest.mark.parametrize("args, needles", [
    (["--lr", "{hr}"], ["--lr needs --hr"]),
    (["--hr", "{hr}", "--rhos", "1,0"], ["--rhos"]),
    (["--hr", "{hr}", "--solvers", "heun", "--nfe", "2"], ["heun", "nfe >= 3"]),
    (["--hr", "{hr}", "--solvers", "markov", "--nfe", "20"], ["between 1 and 15"]),
    (["--hr", "{hr}", "--solvers", "rk4"], ["--solvers"]),
    (["--hr", "{hr}", "--nfe", "five"], ["--nfe"]),
    (["--hr", "{hr}", "--solvers", "euler", "-O", "noise=1"], ["option", "noise"]),
    (["--hr", "{root}/nothing"], ["--hr"]),
    (["--hr", "{hr}", "--model", "{root}/none.safetensors"], ["no such model"]),
    (["--hr", "{hr}", "--device", "cuda:7"] if not torch.cuda.is_available() else ["--hr", "{hr}", "--limit", "0"],
     ["cuda"] if not torch.cuda.is_available() else ["--limit"]),
])
def test_bench_errors(data, tmp_path, args, needles):
    args = [a.format(hr=data["hr"], root=data["root"]) for a in args]
    if "--model" not in args:
        args += ["--model", data["model"]]
    assert_error(run("bench", *args, "--out", tmp_path / "e"), *needles)


def test_bench_defaults_fail_in_one_line_without_bundled_files(data, tmp_path, monkeypatch):
    import cresshift.models.pipeline as pipeline

    monkeypatch.setattr(pipeline, "bundled_path", lambda name: tmp_path / "no.safetensors")
    assert_error(run("bench", "--out", tmp_path / "d"), "bundled model")
    monkeypatch.setattr(bench.rows, "bundled_testset", lambda: tmp_path / "no-testset")  # where plan() looks it up
    assert_error(run("bench", "--model", data["model"], "--out", tmp_path / "d"), "held-out tiles", "--hr")


def test_unreadable_image_is_one_line(data, tmp_path):
    hr = tmp_path / "hr"
    hr.mkdir()
    (hr / "bad.png").write_bytes(b"\x89PNG broken")
    assert_error(run("bench", "--model", data["model"], "--hr", hr, "--solvers", "euler", "--nfe", "2",
                     "--out", tmp_path / "u"), "cannot read image")


# --- torchrun ----------------------------------------------------------------------------------
def test_two_gloo_processes_give_the_same_table_as_one(data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    common = ["-m", "cresshift", "bench", "--model", data["model"], "--hr", data["hr"], "--solvers", "euler,heun",
              "--rhos", "1", "--nfe", "3", "--device", "cpu", "--seeds", "2", "-q"]
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], env=env, capture_output=True,
                         text=True, timeout=120)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *common, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True,
                         timeout=120)
    assert two.returncode == 0, two.stderr[-2000:]
    assert (tmp_path / "two" / "results.rank1.jsonl").is_file()  # rank 1 really worked
    assert read_csv(tmp_path / "one" / "table.csv") == read_csv(tmp_path / "two" / "table.csv")
    assert two.stdout.count("| Baseline |") == 1  # only rank 0 prints the table
    res = json.loads((tmp_path / "two" / "results.json").read_text())
    assert res["world_size"] == 2 and len(res["records"]) == 12

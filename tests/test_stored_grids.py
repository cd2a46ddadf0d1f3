"""Grid files and grids stored with a model; the optimize-grid command and --grid in sample."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cresshift.cli import main
from cresshift.grids import grid_json, lambda_grid, load_grid, make_grid
from cresshift.models.checkpoints import load_cresshift, save_cresshift
from cresshift.models.pipeline import bundled_path, load_pipeline
from cresshift.models.stored_grids import grid_key, grid_request, sidecar_path, store_grid, stored_grid
from cresshift.schedules import ExactSchedule, ExpAlphaSchedule, ResShiftSchedule

V1 = ResShiftSchedule.from_config("realsr-x4-v1")


def _record(schedule, n=4):
    return json.loads(grid_json(lambda_grid(n, schedule), schedule, solver="dpmpp-2m", nfe=n))


def test_grid_file_round_trip_and_bad_files(tmp_path):
    sched = ExactSchedule(V1)
    path = tmp_path / "g.json"
    path.write_text(grid_json(lambda_grid(5, sched), sched, solver="euler", nfe=5))
    np.testing.assert_array_equal(load_grid(path, sched), lambda_grid(5, sched))
    with pytest.raises(ValueError, match="made for schedule") as err:
        load_grid(path, ExpAlphaSchedule.fit(V1, warn=False))
    assert "\n" not in str(err.value)
    record = json.loads(path.read_text())
    record["ts"] = [1.0, 0.2, 0.5, 1 / 15]
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="strictly decreasing") as err:
        load_grid(path, sched)
    assert "\n" not in str(err.value)


def test_store_in_checkpoint_config_refuses_overwrite_and_keeps_mode(tmp_path):
    sched = ExactSchedule(V1)
    ckpt = tmp_path / "m.safetensors"
    save_cresshift(ckpt, {"model": {"w": torch.zeros(2)}}, {"model": {"class": "x", "params": {}}})
    os.chmod(ckpt, 0o640)
    key = grid_key("dpmpp-2m", 4, sched)
    assert store_grid(ckpt, key, _record(sched)) == ckpt
    np.testing.assert_array_equal(stored_grid(ckpt, "dpmpp-2m", 4, sched), lambda_grid(4, sched))
    assert load_cresshift(ckpt)[0]["model"]["w"].shape == (2,)  # the weights are still there
    with pytest.raises(ValueError, match="already stored"):
        store_grid(ckpt, key, _record(sched, 3))
    store_grid(ckpt, key, _record(sched, 3), overwrite=True)
    assert len(stored_grid(ckpt, "dpmpp-2m", 4, sched)) == 3
    assert os.stat(ckpt).st_mode & 0o777 == 0o640
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_sidecar_for_official_weights_and_missing_grid(tmp_path):
    sched = ExactSchedule(V1)
    pth = tmp_path / "resshift.pth"
    pth.write_bytes(b"not read")
    with pytest.raises(ValueError, match="no optimised grid for heun/nfe=7/exact") as err:
        grid_request("optimized", None, model=pth, solver="heun", nfe=7, schedule=sched)
    assert "optimize-grid" in str(err.value) and "\n" not in str(err.value)
    store_grid(pth, grid_key("heun", 7, sched), _record(sched))
    side = sidecar_path(pth)
    assert side.name == "resshift.grids.json" and pth.read_bytes() == b"not read"
    os.chmod(side, 0o600)
    store_grid(pth, grid_key("euler", 4, sched), _record(sched))
    assert os.stat(side).st_mode & 0o777 == 0o600
    grid, rho = grid_request("optimized", -8.0, model=pth, solver="heun", nfe=7, schedule=sched)
    assert rho is None and np.array_equal(make_grid(grid, 4, sched), lambda_grid(4, sched))  # the stored record
    assert grid_request("lambda", -8.0, model=pth, solver="heun", nfe=7, schedule=sched) == ("lambda", None)
    assert grid_request(None, -8.0, model=pth, solver="heun", nfe=7, schedule=sched) == (None, -8.0)
    for family in ("rho", "karras", "logeta"):  # the families rho parametrises get it
        assert grid_request(family, 2.0, model=pth, solver="heun", nfe=7, schedule=sched) == (family, 2.0)
    side.write_text("{not json")
    with pytest.raises(ValueError, match="not a cresshift grids sidecar"):
        stored_grid(pth, "heun", 7, sched)


def test_optimize_grid_cli_refuses_before_work(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["optimize-grid", "--nfe", "3"])
    assert res.exit_code == 2 and "--out FILE, --write" in res.output
    out = tmp_path / "g.json"
    out.write_text("keep")
    res = runner.invoke(main, ["optimize-grid", "--nfe", "3", "--out", str(out)])
    assert res.exit_code == 2 and "exists; pass --overwrite" in res.output and out.read_text() == "keep"
    model = tmp_path / "m.safetensors"
    shutil.copy(bundled_path("bundled"), model)
    sched = load_pipeline(str(model)).schedule
    store_grid(model, grid_key("dpmpp-2m", 3, sched), _record(sched, 3))
    before = model.read_bytes()
    res = runner.invoke(main, ["optimize-grid", "--model", str(model), "--nfe", "3", "--write"])
    assert res.exit_code == 2 and "already stored" in res.output and model.read_bytes() == before
    res = runner.invoke(main, ["optimize-grid", "--solver", "tuned", "--nfe", "3", "--out", str(tmp_path / "t.json"),
                               "-O", "coefficients=1"])
    assert res.exit_code == 2 and "drop -O coefficients" in res.output and not (tmp_path / "t.json").exists()


def test_sample_grid_file_and_missing_optimized(tmp_path):
    sched = load_pipeline("bundled").schedule
    grid_file = tmp_path / "g.json"
    grid_file.write_text(grid_json(lambda_grid(3, sched), sched, solver="dpmpp-2m", nfe=3))
    runner = CliRunner()
    res = runner.invoke(main, ["sample", "--example", "-o", str(tmp_path / "a"), "--solver", "dpmpp-2m", "--nfe", "3",
                               "--grid", str(grid_file), "--json", "-q"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["grid"] == pytest.approx(lambda_grid(3, sched).tolist(), abs=0) and summary["nfe"] == [3]
    res = runner.invoke(main, ["sample", "--example", "-o", str(tmp_path / "b"), "--solver", "dpmpp-2m", "--nfe", "3",
                               "--grid", "optimized"])
    assert res.exit_code == 2 and "no optimised grid for dpmpp-2m/nfe=3" in res.output
    assert not (tmp_path / "b").exists()


def test_sample_family_grids_take_rho_only_when_given(tmp_path):
    from cresshift.grids import karras_grid, log_eta_grid

    sched = load_pipeline("bundled").schedule
    runner = CliRunner()

    def grid_of(*args):
        res = runner.invoke(main, ["sample", "--example", "-o", str(tmp_path / str(len(list(tmp_path.iterdir())))),
                                   "--solver", "dpmpp-2m", "--nfe", "4", "--json", "-q", *args])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)["grid"]

    assert grid_of("--grid", "karras") == pytest.approx(karras_grid(4, sched, 7.0).tolist(), abs=1e-12)  # not the -8 default
    assert grid_of("--grid", "logeta", "--rho", "2") == pytest.approx(log_eta_grid(4, sched, 2.0).tolist(), abs=1e-12)
    assert grid_of("--grid", "logeta") == pytest.approx(log_eta_grid(4, sched, 1.0).tolist(), abs=1e-12)


@pytest.mark.slow
def test_optimize_grid_cli_end_to_end(tmp_path):
    model = tmp_path / "m.safetensors"
    shutil.copy(bundled_path("bundled"), model)
    out = tmp_path / "g.json"
    args = ["optimize-grid", "--model", str(model), "--solver", "dpmpp-2m", "--nfe", "3", "--limit", "1",
            "--max-evals", "2", "--reference-rtol", "1e-2", "--out", str(out), "--write", "-q"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    record = json.loads(out.read_text())
    assert record["calibration_rms"]["optimised"] <= record["calibration_rms"]["auto"]
    sched = load_pipeline(str(model)).schedule
    np.testing.assert_array_equal(stored_grid(model, "dpmpp-2m", 3, sched), record["ts"])
    assert len(record["ts"]) == 3 and record["ts"][0] == 1.0 and record["ts"][-1] == 1 / 15


def test_optimize_grid_offers_every_deterministic_fixed_grid_solver():
    from cresshift.commands.optimize_grid import GRID_SOLVERS
    from cresshift.solvers import SOLVERS

    fixed = {name for name, spec in SOLVERS.items() if not spec.stochastic and name not in ("markov", "adaptive")}
    assert set(GRID_SOLVERS) == fixed


def test_sample_tuned_takes_coefficients_from_a_grid_file_and_a_stored_grid(tmp_path):
    """The tuned solver's coefficients travel with its grid: --grid FILE and --grid optimized give one output."""
    from PIL import Image

    from cresshift.solvers.tuned import coefficient_count, default_coefficients

    model = tmp_path / "m.safetensors"
    shutil.copy(bundled_path("bundled"), model)
    sched = load_pipeline(str(model)).schedule
    ts = lambda_grid(3, sched)
    coef = (default_coefficients(ts, sched) + np.linspace(0.1, 0.4, coefficient_count(3))).tolist()
    tuned_file, plain_file = tmp_path / "tuned.json", tmp_path / "plain.json"
    tuned_file.write_text(grid_json(ts, sched, solver="tuned", nfe=3, coefficients=coef))
    plain_file.write_text(grid_json(ts, sched, solver="tuned", nfe=3))
    store_grid(model, grid_key("tuned", 3, sched), json.loads(tuned_file.read_text()))
    runner = CliRunner()

    def run(name, *grid):
        res = runner.invoke(main, ["sample", "--example", "-o", str(tmp_path / name), "--model", str(model),
                                   "--solver", "tuned", "--nfe", "3", "--cpu-bf16", "none", "-q", *grid])
        assert res.exit_code == 0, res.output
        return np.asarray(Image.open(tmp_path / name / "example_sr.png"), dtype=np.int16)

    from_file, from_store, plain = run("file", "--grid", str(tuned_file)), run("stored", "--grid", "optimized"), \
        run("plain", "--grid", str(plain_file))
    np.testing.assert_array_equal(from_file, from_store)
    assert np.abs(from_file - plain).max() > 0  # the coefficients changed the output


@pytest.mark.slow
def test_optimize_grid_cli_tuned_end_to_end(tmp_path):
    out = tmp_path / "g.json"
    args = ["optimize-grid", "--solver", "tuned", "--nfe", "3", "--limit", "1", "--max-evals", "2",
            "--reference-rtol", "1e-2", "--out", str(out), "-q"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    record = json.loads(out.read_text())
    assert record["calibration_rms"]["optimised"] <= record["calibration_rms"]["auto"]
    assert len(record["ts"]) == 3 and len(record["coefficients"]) == 3
    res = CliRunner().invoke(main, ["sample", "--example", "-o", str(tmp_path / "s"), "--solver", "tuned", "--nfe", "3",
                                    "--grid", str(out), "--json", "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["grid"] == pytest.approx(record["ts"], abs=0)

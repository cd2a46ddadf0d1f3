"""The shared runtime helpers, the single homes of repeated facts, and the package's import layering."""
import warnings
from pathlib import Path

import pytest
import torch

from cresshift.checks import check_rho
from cresshift.runtime import DTYPES, Distributed, first_line, resolve_device, torch_dtype, versions

PACKAGE = Path(__file__).resolve().parent.parent / "cresshift"


def test_first_line_takes_the_first_line_or_the_type_name():
    assert first_line(ValueError("bad value\nmore detail")) == "bad value"
    assert first_line(ValueError("  \n")) == "ValueError"
    assert first_line(OSError("x" * 300), 200) == "x" * 200


def test_dtype_names_map_to_autocast_dtypes():
    assert [torch_dtype(n) for n in DTYPES] == [None, torch.float16, torch.bfloat16]
    assert torch_dtype(None) is None
    with pytest.raises(ValueError, match="float64"):
        torch_dtype("float64")


def test_resolve_device_and_one_process_context(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    dist = Distributed("cpu")
    assert (dist.world, dist.rank, dist.gather("mine")) == (1, 0, ["mine"])
    dist.barrier()
    dist.close()
    assert not dist.created


def test_versions_name_the_packages_results_depend_on():
    import cresshift

    v = versions()
    assert v["cresshift"] == cresshift.__version__ and v["torch"] == torch.__version__
    assert {"python", "platform", "numpy", "safetensors"} <= set(v)


@pytest.mark.parametrize("rho", [0, 0.0, float("inf"), float("nan")])
def test_check_rho_refuses_zero_and_non_finite(rho):
    with pytest.raises(ValueError, match="non-zero"):
        check_rho(rho)


def test_check_rho_passes_valid_values():
    assert check_rho(-8) == -8.0 and isinstance(check_rho(1), float)


def test_official_presets_take_their_tables_from_the_schedule_presets():
    from cresshift.models.presets import AUTOENCODER_FACTOR, OFFICIAL_PRESETS, official_config
    from cresshift.schedules import PRESETS, ResShiftSchedule

    for name, preset in OFFICIAL_PRESETS.items():
        assert ResShiftSchedule.from_config(preset["diffusion"]) == ResShiftSchedule.from_config(name)
        assert {k: preset["diffusion"][k] for k in PRESETS[name]} == PRESETS[name]
        config = official_config(name)
        assert config["preset"] == name and config["model"] == {"class": "UNetModelSwin", "params": preset["model"]}
        config["diffusion"]["steps"] = 1  # a copy: the preset table is untouched
        assert OFFICIAL_PRESETS[name]["diffusion"]["steps"] == PRESETS[name]["steps"]
    assert AUTOENCODER_FACTOR == 4


def test_autoencoder_factor_is_the_vq_downsampling():
    from cresshift.models.presets import AUTOENCODER_FACTOR, get_preset
    from cresshift.models.vq import VQModelTorch

    cfg = get_preset("realsr-x4-v1")["autoencoder"]
    cfg["ddconfig"].update(ch=32, num_res_blocks=1)  # the same downsampling, a small network
    ae = VQModelTorch(embed_dim=cfg["embed_dim"], n_embed=16, ddconfig=cfg["ddconfig"])
    with torch.no_grad():
        z = ae.encode(torch.zeros(1, 3, 32, 48))
    assert z.shape[-2:] == (32 // AUTOENCODER_FACTOR, 48 // AUTOENCODER_FACTOR)


def test_fit_report_exact_continuation_and_end_warning():
    from cresshift.schedules import ResShiftSchedule, ScheduleMismatchWarning, fit_candidates, fit_report

    v1 = ResShiftSchedule.from_config("realsr-x4-v1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # v1's fit reaches eta_T within 1 %: no warning
        report = fit_report(v1, source="v1")
    assert set(report["schedules"]) == {"exp-alpha fit", "exact", "paper (a=1.1113)"}
    exact = report["schedules"]["exact"]
    assert exact["max_abs_error"] < 1e-12 and exact["end_rel_miss"] < 1e-12  # the exact continuation hits every eta_k
    paper = report["schedules"]["paper (a=1.1113)"]
    assert paper["end_rel_miss"] == pytest.approx(abs(paper["eta_1"] - v1.etas[-1]) / v1.etas[-1])
    t4 = ResShiftSchedule(T=4, min_noise_level=0.2)
    assert set(fit_candidates(t4)) == {"exp-alpha fit", "exact"}
    with pytest.warns(ScheduleMismatchWarning, match="misses eta_T"):
        report = fit_report(t4, source="flags")
    assert report["schedules"]["exp-alpha fit"]["end_rel_miss"] > 0.01


# --- layering ------------------------------------------------------------------------------------
#: layer of each top-level module of cresshift; a module may import only from its own layer or below

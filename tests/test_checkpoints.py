"""Checkpoint I/O: weights-only loading, unwrapping, clear mismatch errors, atomic safetensors."""
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from cresshift.models.checkpoints import (CheckpointError, check_state_dict, load_cresshift, load_official_state_dict,
                                          save_cresshift)


def small():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4))


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "module", "orig_mod", "ema"])
def test_official_layouts(tmp_path, wrap):
    m = small()
    sd = m.state_dict()
    obj = {"bare": sd, "state_dict": {"state_dict": sd, "step": 3},
           "module": {f"module.{k}": v for k, v in sd.items()},
           "orig_mod": {f"_orig_mod.{k}": v for k, v in sd.items()},
           "ema": {"ema": sd, "model": {k: v * 0 for k, v in sd.items()}}}[wrap]
    torch.save(obj, tmp_path / "w.pth")
    got = load_official_state_dict(tmp_path / "w.pth")
    assert set(got) == set(sd)
    for k in sd:
        assert torch.equal(got[k], sd[k])  # the EMA weights win over the raw ones


def test_checkpoint_never_executes_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_official_state_dict(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_official_state_dict(tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_official_state_dict(tmp_path / "missing.pth")


def test_mismatch_names_keys():
    m = small()
    sd = dict(m.state_dict())
    sd.pop("1.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["0.weight"] = torch.zeros(5, 3, 3, 3)
    with pytest.raises(CheckpointError) as e:
        check_state_dict(m, sd, hint="try preset X")
    msg = str(e.value)
    assert "1 missing [1.bias]" in msg and "1 unexpected [extra.weight]" in msg
    assert "0.weight (5, 3, 3, 3) vs (4, 3, 3, 3)" in msg and msg.endswith("try preset X")
    assert "\n" not in msg


def test_safetensors_round_trip_and_atomicity(tmp_path, monkeypatch):
    m = small()
    cfg = {"model": {"params": {"a": 1}}, "schedule": {"type": "exp", "a": 1.1, "lam": 1.2, "kappa": 2.0, "T": 15}}
    path = tmp_path / "m.safetensors"
    save_cresshift(path, {"model": m.state_dict()}, cfg)
    groups, got = load_cresshift(path)
    assert got["schedule"] == cfg["schedule"] and got["format"] == "cresshift"
    for k, v in m.state_dict().items():
        assert torch.equal(groups["model"][k], v)
    # A crash while writing leaves the previous file intact and no temporary behind.
    import safetensors.torch as st

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(st, "save", boom)
    with pytest.raises(RuntimeError):
        save_cresshift(path, {"model": {k: v * 0 for k, v in m.state_dict().items()}}, cfg)
    groups, _ = load_cresshift(path)
    assert torch.equal(groups["model"]["0.weight"], m.state_dict()["0.weight"])
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_atomic_write_gives_ordinary_file_permissions(tmp_path):
    """Files written through a temporary file get the mode open() would give (mkstemp alone makes 0600)."""
    import os
    import stat

    from cresshift.models.checkpoints import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.bin", lambda tmp: Path(tmp).write_bytes(b"x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o644

"""Optimised grids stored with a model, keyed by solver, NFE budget and schedule family.

A cresshift ``.safetensors`` checkpoint keeps them in its config under ``"grids"``; any other
model file (official ``.pth`` weights, and the bundled models, whose weights files are never
rewritten) gets a sidecar ``<name>.grids.json`` beside it:
``{"format": "cresshift-grids", "model": <file name>, "grids": {key: record}}``. A record is a
grid file's content (``cresshift.grids.grid_json``: ``ts``, ``schedule`` and metadata); the
key is ``"<solver>/nfe=<N>/<schedule family>"`` (``cresshift.grids.schedule_kind``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..grids import grid_from_record, schedule_kind
from .checkpoints import atomic_write, load_cresshift, save_cresshift

__all__ = ["grid_key", "model_file", "sidecar_path", "stored_grids", "stored_grid", "stored_grid_record", "store_grid",
           "grid_request", "SIDECAR_FORMAT"]

SIDECAR_FORMAT = "cresshift-grids"


def grid_key(solver: str, nfe: int, schedule: Any) -> str:
    """The key a grid for ``solver`` at budget ``nfe`` on ``schedule`` is stored under."""
    return f"{solver}/nfe={int(nfe)}/{schedule_kind(schedule)}"


def model_file(model: Union[str, Path]) -> Path:
    """The weights file of a model name (``bundled`` / ``bundled-discrete`` resolve to the package's file)."""
    from .pipeline import BUNDLED, bundled_path

    return bundled_path(str(model)) if str(model) in BUNDLED else Path(model)


def _in_checkpoint(path: Path) -> bool:
    """Grids of cresshift checkpoints live in their config, except the bundled ones (a sidecar)."""
    from .pipeline import BUNDLED, bundled_path

    bundled = {bundled_path(name).resolve() for name in BUNDLED}
    return path.suffix == ".safetensors" and path.resolve() not in bundled


def sidecar_path(path: Union[str, Path]) -> Path:
    """``<name>.grids.json`` beside a model file."""
    path = Path(path)
    return path.with_name(path.stem + ".grids.json")


def stored_grids(model: Union[str, Path]) -> dict[str, Any]:
    """Every grid record stored for ``model`` ({} if none)."""
    path = model_file(model)
    if _in_checkpoint(path):
        return dict(load_cresshift(path)[1].get("grids") or {})
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
        grids = data["grids"] if data.get("format") == SIDECAR_FORMAT else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{side} is not a cresshift grids sidecar ({err}); move it away or rewrite it "
                         f"with cresshift optimize-grid --write --overwrite") from None
    if not isinstance(grids, dict):
        raise ValueError(f"{side} is not a cresshift grids sidecar (format {SIDECAR_FORMAT!r} with 'grids')")
    return grids


def stored_grid(model: Union[str, Path], solver: str, nfe: int, schedule: Any) -> np.ndarray:
    """The optimised grid stored for (solver, nfe, schedule); one-line ValueError if there is none."""
    key = grid_key(solver, nfe, schedule)
    return grid_from_record(stored_grid_record(model, solver, nfe, schedule), schedule,
                            f"the grid stored for {key} with {model}")


def stored_grid_record(model: Union[str, Path], solver: str, nfe: int, schedule: Any) -> dict[str, Any]:
    """The whole record stored for (solver, nfe, schedule), checked against ``schedule`` (with the ``tuned``
    solver's coefficients, if it has them); one-line ValueError if there is none."""
    key = grid_key(solver, nfe, schedule)
    grids = stored_grids(model)
    if key not in grids:
        have = ", ".join(sorted(grids)) or "none"
        raise ValueError(f"no optimised grid for {key} is stored with {model} (stored: {have}); make one with "
                         f"'cresshift optimize-grid --model {model} --solver {solver} --nfe {nfe} --write'")
    record = grids[key]
    grid_from_record(record, schedule, f"the grid stored for {key} with {model}")  # raises for another schedule
    return dict(record)


def store_grid(model: Union[str, Path], key: str, record: dict[str, Any], *, overwrite: bool = False) -> Path:
    """Store ``record`` under ``key`` for ``model`` (its config, or the sidecar) atomically, keeping the
    file's mode; refuses to replace an existing key without ``overwrite``. Returns the file written."""
    path = model_file(model)
    if key in stored_grids(path) and not overwrite:
        raise ValueError(f"a grid for {key} is already stored with {model}; pass --overwrite to replace it")
    if _in_checkpoint(path):
        groups, config = load_cresshift(path)
        config["grids"] = {**(config.get("grids") or {}), key: record}
        target = path
        save_cresshift(path, groups, config)  # atomic_write: keeps the mode, follows links
    else:
        target = sidecar_path(path)
        grids = {**stored_grids(path), key: record}
        text = json.dumps({"format": SIDECAR_FORMAT, "model": path.name, "grids": grids}, indent=1) + "\n"
        atomic_write(target, text)
    return target


def grid_request(grid: Optional[str], rho: Optional[float], *, model: Union[str, Path], solver: str, nfe: int,
                 schedule: Any) -> tuple[Any, Optional[float]]:
    """(grid, rho) for ``sample`` / ``SRPipeline.run`` from a command line's ``--grid`` word.

    None keeps ``rho``'s grid; ``optimized`` is the grid record stored for (solver, nfe, schedule) with
    ``model`` (a record, so that the ``tuned`` solver gets its coefficients with it); ``rho``, ``lambda``,
    ``karras``, ``logeta``, ``auto`` and grid files pass through (rho only with the families it parametrises:
    ``rho``, ``karras``, ``logeta``).
    """
    if grid is None:
        return None, rho
    if grid == "optimized":
        if solver in ("markov", "adaptive"):
            raise ValueError(f"--grid optimized is for solvers with a time grid; {solver} has none")
        return stored_grid_record(model, solver, nfe, schedule), None
    return grid, (rho if grid in ("rho", "karras", "logeta") else None)

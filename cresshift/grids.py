"""Time grids from t = 1 (the LR end) down to t_min = 1/T (design §6, §6b).

Families, all decreasing with exact endpoints 1 and 1/T:

* ``rho``: the paper's rho grid in t (``rho_grid``);
* ``lambda``: uniform in the log-SNR ``lambda = -log sigma~`` (``lambda_grid``);
* ``karras``: Karras et al.'s rho spacing in ``sigma~`` (``karras_grid``);
* ``logeta``: uniform in ``log eta`` (``log_eta_grid``), the log-time DPM-Solver++ extrapolates in;
  with rho != 1 graded in log eta, ``v_i = 1 - (i/(n-1))^rho`` (rho > 1 crowds steps at the noisy
  end t = 1 and stays uniform at the image end, so it keeps the order of the uniform one).

The last three are spaced in a function of eta (EDM's ``sigma~ = kappa sqrt(eta) / (1 - eta)``,
or eta itself) and mapped back to t through the schedule's exact inverse; they keep
second-order solvers at order 2 on the exact schedule, whose eta(t) is not smooth at t = 1/T. ``make_grid`` resolves a grid request
(a family name, ``"auto"``, an array, a grid file or a parsed grid record) to times. A grid file is
JSON with ``"ts"`` and ``"schedule"`` (the continuous schedule's ``to_config()``); see ``grid_json``.
A record made for the ``tuned`` solver also carries its fitted ``"coefficients"``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol, Sequence, Union

import numpy as np

from .converters import edm_sigma, sqrt_eta_of_sigma
from .schedules import ContinuousSchedule, ResShiftSchedule, as_continuous

__all__ = ["rho_grid", "lambda_grid", "karras_grid", "log_eta_grid", "make_grid", "GridChoice", "GRID_FAMILIES",
           "check_grid", "grid_json", "load_grid", "load_grid_record", "grid_from_record", "sigma_to_t", "schedule_kind",
           "GRID_FORMAT"]

Schedule = Union[ResShiftSchedule, ContinuousSchedule]
GridRequest = Union[None, str, Path, Sequence[float], np.ndarray, Mapping[str, Any]]
GRID_FAMILIES = ("rho", "lambda", "karras", "logeta")
GRID_FORMAT = "cresshift-grid"
KARRAS_RHO = 7.0


def check_rho(rho: float) -> float:
    """rho as a float; raises unless finite and non-zero."""
    if rho == 0 or not np.isfinite(rho):
        raise ValueError(f"rho must be a finite non-zero number (rho=1 is uniform), got rho={rho}")
    return float(rho)


def _check_n(n: int) -> int:
    if int(n) != n or n < 2:
        raise ValueError(f"a grid needs n >= 2 points, got n={n}")
    return int(n)


def rho_grid(n: int, rho: float, t_min: float) -> np.ndarray:
    """``n`` times from exactly 1 down to exactly ``t_min``, rho-spaced (float64, decreasing).

    ``s_i = (1 + i/(n-1) (t_min^(1/rho) - 1))^rho``. rho > 0 uses ``t_i = s_i`` (rho = 1 is
    uniform; larger rho crowds steps near the image end t_min); rho < 0 mirrors inside
    [t_min, 1], ``t_i = 1 + t_min - s_{n-1-i}``, crowding steps near t = 1 (the noisy LR end).
    """
    n = _check_n(n)
    if not 0 < t_min < 1:
        raise ValueError(f"t_min must lie in (0, 1), got {t_min}")
    check_rho(rho)
    i = np.arange(n, dtype=np.float64)
    s = (1 + i / (n - 1) * (t_min ** (1 / rho) - 1)) ** rho
    t = s if rho > 0 else (1 + t_min - s[::-1])
    t = np.array(t, dtype=np.float64)
    t[0], t[-1] = 1.0, t_min  # exact endpoints, whatever the round-off
    return t


def sigma_to_t(sigmas: np.ndarray, schedule: Schedule) -> np.ndarray:
    """t at each EDM ``sigma~`` (design §6b): ``u = 2 sigma~ / (kappa + sqrt(kappa^2 + 4 sigma~^2))``, eta = u^2."""
    sched = as_continuous(schedule)
    u = sqrt_eta_of_sigma(np.asarray(sigmas, np.float64), sched.kappa)
    return np.asarray(sched.t_of_eta(u * u), np.float64)


def _sigma_range(schedule: ContinuousSchedule) -> tuple[float, float]:
    """(sigma~ at t = 1, sigma~ at t = 1/T)."""
    etas = schedule.eta(np.array([1.0, schedule.t_min]))
    hi, lo = (float(v) for v in edm_sigma(etas, schedule.kappa))
    return hi, lo


def _from_sigmas(sigmas: np.ndarray, schedule: ContinuousSchedule) -> np.ndarray:
    """Times for a decreasing sigma~ grid spanning the whole range, with exact endpoints; checked decreasing."""
    t = sigma_to_t(sigmas, schedule)
    t[0], t[-1] = 1.0, schedule.t_min
    return check_grid(t, schedule)


def lambda_grid(n: int, schedule: Schedule) -> np.ndarray:
    """``n`` times from 1 to 1/T uniform in ``lambda = -log sigma~`` (log-SNR), mapped to t exactly."""
    n, sched = _check_n(n), as_continuous(schedule)
    hi, lo = _sigma_range(sched)
    return _from_sigmas(np.exp(np.linspace(math.log(hi), math.log(lo), n)), sched)


def karras_grid(n: int, schedule: Schedule, rho: float = KARRAS_RHO) -> np.ndarray:
    """``n`` times from 1 to 1/T, Karras-rho-spaced in sigma~ (EDM eq. 5), mapped to t exactly.

    ``sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``, rho > 0;
    larger rho crowds steps at small sigma~ (the image end).
    """
    n, sched = _check_n(n), as_continuous(schedule)
    if not (rho > 0 and np.isfinite(rho)):
        raise ValueError(f"the karras grid needs a finite rho > 0 (7 is EDM's), got rho={rho}")
    hi, lo = _sigma_range(sched)
    ramp = np.linspace(0.0, 1.0, n)
    sigmas = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    return _from_sigmas(sigmas, sched)


def log_eta_grid(n: int, schedule: Schedule, rho: float = 1.0) -> np.ndarray:
    """``n`` times from 1 to 1/T spaced in ``log eta``, mapped to t exactly.

    With ``v = (log eta - log eta(1/T)) / (log eta(1) - log eta(1/T))`` in [0, 1] the grid is
    ``v_i = 1 - (i/(n-1))^rho``: rho = 1 is uniform in log eta (= uniform in -log sqrt(eta));
    rho > 1 crowds steps near t = 1 (the noisy LR end) and keeps a non-zero spacing in v at the
    image end, where the exact schedule's ``log eta`` is an affine function of ``(T t - 1)^power``:
    the grid stays smooth in the variables the solvers step in, so solvers keep their order.
    """
    n, sched = _check_n(n), as_continuous(schedule)
    if not (rho > 0 and np.isfinite(rho)):
        raise ValueError(f"the logeta grid needs a finite rho > 0 (1 is uniform in log eta), got rho={rho}")
    eta_hi, eta_lo = (float(v) for v in sched.eta(np.array([1.0, sched.t_min])))
    lo, hi = math.log(eta_lo), math.log(eta_hi)
    v = 1.0 - np.linspace(0.0, 1.0, n) ** float(rho)
    t = np.asarray(sched.t_of_eta(np.exp(lo + v * (hi - lo))), np.float64)
    t[0], t[-1] = 1.0, sched.t_min
    return check_grid(t, sched)


def check_grid(ts: Any, schedule: Schedule, *, min_points: int = 2) -> np.ndarray:
    """``ts`` as a float64 array; raises unless strictly decreasing inside [1/T, 1] with >= min_points times."""
    grid = np.asarray(ts, dtype=np.float64)
    if grid.ndim != 1 or len(grid) < min_points or not np.all(np.diff(grid) < 0):
        raise ValueError(f"a time grid must be a strictly decreasing 1-D list of at least {min_points} times, "
                         f"got {np.array2string(grid, precision=4, threshold=8)}")
    t_min = 1.0 / schedule.T
    if not (grid[0] <= 1 and grid[-1] >= t_min * (1 - 1e-12)):
        raise ValueError(f"a time grid must lie in [1/T, 1] = [{t_min:.6g}, 1], got {grid[0]:.6g} .. {grid[-1]:.6g}")
    return grid


@dataclass(frozen=True)
class GridChoice:
    """A grid family and its parameter (rho for ``rho``, ``karras`` and ``logeta``; None for ``lambda``)."""

    family: str
    rho: Optional[float] = None

    def __str__(self) -> str:
        return self.family if self.rho is None else f"{self.family} (rho={self.rho:g})"


class AutoGrid(Protocol):
    """What ``make_grid("auto", ...)`` needs from a solver: its documented best grid per schedule and size."""

    name: str

    def auto_grid(self, schedule: ContinuousSchedule, n: Optional[int] = None) -> GridChoice: ...


def schedule_kind(schedule: Schedule) -> str:
    """The schedule's family: ``exp``, ``exact`` (official formula) or ``interp`` (PCHIP table)."""
    return str(as_continuous(schedule).to_config()["type"])


def make_grid(grid: GridRequest, n: int, schedule: Schedule, *, rho: Optional[float] = None,
              solver: Optional[AutoGrid] = None) -> np.ndarray:
    """Times for a grid request: ``rho`` | ``lambda`` | ``karras`` | ``logeta`` | ``auto`` | a grid file | a grid
    record (a parsed grid file) | an array.

    ``grid=None`` means ``rho`` when ``rho`` is given, else ``auto``. ``n`` is the number of
    points (for an array or a file, the most it may have). ``rho`` parametrises the ``rho``
    (default 1, uniform), ``karras`` (default 7) and ``logeta`` (default 1, uniform) families. ``auto`` is ``solver``'s documented
    best grid on this schedule (``solver``: a ``cresshift.solvers.SOLVERS`` entry).
    """
    sched = as_continuous(schedule)
    if grid is None:
        grid = "auto" if rho is None else "rho"
    if isinstance(grid, str) and grid == "auto":
        if solver is None:
            raise ValueError("grid='auto' is the best grid for a solver: pass solver= (a cresshift.solvers.SOLVERS entry)")
        if rho is not None:
            raise ValueError(f"rho={rho:g} asks for a rho grid; grid='auto' chooses its own (pass grid='rho' or no rho)")
        choice = solver.auto_grid(sched, n)
        return make_grid(choice.family, n, sched, rho=choice.rho)
    if isinstance(grid, str) and grid in GRID_FAMILIES:
        return _family_grid(grid, n, sched, rho)
    if isinstance(grid, (str, Path)):
        if not Path(grid).suffix and str(grid).isidentifier():
            raise ValueError(f"unknown grid {str(grid)!r}; valid: {', '.join(GRID_FAMILIES)}, auto, "
                             "a grid JSON file or an array of times")
        grid = load_grid(grid, sched)
    elif isinstance(grid, Mapping):
        grid = grid_from_record(grid, sched)
    if rho is not None:
        raise ValueError(f"rho={rho:g} sets the rho, karras and logeta grids; an explicit grid takes none")
    ts = check_grid(grid, sched)
    if len(ts) > _check_n(n):
        raise ValueError(f"the grid has {len(ts)} points, more than the {n} this NFE budget allows")
    return ts


def _family_grid(family: str, n: int, schedule: ContinuousSchedule, rho: Optional[float]) -> np.ndarray:
    """One of GRID_FAMILIES with n points."""
    if family == "rho":
        return rho_grid(n, 1.0 if rho is None else rho, schedule.t_min)
    if family == "karras":
        return karras_grid(n, schedule, KARRAS_RHO if rho is None else rho)
    if family == "logeta":
        return log_eta_grid(n, schedule, 1.0 if rho is None else rho)
    if rho is not None:
        raise ValueError(f"rho={rho:g} sets the rho, karras and logeta grids; the {family} grid takes none")
    return lambda_grid(n, schedule)


def grid_json(ts: Sequence[float], schedule: Schedule, **meta: Any) -> str:
    """A grid file's text: ``{"format", "ts", "schedule", **meta}`` (meta: e.g. solver, nfe, seed)."""
    sched = as_continuous(schedule)
    ts = check_grid(ts, sched)
    record = dict(format=GRID_FORMAT, ts=[float(t) for t in ts], schedule=sched.to_config(), **meta)
    return json.dumps(record, indent=1) + "\n"


def load_grid(path: Union[str, Path], schedule: Schedule) -> np.ndarray:
    """The times in a grid file written with ``grid_json``; raises if it was made for another schedule."""
    return grid_from_record(load_grid_record(path), schedule, f"grid file {path}")


def load_grid_record(path: Union[str, Path]) -> dict[str, Any]:
    """A grid file's parsed record (unchecked: ``grid_from_record`` checks it against a schedule)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"grid file {path} does not exist") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a cresshift grid file (JSON with 'ts' and 'schedule'): {err}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a cresshift grid file (a JSON object with 'ts' and 'schedule')")
    return record


def grid_from_record(record: Any, schedule: Schedule, source: str = "the grid") -> np.ndarray:
    """The times of a parsed grid record (``grid_json``'s fields); raises if made for another schedule."""
    try:
        ts, made_for = record["ts"], record["schedule"]
    except (KeyError, TypeError) as err:
        raise ValueError(f"{source} is not a cresshift grid (JSON with 'ts' and 'schedule'): missing {err}") from None
    sched = as_continuous(schedule)
    if not _same_config(made_for, sched.to_config()):
        raise ValueError(f"{source} was made for schedule {_short(made_for)}, not {_short(sched.to_config())}; "
                         "make a grid for this schedule (cresshift optimize-grid) or pass another grid")
    return check_grid(ts, sched)


def _same_config(a: Any, b: Any) -> bool:
    """Equal schedule configs, numbers to 1e-9 relative."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_config(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_config(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _short(config: Any) -> str:
    return json.dumps(config, separators=(",", ":"))[:160]


def __getattr__(name: str) -> Any:
    """``optimize_grid`` lives in the solvers layer (it runs ``sample``); imported on first use, no cycle."""
    if name == "optimize_grid":
        from .solvers.optimize import optimize_grid

        return optimize_grid
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

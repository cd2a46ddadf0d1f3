"""Bench rows and the plan: which (solver, rho, NFE, options) rows a sweep runs, checked against the pipelines."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from ..checks import check_rho
from ..runtime import resolve_device, torch_dtype
from .data import Item, bundled_testset, dataset

if TYPE_CHECKING:
    from .settings import BenchSettings

TABLE1_SOLVERS = ("euler", "heun")
TABLE1_RHOS = (1.0, 4.0, 8.0, -4.0, -8.0)
TABLE1_NFE = 15
GRIDLESS = ("markov", "adaptive")  # solvers whose grid rho does not set
BICUBIC = "bicubic"  # the solver name of the bicubic row: no network, NFE 0


@dataclass(frozen=True)
class Row:
    """One table row: a solver at an NFE budget on a rho-grid, with solver options.

    ``baseline`` rows run on the baseline model (the paper's original ResShift) and
    ``schedule`` names a pipeline schedule variant (None: the sweep's ``--schedule``).
    """

    solver: str
    nfe: Optional[int]            # None on a baseline row: T of the baseline model (see ``resolve_rows``)
    rho: Optional[float] = None
    options: tuple[tuple[str, Any], ...] = ()
    baseline: bool = False
    schedule: Optional[str] = None
    grid: Optional[str] = None    # a --grid word (lambda, karras, auto, optimized, FILE); None: the rho grid

    @property
    def label(self) -> str:
        return "Baseline" if self.baseline else self.solver

    @property
    def rho_text(self) -> str:
        return self.grid if self.grid is not None else "" if self.rho is None else f"{self.rho:g}"

    @property
    def key(self) -> str:
        """Stable identity of the row in the results files."""
        opts = ",".join(f"{k}={v}" for k, v in self.options)
        return (f"{'baseline' if self.baseline else 'model'}|{self.solver}|nfe={self.nfe}|rho={self.rho_text or '-'}"
                f"|schedule={self.schedule or '-'}|{opts}" + (f"|grid={self.grid}" if self.grid is not None else ""))

    def describe(self) -> str:
        opts = "".join(f" {k}={v}" for k, v in self.options)
        rho = f" grid={self.grid}" if self.grid is not None else f" rho={self.rho_text}" if self.rho is not None else ""
        return f"{self.label}{' (markov)' if self.baseline else ''}{rho} nfe={self.nfe}{opts}"


def table1_rows(nfe: int = TABLE1_NFE, *, T: Optional[int] = None) -> list[Row]:
    """The paper's Table 1: Baseline (markov at NFE = T), then euler and heun x rho {1, 4, 8, -4, -8} at ``nfe``."""
    return sweep_rows(TABLE1_SOLVERS, TABLE1_RHOS, (nfe,), baseline=True, T=T)


def sweep_rows(solvers: Sequence[str], rhos: Sequence[float], nfes: Sequence[int], *, baseline: bool = True,
               T: Optional[int] = None, options: Optional[dict[str, Any]] = None, grid: Optional[str] = None) -> list[Row]:
    """Baseline row (markov at NFE = T; T None: resolved from the baseline model), then solver-major,
    NFE, rho rows; gridless solvers (markov, adaptive) get one row per NFE.

    ``options`` go to every row whose solver accepts them; an option no chosen solver accepts raises.
    ``grid`` (other than None / ``rho``) replaces the rho grids: one row per solver and NFE on that grid.
    """
    from ..solvers import SOLVERS

    options = dict(options or {})
    for r in rhos:
        check_rho(r)
    for s in solvers:
        if s not in SOLVERS:
            raise ValueError(f"unknown solver {s!r}; valid solvers: {', '.join(SOLVERS)}")
    for k in options:
        if not any(k in SOLVERS[s].options() for s in solvers):
            raise ValueError(f"no chosen solver takes the option {k!r} ({', '.join(solvers)})")
    for n in nfes:
        if int(n) != n or n < 1:
            raise ValueError(f"NFE must be a positive integer, got {n}")
    rows = [Row("markov", T, baseline=True, schedule="discrete")] if baseline else []
    for s in dict.fromkeys(solvers):
        opts = tuple(sorted((k, v) for k, v in options.items() if k in SOLVERS[s].options()))
        for n in dict.fromkeys(nfes):
            if s in GRIDLESS:
                rows.append(Row(s, int(n), None, opts))
            elif grid not in (None, "rho"):
                rows.append(Row(s, int(n), None, opts, grid=grid))
            else:
                rows.extend(Row(s, int(n), float(r), opts) for r in dict.fromkeys(rhos))
    return rows


def bicubic_row() -> Row:
    """The reference row: the bicubic x sf upsampling of the LR input (``bicubic_sr``), scored like every row, NFE 0."""
    return Row(BICUBIC, 0)


def requested_rows(solvers: Optional[Sequence[str]] = None, rhos: Optional[Sequence[float]] = None,
                   nfes: Optional[Sequence[int]] = None, *, baseline: bool = True,
                   options: Optional[dict[str, Any]] = None, grid: Optional[str] = None,
                   bicubic: bool = False) -> list[Row]:
    """The rows of ``cresshift bench``: Table 1 when no solver, rho, NFE, option or grid is given (without its
    Baseline row if ``baseline`` is False), else ``sweep_rows`` with Table 1's values for what is not given;
    ``bicubic`` puts the bicubic row first."""
    first = [bicubic_row()] if bicubic else []
    if solvers is None and rhos is None and nfes is None and not options and grid is None:
        rows = table1_rows()
        return first + (rows if baseline else rows[1:])
    return first + sweep_rows(solvers or TABLE1_SOLVERS, rhos or TABLE1_RHOS, nfes or (TABLE1_NFE,),
                              baseline=baseline, options=options, grid=grid)

def row_grid(row: Row, model: str, schedule: Any) -> tuple[Any, Optional[float]]:
    """(grid, rho) a row samples with (``optimized``: the grid stored with ``model``)."""
    from ..models.stored_grids import grid_request

    rho = row.rho if row.rho is not None or row.grid is not None else 1.0
    return grid_request(row.grid, rho, model=model, solver=row.solver, nfe=row.nfe, schedule=schedule)


def check_rows(rows: Sequence[Row], schedule_of: Callable[[Row], Any], model: str = "bundled") -> None:
    """Raise one ValueError naming the first row whose grid cannot be built (NFE too small, rho 0, no stored grid ...)."""
    from ..solvers import SOLVERS, grid_for

    for row in rows:
        if row.solver == BICUBIC:
            continue
        if row.solver not in SOLVERS:
            raise ValueError(f"unknown solver {row.solver!r}; valid solvers: {', '.join(SOLVERS)}")
        try:
            grid, rho = row_grid(row, model, schedule_of(row))
            grid_for(row.solver, schedule_of(row), row.nfe, rho, grid)
        except ValueError as err:
            raise ValueError(f"row {row.describe()}: {err}") from None


def load_pipelines(s: BenchSettings, rows: Sequence[Row], device: Any) -> dict[str, Any]:
    """{"model": pipeline, "baseline": pipeline}; ``baseline_model="auto"`` pairs the bundled
    continuous model with ``bundled-discrete`` (the paper's setting) and any other model with itself.
    On the CPU they compute in float32 (``cpu_bf16=()``), so a table does not depend on the CPU's bfloat16 support."""
    from ..models.pipeline import BUNDLED, bundled_path, load_pipeline

    dtype = torch_dtype(s.dtype)
    exact = dict(device=device, dtype=dtype, cpu_bf16=())
    main = load_pipeline(s.model, preset=s.preset, autoencoder=s.autoencoder, **exact)
    pipes = {"model": main, "baseline": main}
    if any(r.baseline for r in rows):
        if s.baseline_model == "auto":
            if s.model in ("bundled", "bundled-continuous") and bundled_path("bundled-discrete").is_file():
                pipes["baseline"] = load_pipeline("bundled-discrete", **exact)
        elif s.baseline_model not in ("same", s.model):
            name = s.baseline_model
            official = name not in BUNDLED and not name.endswith(".safetensors")
            pipes["baseline"] = load_pipeline(name, preset=s.preset if official else None,
                                              autoencoder=s.autoencoder if official else None, **exact)
    return pipes


def baseline_name(s: BenchSettings, pipelines: dict[str, Any]) -> str:
    """The name of the model the Baseline rows ran on."""
    if pipelines["baseline"] is pipelines["model"]:
        return s.model
    return "bundled-discrete" if s.baseline_model == "auto" else s.baseline_model


@dataclass
class Plan:
    """A checked sweep: rows with the baseline NFE resolved, the dataset, the pipelines, the device."""

    rows: list[Row]
    items: list[Item]
    pipelines: dict[str, Any]
    device: Any
    sf: int
    hr: str

    def pipe(self, row: Row) -> Any:
        return self.pipelines["baseline" if row.baseline else "model"]


def plan(settings: BenchSettings, rows: Sequence[Row], *, pipelines: Optional[dict[str, Any]] = None,
         local_rank: int = 0) -> Plan:
    """Load (or take) the pipelines, resolve and check every row's grid, list the dataset; raise ValueError early."""
    if not rows:
        raise ValueError("the sweep has no rows")
    if settings.lr is not None and settings.hr is None:
        raise ValueError("--lr needs --hr (the HR references; pairs are matched by file name)")
    device = resolve_device(settings.device, local_rank)
    if pipelines is None:
        pipelines = load_pipelines(settings, rows, device)
    pipelines = {"model": pipelines["model"], "baseline": pipelines.get("baseline", pipelines["model"])}
    rows = [replace(r, nfe=pipelines["baseline"].discrete_schedule.T) if r.baseline and r.nfe is None else r
            for r in rows]
    rows = list(dict.fromkeys(rows))
    p = Plan(rows, [], pipelines, device, 0, "")
    check_rows(rows, lambda r: p.pipe(r).schedule_for(r.schedule or settings.schedule), settings.model)
    sfs = {pp.sf for pp in pipelines.values()}
    if len(sfs) != 1:
        raise ValueError(f"the model and the baseline model have different scale factors {sorted(sfs)}")
    p.sf = sfs.pop()
    p.hr = settings.hr or str(bundled_testset())
    if settings.hr is None and not Path(p.hr).is_dir():
        raise ValueError(f"the bundled held-out tiles are missing from this installation ({p.hr}); pass --hr DIR")
    p.items = dataset(p.hr, settings.lr, limit=settings.limit, seed=settings.seed)
    return p

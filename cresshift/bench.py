"""NFE-matched benchmark sweeps: rows of (solver, rho, NFE, options) x images -> metric tables.

The default sweep is the paper's Table 1 layout: a ``Baseline`` row (the Markov sampler at
NFE = T on the baseline model's discrete chain), then Euler and Heun for rho in
{1, 4, 8, -4, -8} at NFE 15 (design §7: Heun there has 8 grid points, 7 steps).

Seeds: image ``i`` of the sorted dataset (its index before ``limit`` and sharding) runs with
seed ``seed + i`` in every row, one image per pipeline call, so rows differ only by the solver
and no result depends on ``limit``, on the number of processes or on an interruption. With
``seeds = K`` every image runs K times (draws k = 0..K-1; draw 0 is ``seed + i``, draw k > 0 a
hash of (seed, i, k): ``draw_seed``), the same K seeds in every row.

Uncertainty (``cresshift/stats.py``): every metric cell is the mean with a 95 % percentile
bootstrap interval over images (seeds nested), and every row is compared with the Baseline
row by the paired bootstrap of the per-(image, seed) differences; a cell is marked ``*`` when
that interval excludes zero.

Resumable: every (row, image) result is appended to ``OUT/results.jsonl`` (rank r > 0:
``results.rank<r>.jsonl``) as soon as it is computed, flushed and fsynced; a rerun with the
same ``OUT`` skips what is there (``OUT/run.json`` guards against mixing different runs).
Under ``torchrun`` images are sharded across ranks (``i % world == rank``) and the new
records are gathered on rank 0 (gloo on CPU, NCCL on CUDA), which builds the table and writes
``results.json``, ``table.md``, ``table.csv`` and one plot per metric (matplotlib, optional).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from .checks import check_rho
from .data.photos import bundled_testset
from .runtime import Distributed, resolve_device, torch_dtype, versions

__all__ = ["Row", "BenchSettings", "Item", "BenchResult", "Plan", "TABLE1_RHOS", "TABLE1_SOLVERS", "TABLE1_NFE",
           "table1_rows", "sweep_rows", "check_rows", "dataset", "bundled_testset", "load_pipelines", "plan",
           "run_bench", "summarize", "write_outputs", "to_markdown", "to_csv", "METRICS", "draw_seed",
           "perception_distortion_plot"]

TABLE1_SOLVERS = ("euler", "heun")
TABLE1_RHOS = (1.0, 4.0, 8.0, -4.0, -8.0)
TABLE1_NFE = 15
GRIDLESS = ("markov", "adaptive")  # solvers whose grid rho does not set
#: (key, column heading, higher is better, digits)
METRICS = (("lpips", "LPIPS", False, 3), ("ssim_y", "SSIM-Y", True, 4), ("psnr_y", "PSNR-Y", True, 2),
           ("psnr_rgb", "PSNR-RGB", True, 2))


# --- rows --------------------------------------------------------------------------------------
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
    from .solvers import SOLVERS

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


def row_grid(row: Row, model: str, schedule: Any) -> tuple[Any, Optional[float]]:
    """(grid, rho) a row samples with (``optimized``: the grid stored with ``model``)."""
    from .models.stored_grids import grid_request

    rho = row.rho if row.rho is not None or row.grid is not None else 1.0
    return grid_request(row.grid, rho, model=model, solver=row.solver, nfe=row.nfe, schedule=schedule)


def check_rows(rows: Sequence[Row], schedule_of: Callable[[Row], Any], model: str = "bundled") -> None:
    """Raise one ValueError naming the first row whose grid cannot be built (NFE too small, rho 0, no stored grid ...)."""
    from .solvers import SOLVERS, grid_for

    for row in rows:
        if row.solver not in SOLVERS:
            raise ValueError(f"unknown solver {row.solver!r}; valid solvers: {', '.join(SOLVERS)}")
        try:
            grid, rho = row_grid(row, model, schedule_of(row))
            grid_for(row.solver, schedule_of(row), row.nfe, rho, grid)
        except ValueError as err:
            raise ValueError(f"row {row.describe()}: {err}") from None


# --- data --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One test image: its index in the sorted dataset, name, HR file, paired LR file (or None), seed."""

    index: int
    name: str
    hr: str
    lr: Optional[str]
    seed: int


def _named(inputs: str) -> list[tuple[str, Path]]:
    from .data.io import list_images

    root = Path(inputs)
    files = list_images([inputs])
    if root.is_dir():
        return [(p.relative_to(root).as_posix(), p) for p in files]
    return [(p.name, p) for p in files]


def dataset(hr: str, lr: Optional[str] = None, *, limit: Optional[int] = None, seed: int = 0) -> list[Item]:
    """HR images (sorted; LR made by bicubic x sf) or HR/LR pairs matched by relative name without extension."""
    hrs = _named(hr)
    lrs: dict[str, Path] = {}
    if lr is not None:
        for name, p in _named(lr):
            lrs[str(Path(name).with_suffix(""))] = p
    items = []
    for i, (name, p) in enumerate(hrs):
        lr_path = None
        if lr is not None:
            stem = str(Path(name).with_suffix(""))
            if stem not in lrs:
                raise ValueError(f"no LR image for HR {name!r} in {lr} (pairs match by file name, any extension)")
            lr_path = str(lrs[stem])
        items.append(Item(i, name, str(p), lr_path, draw_seed(seed, i, 0)))
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be at least 1, got {limit}")
        items = items[:limit]
    return items


def draw_seed(seed: int, index: int, draw: int) -> int:
    """Noise seed of draw ``draw`` of image ``index``: seed + index for draw 0, else a 63-bit hash of all three.

    It depends on nothing else (not the row, the limit or the process), so rows stay paired.
    """
    if draw == 0:
        return int(seed) + int(index)
    digest = hashlib.sha256(f"cresshift-bench:{int(seed)}:{int(index)}:{int(draw)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def load_item(item: Item, sf: int) -> tuple[Any, Any]:
    """(lr [3, h, w], hr [3, sf h, sf w]) in [-1, 1]; --hr-only data: HR cropped to a multiple of sf, LR by bicubic."""
    from .data.io import bicubic_down, load_image

    hr = load_image(item.hr)
    if item.lr is None:
        H, W = hr.shape[-2] // sf * sf, hr.shape[-1] // sf * sf
        hr = hr[:, :H, :W]
        return bicubic_down(hr, sf), hr
    lr = load_image(item.lr)
    if tuple(hr.shape[-2:]) != (lr.shape[-2] * sf, lr.shape[-1] * sf):
        raise ValueError(f"HR {item.name} is {hr.shape[-1]}x{hr.shape[-2]} px but its LR x{sf} is "
                         f"{lr.shape[-1] * sf}x{lr.shape[-2] * sf} px")
    return lr, hr


# --- settings and results ----------------------------------------------------------------------
@dataclass(frozen=True)
class BenchSettings:
    """Everything that defines a sweep except its rows (stored in results.json and run.json)."""

    model: str = "bundled"
    preset: Optional[str] = None
    autoencoder: Optional[str] = None
    baseline_model: str = "auto"       # auto | same | PATH (auto: bundled-discrete for the bundled model)
    hr: Optional[str] = None           # None: the bundled held-out tiles
    lr: Optional[str] = None
    limit: Optional[int] = None
    seed: int = 0
    seeds: int = 1                     # noise draws per image (K); not part of the identity: more draws extend a run
    schedule: str = "default"
    lpips_net: str = "alex"
    lpips_backbone: Optional[str] = None
    crop_border: int = 0               # px shaved from every side before PSNR / SSIM (LPIPS: whole image)
    device: str = "auto"
    dtype: Optional[str] = None
    tile: Optional[int] = None
    context_pad: Optional[int] = None  # mirrored border context (network px); None: each model's own
    grid: Optional[str] = None         # --grid of the non-baseline rows (None: rho grids)
    out: Optional[str] = None
    fresh: bool = False
    command: str = ""

    def identity(self) -> dict[str, Any]:
        """What must match for a rerun to reuse results in ``out``."""
        keys = ("model", "preset", "autoencoder", "baseline_model", "hr", "lr", "seed", "schedule", "lpips_net",
                "lpips_backbone", "crop_border", "dtype", "tile", "context_pad")
        out = {k: getattr(self, k) for k in keys}
        for k in ("model", "autoencoder", "baseline_model", "hr", "lr", "lpips_backbone"):
            if out[k] is not None and Path(out[k]).exists():  # the same files, wherever the run starts from
                out[k] = str(Path(out[k]).resolve())
        for k in ("model", "autoencoder", "baseline_model"):  # the same weights: a file replaced in place is another run
            out[f"{k}_sha256"] = _weights_digest(getattr(self, k))
        if self.grid is not None:  # the grid's content: a grid file, or the model's grids sidecar
            from .models.stored_grids import model_file, sidecar_path

            source = sidecar_path(model_file(self.model)) if self.grid == "optimized" else Path(self.grid)
            out["grid"] = self.grid
            out["grid_sha256"] = _weights_digest(str(source)) if source.is_file() else None
        return out


def _weights_digest(name: Optional[str]) -> Optional[str]:
    """sha256 of a weights file (``bundled`` / ``bundled-discrete`` resolved to the package's file); None if there is none."""
    if name is None:
        return None
    path = Path(name)
    if not path.is_file():
        from .models.pipeline import BUNDLED, bundled_path

        if name not in BUNDLED or not bundled_path(name).is_file():
            return None
        path = bundled_path(name)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class BenchResult:
    """The merged sweep: one summary dict per row, every per-image record, notes, run metadata."""

    table: list[dict[str, Any]]
    records: list[dict[str, Any]]
    items: list[Item]
    rows: list[Row]
    notes: list[str]
    meta: dict[str, Any]
    lpips_name: str
    computed: int = 0                  # (row, image) results computed by this run (not reused)
    outputs: list[str] = field(default_factory=list)


def _device_info(device: Any) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"device": str(device)}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
    else:
        info["name"] = platform.processor() or platform.machine()
        info["threads"] = torch.get_num_threads()
    return info


# --- the record store --------------------------------------------------------------------------
class RecordStore:
    """Per-image results as JSON lines, appended and fsynced as they finish; one file per rank."""

    def __init__(self, out: Optional[Path], rank: int = 0) -> None:
        self.out = out
        self.path = None if out is None else out / ("results.jsonl" if rank == 0 else f"results.rank{rank}.jsonl")

    def files(self) -> list[Path]:
        return [] if self.out is None else sorted(self.out.glob("results*.jsonl"))

    def load(self) -> dict[tuple[str, str, int], dict[str, Any]]:
        """Every complete record in ``out`` by (row, image, draw) (a line cut short by a kill is ignored), first one wins."""
        from .data.io import restore_nonfinite

        done: dict[tuple[str, str, int], dict[str, Any]] = {}
        for f in self.files():
            for line in f.read_text(encoding="utf-8").splitlines():
                try:
                    rec = restore_nonfinite(json.loads(line))
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict) and "row" in rec and "image" in rec:
                    done.setdefault(_record_key(rec), rec)
        return done

    def append(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        from .data.io import strict_json

        line = strict_json(record) + "\n"
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, "rb") as fh:  # a line cut short by a kill: start on a fresh line
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    line = "\n" + line
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


def _record_key(rec: dict[str, Any]) -> tuple[str, str, int]:
    return rec["row"], rec["image"], int(rec.get("draw", 0))


# --- the sweep ---------------------------------------------------------------------------------
Progress = Callable[[int, int, str], None]


def load_pipelines(s: BenchSettings, rows: Sequence[Row], device: Any) -> dict[str, Any]:
    """{"model": pipeline, "baseline": pipeline}; ``baseline_model="auto"`` pairs the bundled
    continuous model with ``bundled-discrete`` (the paper's setting) and any other model with itself."""
    from .models.pipeline import BUNDLED, bundled_path, load_pipeline

    dtype = torch_dtype(s.dtype)
    main = load_pipeline(s.model, preset=s.preset, autoencoder=s.autoencoder, device=device, dtype=dtype)
    pipes = {"model": main, "baseline": main}
    if any(r.baseline for r in rows):
        if s.baseline_model == "auto":
            if s.model in ("bundled", "bundled-continuous") and bundled_path("bundled-discrete").is_file():
                pipes["baseline"] = load_pipeline("bundled-discrete", device=device, dtype=dtype)
        elif s.baseline_model not in ("same", s.model):
            name = s.baseline_model
            official = name not in BUNDLED and not name.endswith(".safetensors")
            pipes["baseline"] = load_pipeline(name, preset=s.preset if official else None,
                                              autoencoder=s.autoencoder if official else None,
                                              device=device, dtype=dtype)
    return pipes


def baseline_name(s: BenchSettings, pipelines: dict[str, Any]) -> str:
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


def _prepare_out(settings: BenchSettings, store: RecordStore, dist: Distributed) -> None:
    """Create ``out``; refuse results of another run; ``fresh`` deletes the old records first.

    A run.json with no records beside it (a run that failed before its first result) is
    replaced, so the corrected command can start.
    """
    from .data.io import atomic_write, remove_stale_temps, strict_json

    out = store.out
    assert out is not None
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / "run.json"
    if dist.rank == 0:
        remove_stale_temps(out)
    if dist.rank == 0 and not settings.fresh and run_file.is_file() and not store.load():
        run_file.unlink()
    if settings.fresh and dist.rank == 0:
        for f in store.files():
            f.unlink()
        run_file.unlink(missing_ok=True)
    dist.barrier()
    if run_file.is_file():
        before = json.loads(run_file.read_text(encoding="utf-8"))
        now = settings.identity()
        diff = [k for k, v in now.items() if before.get(k) != v]
        if diff:
            k = diff[0]
            raise ValueError(f"{out} holds results of another run ({k}: {before.get(k)!r} there, {now[k]!r} now); "
                             f"use another --out, or --fresh to discard them")
    dist.barrier()
    if dist.rank == 0 and not run_file.is_file():
        atomic_write(run_file, strict_json(settings.identity(), indent=1))


def run_bench(settings: BenchSettings, rows: Sequence[Row], *, pipelines: Optional[dict[str, Any]] = None,
              progress: Optional[Progress] = None, log: Optional[Callable[[str], None]] = None
              ) -> Optional[BenchResult]:
    """Run the sweep (resuming from ``settings.out``); rank 0 returns the merged result, other ranks None.

    ``pipelines`` ({"model": p, "baseline": p}) replaces loading (tests, notebooks). Each
    (row, image) is one ``pipeline.run`` on one image with the image's seed.
    """
    import torch

    from .metrics import LPIPSMetric, conventions, evaluate_pair

    log = log or (lambda msg: None)
    dev_kind = "cuda" if settings.device.startswith("cuda") or (settings.device == "auto" and torch.cuda.is_available()) \
        else "cpu"
    dist = Distributed(dev_kind)
    try:
        p = plan(settings, rows, pipelines=pipelines, local_rank=dist.local_rank)
        shard = p.items[dist.rank::dist.world]
        for item in shard:  # every input read once before the first network call
            load_item(item, p.sf)
        lpips = LPIPSMetric(settings.lpips_net, backbone=settings.lpips_backbone, device=p.device)
        notes = [] if lpips.available else [lpips.reason]

        store = RecordStore(Path(settings.out) if settings.out else None, dist.rank)
        if store.out is not None:
            _prepare_out(settings, store, dist)
        done = store.load()

        # The work: every (image, draw, row) of this rank's shard that is not done yet.
        draws = range(settings.seeds)
        total = len(shard) * len(draws) * len(p.rows)
        finished = sum((r.key, it.name, k) in done for it in shard for k in draws for r in p.rows)
        if finished:
            log(f"resuming: {finished} of {total} results are already in {store.out}")
        if progress:
            progress(finished, total, "")
        new: list[dict[str, Any]] = []
        for item, k in ((it, k) for it in shard for k in draws):
            todo = [r for r in p.rows if (r.key, item.name, k) not in done]
            if not todo:
                continue
            lr, hr = load_item(item, p.sf)
            seed = draw_seed(settings.seed, item.index, k)
            for row in todo:
                t0 = time.perf_counter()
                grid, rho = row_grid(row, settings.model, p.pipe(row).schedule_for(row.schedule or settings.schedule))
                res = p.pipe(row).run(lr[None], solver=row.solver, nfe=row.nfe, rho=rho, grid=grid, seed=seed,
                                      schedule=row.schedule or settings.schedule, tile=settings.tile,
                                      context_pad=settings.context_pad, **dict(row.options))
                seconds = time.perf_counter() - t0
                sr = res.sr.float().cpu()
                if tuple(sr.shape[-2:]) != tuple(hr.shape[-2:]):
                    raise ValueError(f"the SR of {item.name} is {sr.shape[-1]}x{sr.shape[-2]} px but its HR is "
                                     f"{hr.shape[-1]}x{hr.shape[-2]} px")
                vals = evaluate_pair(sr, hr[None], lpips, crop_border=settings.crop_border)
                rec = {"row": row.key, "image": item.name, "index": item.index, "seed": seed,
                       **({"draw": k} if k else {}), "nfe": int(res.nfe), "seconds": seconds,
                       "seconds_split": {k: float(v) for k, v in res.seconds.items()}}
                for key, *_ in METRICS:
                    rec[key] = float(vals[key][0]) if key in vals else None
                store.append(rec)
                new.append(rec)
                finished += 1
                if progress:
                    progress(finished, total, f"{item.name}{f' #{k}' if k else ''}: {row.describe()}")

        # Merge on rank 0.
        gathered = dist.gather(new)
        if dist.rank != 0:
            return None
        merged = dict(done)
        for part in gathered:
            for rec in part:
                merged.setdefault(_record_key(rec), rec)
        records = [merged[(r.key, it.name, k)] for r in p.rows for it in p.items for k in draws
                   if (r.key, it.name, k) in merged]
        meta = {"settings": asdict(settings), "data": p.hr, "rows": [asdict(r) for r in p.rows],
                "images": [asdict(it) for it in p.items], "versions": versions(), "device": _device_info(p.device),
                "world_size": dist.world, "sf": p.sf,
                "lpips": {"name": lpips.name, "available": lpips.available, "reason": lpips.reason},
                "conventions": conventions(settings.crop_border, lpips if lpips.available else None),
                "models": {"model": settings.model, "baseline": baseline_name(settings, p.pipelines)},
                "seeds": "image i of the sorted dataset (before --limit and sharding) uses seed + i in every row; "
                         "draw k > 0 of it (--seeds) uses draw_seed(seed, i, k)",
                "intervals": INTERVALS_NOTE}
        result = BenchResult(table=summarize(p.rows, records, p.items, seeds=settings.seeds), records=records,
                             items=p.items, rows=p.rows,
                             notes=notes, meta=meta, lpips_name=lpips.name,
                             computed=sum(len(part) for part in gathered))
        if store.out is not None:
            result.outputs = write_outputs(result, store.out)
        return result
    finally:
        dist.close()


INTERVALS_NOTE = ("± is half the width of the 95 % percentile bootstrap interval over images (seeds nested); "
                  "* marks a paired difference to the Baseline row (same images and seeds) whose 95 % paired "
                  "bootstrap interval excludes zero")


def summarize(rows: Sequence[Row], records: Iterable[dict[str, Any]], items: Sequence[Item], *,
              seeds: int = 1) -> list[dict[str, Any]]:
    """Mean of every metric per row over the images and ``seeds`` draws, NFE actually used, compute seconds, images/s.

    LPIPS is None (shown "n/a") unless every image of the row has it. Complete rows also get
    ``<metric>_ci`` (the 95 % bootstrap interval) and, beside a Baseline row, ``vs_baseline``:
    per metric the mean paired difference row - Baseline, its interval and whether it excludes 0.
    """
    by_row: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_row.setdefault(rec["row"], []).append(rec)
    names = {it.name for it in items}
    table = []
    grids: dict[str, dict[str, Any]] = {}
    for row in rows:
        recs = [r for r in by_row.get(row.key, []) if r["image"] in names and int(r.get("draw", 0)) < seeds]
        n = len(recs)
        entry: dict[str, Any] = {"label": row.label, "solver": row.solver, "rho": row.rho, "nfe_budget": row.nfe,
                                 "schedule": row.schedule, "options": dict(row.options), "baseline": row.baseline,
                                 "images": len({r["image"] for r in recs}), "samples": n,
                                 "complete": n == len(items) * seeds}
        used = sorted({int(r["nfe"]) for r in recs})
        entry["nfe"] = used[0] if len(used) == 1 else (f"{used[0]}-{used[-1]}" if used else None)
        for key, *_ in METRICS:
            vals = [r.get(key) for r in recs]
            entry[key] = (sum(vals) / n) if n and all(v is not None for v in vals) else None
        secs = sum(float(r["seconds"]) for r in recs)
        entry["seconds"] = secs
        entry["images_per_s"] = (n / secs) if secs > 0 else None
        grids[row.key] = _metric_grids(recs, items, seeds) if entry["complete"] else {}
        for key, *_ in METRICS:
            ci = _interval(grids[row.key].get(key))
            entry[f"{key}_ci"] = None if ci is None else [ci.lo, ci.hi]
        table.append(entry)
    base = next((r for r in rows if r.baseline), None)
    for row, entry in zip(rows, table):
        if base is not None and row is not base:
            entry["vs_baseline"] = {key: _difference(grids[row.key].get(key), grids[base.key].get(key))
                                    for key, *_ in METRICS}
    return table


def _metric_grids(recs: Sequence[dict[str, Any]], items: Sequence[Item], seeds: int) -> dict[str, Any]:
    """Per metric the values[image, draw] array of a complete row (metrics some image lacks are left out)."""
    import numpy as np

    at = {(r["image"], int(r.get("draw", 0))): r for r in recs}
    grids = {}
    for key, *_ in METRICS:
        vals = [[at[(it.name, k)].get(key) for k in range(seeds)] for it in items]
        if all(v is not None for row in vals for v in row):
            grids[key] = np.asarray(vals, dtype=np.float64)
    return grids


def _interval(grid: Any) -> Any:
    """The 95 % bootstrap interval of a grid's mean (None without a grid or with an infinite value)."""
    import numpy as np

    from .stats import mean_interval

    if grid is None or not np.isfinite(grid).all():
        return None
    return mean_interval(grid)


def _difference(grid: Any, base: Any) -> Optional[dict[str, Any]]:
    """{"diff", "ci", "significant"}: the paired difference grid - base, or None where either is missing."""
    import numpy as np

    from .stats import paired_difference

    if grid is None or base is None or not (np.isfinite(grid).all() and np.isfinite(base).all()):
        return None
    d = paired_difference(grid, base)
    return {"diff": d.mean, "ci": [d.lo, d.hi], "significant": d.significant}


# --- writers -----------------------------------------------------------------------------------
def _fmt(v: Any, digits: int) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.{digits}f}"


def headings(lpips_name: str) -> list[str]:
    return ["solver", "rho", "NFE", f"{lpips_name} ↓", "SSIM-Y ↑", "PSNR-Y ↑", "PSNR-RGB ↑", "time (s)", "img/s"]


def table_cells(entry: dict[str, Any]) -> list[str]:
    """The formatted cells of one row (as in table.md and the terminal)."""
    cells = [entry["label"], "" if entry["rho"] is None else f"{entry['rho']:g}", str(entry["nfe"])]
    cells += [_metric_cell(entry, k, d) for k, _, _, d in METRICS]
    cells += [f"{entry['seconds']:.2f}", _fmt(entry["images_per_s"], 2)]
    return cells


def _metric_cell(entry: dict[str, Any], key: str, digits: int) -> str:
    """``mean ± half-width of the 95 % interval``, `` *`` when the paired difference to the Baseline excludes 0."""
    text = _fmt(entry[key], digits)
    ci = entry.get(f"{key}_ci")
    if ci is not None and entry[key] is not None and not math.isinf(entry[key]):
        text += f" ± {(ci[1] - ci[0]) / 2:.{digits}f}"
    diff = (entry.get("vs_baseline") or {}).get(key)
    return text + (" *" if diff and diff["significant"] else "")


def to_markdown(result: BenchResult) -> str:
    heads = headings(result.lpips_name)
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
    lines += ["| " + " | ".join(table_cells(e)) + " |" for e in result.table]
    lines += ["", *footer(result)]
    return "\n".join(lines) + "\n"


def footer(result: BenchResult) -> list[str]:
    s = result.meta["settings"]
    data = s["hr"] or "the bundled held-out tiles"
    lines = [f"{len(result.items)} images from {data}" + (f" (LR from {s['lr']})" if s["lr"] else
                                                            f" (LR by bicubic x{result.meta['sf']})")
             + f"; seed {s['seed']} + image index" + (f", {s['seeds']} noise seeds per image (the same in every row)"
                                                       if s.get("seeds", 1) > 1 else "")
             + f"; device {result.meta['device']['device']}.",
             "NFE is the number of network calls each row used; time is compute seconds summed over images.",
             f"PSNR / SSIM on the 8-bit-quantised images (Y: BT.601), "
             f"{'crop ' + str(s['crop_border']) + ' px' if s.get('crop_border') else 'no border crop'}; "
             f"LPIPS on the float images in [-1, 1].",
             result.meta.get("intervals", INTERVALS_NOTE) + "."]
    if any(r.baseline for r in result.rows):
        lines.append(f"Baseline: the Markov sampler at NFE = T on {result.meta['models'].get('baseline')} "
                     f"(its discrete chain).")
    lines += result.notes
    if s.get("command"):
        lines.append(f"Command: `{s['command']}`")
    return lines


def to_csv(result: BenchResult) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = ["label", "solver", "rho", "nfe", "nfe_budget", "lpips", "ssim_y", "psnr_y", "psnr_rgb", "images",
            "seconds", "images_per_s", "schedule", "options"]
    extra = [f"{m}_{part}" for m, *_ in METRICS for part in ("lo", "hi", "diff", "diff_lo", "diff_hi", "significant")]
    w.writerow(keys + ["samples"] + extra)
    for e in result.table:
        row = ["" if e[k] is None else (json.dumps(e[k]) if isinstance(e[k], dict) else e[k]) for k in keys]
        row.append(e.get("samples", e["images"]))
        for m, *_ in METRICS:
            diff = (e.get("vs_baseline") or {}).get(m)
            row += e.get(f"{m}_ci") or ["", ""]
            row += [diff["diff"], *diff["ci"], int(diff["significant"])] if diff else ["", "", "", ""]
        w.writerow(row)
    return buf.getvalue()


def _plots(result: BenchResult, out: Path) -> tuple[list[str], Optional[str]]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "plots skipped: matplotlib is not installed (pip install 'cresshift[plot]')"
    from .data.io import atomic_write

    written = []
    for key, name, higher, _ in METRICS:
        if all(e[key] is None for e in result.table):
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        series: dict[str, list[tuple[int, float, float, float]]] = {}
        for e in result.table:
            if e[key] is None or not isinstance(e["nfe"], int):
                continue
            label = "Baseline (markov)" if e["baseline"] else \
                e["solver"] + ("" if e["rho"] is None else f" ρ={e['rho']:g}")
            lo, hi = e.get(f"{key}_ci") or (e[key], e[key])
            series.setdefault(label, []).append((e["nfe"], e[key], e[key] - lo, hi - e[key]))
        for label, pts in series.items():
            pts.sort()
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[[p[2] for p in pts], [p[3] for p in pts]],
                        marker="*" if label.startswith("Baseline") else "o", capsize=3,
                        linestyle="-" if len(pts) > 1 else "none", label=label)
        heading = result.lpips_name if key == "lpips" else name
        ax.set_xlabel("NFE (network calls)")
        ax.set_ylabel(f"{heading} {'↑' if higher else '↓'} (bars: 95 % interval)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        path = out / f"plot_{key}.png"
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
        plt.close(fig)
        written.append(str(path))
    if any(e["lpips"] is not None and e["psnr_y"] is not None for e in result.table):
        written.append(perception_distortion_plot(result.table, result.lpips_name, out / "plot_pd.png"))
    return written, None


def perception_distortion_plot(table: Sequence[dict[str, Any]], lpips_name: str, path: Path) -> str:
    """LPIPS against PSNR-Y, one labelled point per table row (Blau & Michaeli's perception-distortion plane).

    Rows need ``lpips``, ``psnr_y``, ``solver``, ``rho``, ``nfe`` and ``baseline``; rows without
    LPIPS are left out. A row's ``vs_baseline`` (``summarize``) becomes error bars: the 95 %
    interval of its paired difference to the baseline, drawn around the point (the spread over
    images would hide every difference). Written atomically. Needs matplotlib.
    """
    from .data.io import atomic_write

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for e in table:
        if e["lpips"] is None or e["psnr_y"] is None:
            continue
        label = "Baseline (markov)" if e["baseline"] else \
            e["solver"] + ("" if e["rho"] is None else f" ρ={e['rho']:g}") + (f" @{e['nfe']}" if e["nfe"] else "")
        ax.scatter(e["psnr_y"], e["lpips"], marker="*" if e["baseline"] else "o", s=60 if e["baseline"] else 20)
        paired = e.get("vs_baseline") or {}
        if paired.get("psnr_y") and paired.get("lpips"):  # the paired difference's interval, around the point
            (x_lo, x_hi), (y_lo, y_hi) = paired["psnr_y"]["ci"], paired["lpips"]["ci"]
            dx, dy = paired["psnr_y"]["diff"], paired["lpips"]["diff"]
            ax.errorbar(e["psnr_y"], e["lpips"], xerr=[[dx - x_lo], [x_hi - dx]], yerr=[[dy - y_lo], [y_hi - dy]],
                        fmt="none", elinewidth=0.6, alpha=0.6)
        ax.annotate(label, (e["psnr_y"], e["lpips"]), fontsize=5, xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("PSNR-Y (dB) ↑")
    ax.set_ylabel(f"{lpips_name} ↓")
    ax.set_title("perception–distortion: better is down and right\n(bars: 95 % interval of the paired difference to the baseline)", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return str(path)


def write_outputs(result: BenchResult, out: Path) -> list[str]:
    """results.json, table.md, table.csv and plot_<metric>.png under ``out`` (atomically); returns the paths."""
    from .data.io import atomic_write, strict_json

    out.mkdir(parents=True, exist_ok=True)

    def text(path: Path, content: str) -> str:
        atomic_write(path, content)
        return str(path)

    plots, note = _plots(result, out)
    if note:
        result.notes.append(note)
    paths = [text(out / "table.md", to_markdown(result)), text(out / "table.csv", to_csv(result))]
    paths.append(text(out / "results.json", strict_json(result_json(result), indent=1)))
    return paths + plots


def result_json(result: BenchResult) -> dict[str, Any]:
    """results.json: the table, every per-image value, the settings, versions and device."""
    return {"table": result.table, "notes": result.notes, **result.meta, "records": result.records}


def command_line(argv: Sequence[str]) -> str:
    """How the sweep was started (``cresshift`` + its arguments), for table.md."""
    import shlex

    return "cresshift " + " ".join(shlex.quote(str(a)) for a in argv)

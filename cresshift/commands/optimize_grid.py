"""``cresshift optimize-grid``: a model's best time grid for a solver and NFE, from calibration images."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import click

from ..runtime import progress_bar
from .common import SCHEDULE_NAMES, CliError, Log, common_options, model_options, parse_options, solver_option

#: solvers with a grid to optimise (deterministic, fixed grid): the registry minus markov, sde, adaptive
#: (``tuned``: its coefficients are fitted with the grid, ``cresshift.solvers.optimize.optimize_solver``)
GRID_SOLVERS = ("euler", "heun", "ddim", "dpmpp-2m", "dpmpp-3m", "ipndm", "tuned")
GRID_MAX_EVALS, TUNED_MAX_EVALS = 60, 20  # --max-evals defaults (a tuned evaluation fits coefficients: ~10x a run)
TUNED_ITERATIONS = 10  # L-BFGS iterations per coefficient fit (optimize_solver's iterations)


@click.command("optimize-grid")
@model_options
@click.option("--solver", type=click.Choice(GRID_SOLVERS), default="dpmpp-2m", show_default=True,
              help="The solver whose grid is optimised (tuned: grid and coefficients).")
@click.option("--nfe", type=click.IntRange(2, 1000), required=True, help="NFE budget; the grid never exceeds it.")
@click.option("--hr", type=click.Path(exists=True), default=None,
              help="Calibration HR images (folder, file or glob; LR by bicubic). [default: 64x64 tiles of the "
                   "validation photograph, never a test tile]")
@click.option("--limit", type=click.IntRange(1, None), default=4, show_default=True,
              help="Use the first N calibration images (sorted); all must have one size.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the calibration x_T.")
@click.option("--schedule", type=click.Choice(SCHEDULE_NAMES), default="default", show_default=True,
              help="The schedule the grid is made for (as in sample).")
@click.option("--max-evals", type=click.IntRange(0, None), default=None,
              help="Nelder-Mead sampler runs after the starting grids [default: 60]; tuned: grids tried in each of "
                   "its two stages, in the second each with its coefficients fitted [default: 20].")
@click.option("--reference-rtol", type=click.FloatRange(0, 1, min_open=True), default=1e-5, show_default=True,
              help="rtol = atol of the adaptive reference solution; keep it well below the errors being fitted "
                   "(1e-3 leaves ~2-5e-4 RMS on the bundled model, the size of its NFE-6 errors).")
@solver_option()
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the grid to this JSON file.")
@click.option("--write", is_flag=True,
              help="Store the grid with the model (a cresshift checkpoint's config; otherwise <name>.grids.json "
                   "beside it), for 'sample --grid optimized'.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file or stored grid.")
@click.option("--json", "as_json", is_flag=True, help="Print the grid record as JSON on stdout.")
@common_options
def optimize_grid(model: str, preset: Optional[str], autoencoder: Optional[str], device: str, dtype: str, solver: str,
                  nfe: int, hr: Optional[str], limit: int, seed: int, schedule: str, max_evals: Optional[int],
                  reference_rtol: float, solver_options: tuple[str, ...], out: Optional[str], write: bool,
                  overwrite: bool, as_json: bool, quiet: bool) -> None:
    """Optimise the time grid of SOLVER at an NFE budget against a converged reference (adaptive dopri5)
    on calibration images, and write it as a grid file (--out) or store it with the model (--write).
    With --solver tuned the solver's coefficients are fitted with the grid and stored in the same record.

    \b
      cresshift optimize-grid --solver dpmpp-2m --nfe 5 --out grid.json
      cresshift sample photo.png --solver dpmpp-2m --nfe 5 --grid grid.json
      cresshift optimize-grid --model my.safetensors --solver heun --nfe 7 --write
      cresshift optimize-grid --solver tuned --nfe 5 --write
      cresshift sample photo.png --solver tuned --nfe 5 --grid optimized
    """
    log = Log(quiet)
    if not (out or write):
        raise click.UsageError("say where the grid goes: --out FILE, --write (with the model), or both")
    if out and Path(out).exists() and not overwrite:
        raise CliError(f"{out} exists; pass --overwrite to replace it")
    opts = parse_options(solver_options)
    import torch

    from ..grids import grid_json
    from ..models.pipeline import load_pipeline
    from ..models.stored_grids import grid_key, store_grid, stored_grids
    from ..runtime import resolve_device, torch_dtype
    from ..solvers import SOLVERS

    if solver == "tuned" and opts:
        raise CliError("optimize-grid fits the tuned solver's coefficients itself; drop -O " + ", ".join(sorted(opts)))
    if nfe < SOLVERS[solver].min_nfe:
        raise click.BadParameter(f"{solver} needs at least {SOLVERS[solver].min_nfe} network calls, got {nfe}",
                                 param_hint="--nfe")
    click.get_current_context().with_resource(torch.no_grad())  # until the command returns
    pipe = load_pipeline(model, preset=preset, autoencoder=autoencoder, device=resolve_device(device),
                         dtype=torch_dtype(dtype))
    sched = pipe.schedule_for(schedule)
    key = grid_key(solver, nfe, sched)
    if write and key in stored_grids(model) and not overwrite:
        raise CliError(f"a grid for {key} is already stored with {model}; pass --overwrite to replace it")
    names, lr = _calibration(hr, limit, pipe.sf)
    if max_evals is None:
        max_evals = TUNED_MAX_EVALS if solver == "tuned" else GRID_MAX_EVALS
    log(f"calibrating {solver} at NFE {nfe} on {len(names)} image(s) ({', '.join(names[:3])}"
        f"{' ...' if len(names) > 3 else ''})")
    record = _optimise(pipe, lr, sched, solver, nfe, seed, max_evals, reference_rtol, opts, quiet, log)
    record.update(model=str(model), calibration=names, seed=seed, schedule_name=schedule)
    text = grid_json(record.pop("ts"), sched, **record)
    if out:
        from ..data.io import atomic_write

        atomic_write(out, text, overwrite=overwrite)  # no-clobber at the moment of writing
        log(f"wrote {out}; use it with 'cresshift sample --solver {solver} --nfe {nfe} --grid {out}'")
    if write:
        target = store_grid(model, key, json.loads(text), overwrite=overwrite)
        log(f"stored the grid for {key} in {target}; 'cresshift sample --model {model} --solver {solver} "
            f"--nfe {nfe} --grid optimized' uses it")
    if as_json:
        click.echo(text, nl=False)


def _calibration(hr: Optional[str], limit: int, sf: int) -> tuple[list[str], Any]:
    """(names, LR batch) of the calibration images: --hr files, or tiles of the validation photograph."""
    import torch

    from ..data.io import bicubic_down

    if hr is None:
        from ..data.photos import VALIDATION_SET, validation_tiles

        tiles = validation_tiles()[:limit]
        names = [f"{VALIDATION_SET[0]} tile {i}" for i in range(len(tiles))]
    else:
        from ..bench import dataset, load_item

        items = dataset(hr, limit=limit)
        if not items:
            raise CliError(f"no images in {hr}")
        tiles = [load_item(item, sf)[1] for item in items]
        names = [item.name for item in items]
    sizes = {tuple(t.shape[-2:]) for t in tiles}
    if len(sizes) > 1:
        raise CliError(f"the calibration images have different sizes {sorted(sizes)}; crop them to one size")
    h, w = sizes.pop()
    tiles = [t[:, : h // sf * sf, : w // sf * sf] for t in tiles]
    return names, torch.stack([bicubic_down(t, sf) for t in tiles])


def _optimise(pipe: Any, lr: Any, sched: Any, solver: str, nfe: int, seed: int, max_evals: int, rtol: float,
              opts: dict[str, Any], quiet: bool, log: Log) -> dict[str, Any]:
    """Run optimize_grid on the calibration batch; the grid and its calibration RMS next to the auto grid's."""
    import torch

    from ..solvers import SOLVERS
    from ..solvers.optimize import grid_error, optimize_grid, optimize_solver, prior_sample, reference_output

    y, lq, _ = pipe.shift_target(lr)
    denoiser = pipe.network_denoiser(y, lq, schedule=sched)
    x_T = prior_sample(y, sched, torch.Generator(device=pipe.device).manual_seed(seed))
    log(f"reference: adaptive dopri5 at rtol = atol = {rtol:g}")
    reference = reference_output(denoiser, y, sched, x_T, rtol=rtol)
    tuned: dict[str, Any] = {}
    with progress_bar(quiet) as bar:
        task = bar.add_task("optimize-grid", total=None)
        progress = lambda done, total: bar.update(task, completed=done, total=total)  # noqa: E731
        if solver == "tuned":
            ts, coefficients = optimize_solver(denoiser, y, sched, nfe=nfe, x_T=x_T, reference=reference,
                                               max_evals=max_evals, iterations=TUNED_ITERATIONS, progress=progress)
            tuned = dict(coefficients=[float(c) for c in coefficients])
        else:
            ts = optimize_grid(denoiser, y, sched, solver=solver, nfe=nfe, x_T=x_T, reference=reference,
                               max_evals=max_evals, progress=progress, **opts)
    auto = SOLVERS[solver].grid(sched, nfe)
    errors = {name: grid_error(denoiser, y, sched, grid, solver=solver, nfe=nfe, x_T=x_T, reference=reference,
                               **opts, **extra)
              for name, grid, extra in (("auto", auto, {}), ("optimised", ts, tuned))}
    log(f"calibration RMS to the reference: auto grid {errors['auto']:.4g}, optimised {errors['optimised']:.4g}")
    return dict(ts=ts, solver=solver, nfe=nfe, calibration_rms=errors, reference_rtol=rtol, max_evals=max_evals,
                solver_options=opts, **tuned)

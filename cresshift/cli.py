"""The ``cresshift`` command line: ``sample``, ``fit-schedule``, ``bench`` (and ``finetune``).

Thin commands: parse, call the library (pipeline, schedules, bench engine), report. Nothing
heavy is imported at module level, so ``cresshift --help`` is instant; torch loads inside a
command. Logs, warnings and progress bars go to stderr; tables, JSON and written paths to
stdout. Every expected failure (a missing or unreadable file, a bad option, a checkpoint that
does not fit, no disk space) exits with status 2 and one line; ``--debug`` shows the traceback.
Option defaults can come from the environment: ``CRESSHIFT_<COMMAND>_<OPTION>`` (for example
``CRESSHIFT_SAMPLE_NFE=5``), and ``CRESSHIFT_DEVICE`` / ``CRESSHIFT_MODEL`` for every command.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import click

from .checks import check_rho
from .commands.common import (PRESET_NAMES, SCHEDULE_NAMES, SOLVER_NAMES, CliError, Log, common_options,
                              debug_callback, model_options, parse_options, raise_one_line, solver_option)
from .runtime import first_line as _first_line
from .runtime import progress_bar as _progress

#: lazily imported commands: name -> (module, attribute, one-line help shown by --help)
LAZY_COMMANDS = {"finetune": ("cresshift.training.cli", "finetune",
                              "Fine-tune a model with discrete or continuous time (one process or torchrun).")}


#: what the Ctrl-C message tells the user, per command
INTERRUPT_HINTS = {
    "sample": "every output listed so far is complete; rerun the same command with --overwrite, or on the rest",
    "bench": "rerun the same command to resume the bench",
    "finetune": "rerun the same command with --resume auto to continue from the last checkpoint",
    "fit-schedule": "nothing was written",
}


class Interrupted(click.Abort):
    """Ctrl-C: exit status 130 and a line naming how to continue the interrupted ``command``."""

    def __init__(self, command: Optional[str] = None) -> None:
        super().__init__()
        self.command = command


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                  line: Optional[str] = None) -> None:
    click.echo(f"warning: {_first_line(Exception(str(message)))}", err=True)


_INVOCATION: list[str] = []  # the arguments of the running command line (for table.md)


class CresshiftGroup(click.Group):
    """A click group with lazily imported commands and one-line errors (exit status 2)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        here = Path(__file__).resolve().parent
        lazy = [name for name, (mod, _, _) in LAZY_COMMANDS.items()
                if (here.parent / (mod.replace(".", "/") + ".py")).is_file()]
        return sorted(set(super().list_commands(ctx)) | set(lazy))

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        if name in LAZY_COMMANDS and name not in self.commands:
            module, attr, _ = LAZY_COMMANDS[name]
            try:
                import importlib

                return getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as err:
                reason = _first_line(err)

                @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
                def unavailable() -> None:
                    raise CliError(f"'cresshift {name}' is not available in this installation ({reason})")
                return unavailable
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in LAZY_COMMANDS and name not in self.commands:  # never import a command for --help
                rows.append((name, LAZY_COMMANDS[name][2]))
            else:
                cmd = self.get_command(ctx, name)
                if cmd is not None and not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(limit=70)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        old = warnings.showwarning
        warnings.showwarning = _show_warning
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            raise Interrupted(ctx.invoked_subcommand) from None
        except Exception as err:
            raise_one_line(ctx, err)
            raise  # pragma: no cover - raise_one_line always raises
        finally:
            warnings.showwarning = old

    def main(self, args: Optional[Sequence[str]] = None, prog_name: Optional[str] = None,
             complete_var: Optional[str] = None, standalone_mode: bool = True, **extra: Any) -> Any:
        """Usage errors in one line too ("Error: ... (see 'cresshift bench --help')")."""
        extra.setdefault("auto_envvar_prefix", "CRESSHIFT")
        global _INVOCATION
        _INVOCATION = list(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name or "cresshift", complete_var, False, **extra)
        except click.UsageError as err:
            hint = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
            click.echo(f"Error: {err.format_message()}{hint}", err=True)
            sys.exit(err.exit_code)
        except click.ClickException as err:
            err.show()
            sys.exit(err.exit_code)
        except click.Abort as err:
            command = getattr(err, "command", None)
            click.echo(f"interrupted{f' ({INTERRUPT_HINTS[command]})' if command in INTERRUPT_HINTS else ''}",
                       err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=CresshiftGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, is_eager=True, expose_value=False, callback=debug_callback,
              help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="cresshift", prog_name="cresshift")
def main() -> None:
    """Continuous-time ResShift: fast ODE/SDE sampling for diffusion super-resolution.

    \b
      cresshift sample --example                   super-resolve a bundled held-out photograph
      cresshift demo                               a local web page (pip install -e ".[demo]")
      cresshift sample photo.png -o sr/ --solver heun --rho -8 --nfe 15
      cresshift fit-schedule --preset realsr-x4-v1 fit the paper's alpha(t) to a schedule
      cresshift bench                              the paper's Table 1 on the bundled tiles
    """


# --- shared options ------------------------------------------------------------------------------
def _rho(ctx: click.Context, param: click.Parameter, value: Optional[float]) -> Optional[float]:
    try:
        return None if value is None else check_rho(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _cpu_bf16_parts(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """--cpu-bf16, checked by the pipeline's own parser (``cpu_bf16_parts``) before any work."""
    from .models.pipeline import cpu_bf16_parts

    try:
        if not value.replace(",", "").strip():
            raise ValueError("use default, none, all or a comma list of network, encoder, decoder")
        cpu_bf16_parts(value, latent=False)
    except ValueError as err:
        raise click.BadParameter(f"{value!r}: {err}") from None
    return value


def _check_space(folder: Path, need_bytes: int) -> None:
    import shutil

    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need_bytes > free:
        raise CliError(f"not enough disk space in {folder}: the outputs need about {need_bytes / 1e6:.1f} MB, "
                       f"{free / 1e6:.1f} MB are free")


# --- sample --------------------------------------------------------------------------------------
@main.command()
@click.argument("inputs", nargs=-1, type=str)
@click.option("-o", "--out", type=click.Path(file_okay=False), default="cresshift-sr", show_default=True,
              help="Folder for the SR PNGs (<name>.png; folder inputs keep their sub-folders).")
@click.option("--solver", type=click.Choice(SOLVER_NAMES), default="heun", show_default=True,
              help="Sampler from the registry (design §7 for its NFE).")
@click.option("--rho", type=float, default=-8.0, show_default=True, callback=_rho,
              help="Grid spacing: 1 uniform, > 1 steps near the image end, < 0 near the noisy LR end.")
@click.option("--grid", "grid_name", default=None, metavar="rho|lambda|karras|logeta|auto|optimized|FILE",
              help="Time grid [default: rho, with --rho]; optimized: the one 'optimize-grid --write' stored.")
@click.option("--nfe", type=click.IntRange(1, 10000), default=15, show_default=True,
              help="Budget of network calls per image; the summary reports what was used.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Image i (in input order) uses seed + i; a batch uses the seed of its first image.")
@click.option("--schedule", type=click.Choice(SCHEDULE_NAMES), default="default", show_default=True,
              help="The model's own schedule, its discrete chain, the exact continuation, the exp-alpha fit "
                   "(fit-schedule --write stores one), or the paper's constants.")
@model_options
@click.option("--scale", type=click.IntRange(1, 16), default=None,
              help="Expected scale factor; refused if the model's differs.")
@click.option("--tile", type=click.IntRange(8, None), default=None,
              help="Evaluate the network on tiles of this many LR pixels (bounds memory).")
@click.option("--tile-overlap", type=click.IntRange(0, None), default=16, show_default=True,
              help="Tile overlap in LR pixels.")
@click.option("--context-pad", type=click.IntRange(0, None), default=None,
              help="Mirrored context around the image at every network call, in network pixels "
                   "[default: the model's own: 16 for the bundled models, 0 (as official) otherwise].")
@click.option("--batch-size", type=click.IntRange(1, None), default=1, show_default=True,
              help="Images of one size per network batch (above 1, inputs are grouped by size first).")
@click.option("--compile", "compile_", is_flag=True,
              help="Run the network through torch.compile (slow first image; pays off on many same-size images).")
@click.option("--eager", is_flag=True, help="The plain float32 eager path instead of the fast one (on the CPU the "
              "fast one runs parts in bfloat16, >= 45 dB PSNR from it; see README, Speed).")
@click.option("--cuda-graphs", is_flag=True, help="GPU: replay each network call of one image size from a "
              "CUDA graph captured once.")
@click.option("--cpu-bf16", default="default", show_default=True, callback=_cpu_bf16_parts,
              help="Parts the CPU fast path runs in bfloat16: default (per model, where the CPU has native "
                   "bfloat16), none, all, or a comma list of network, encoder, decoder.")
@solver_option()
@click.option("--save-trajectory", is_flag=True,
              help="Also write <name>_trajectory.png: x0_hat at every step, left to right, then the output.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (inputs are never overwritten).")
@click.option("--example", is_flag=True,
              help="Super-resolve a bundled held-out photograph (128x128 LR; writes LR, SR, HR and a labelled "
                   "side-by-side PNG into OUT); with it solver, NFE and rho default to dpmpp-2m, 3, 4.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout instead of the written paths.")
@common_options
def sample(inputs: tuple[str, ...], out: str, solver: str, rho: float, grid_name: Optional[str], nfe: int, seed: int, schedule: str, model: str,
           preset: Optional[str], autoencoder: Optional[str], device: str, dtype: str, scale: Optional[int],
           tile: Optional[int], tile_overlap: int, context_pad: Optional[int], batch_size: int, compile_: bool,
           eager: bool, cuda_graphs: bool, cpu_bf16: str, solver_options: tuple[str, ...],
           save_trajectory: bool, overwrite: bool, example: bool, as_json: bool, quiet: bool) -> None:
    """Super-resolve LR images (files, folders or globs) into PNGs.

    \b
      cresshift sample photo.png -o sr/
      cresshift sample 'lr/*.jpg' -o sr/ --solver dpmpp-2m --nfe 5 --rho 4
      cresshift sample big.png --model resshift_realsrx4_s15_v1.pth --preset realsr-x4-v1 \\
          --autoencoder autoencoder_vq_f4.pth --tile 256 --device cuda
    """
    log = Log(quiet)
    if example:
        solver, nfe, rho = _example_defaults(click.get_current_context(), solver, nfe, rho)
    if example and inputs:
        raise click.UsageError("--example super-resolves a bundled photograph: give no INPUT with it")
    if not inputs and not example:
        raise click.UsageError("give INPUT images (files, folders or globs), or --example")
    opts = parse_options(solver_options)
    import time

    from .models.pipeline import load_pipeline
    from .models.stored_grids import grid_request
    from .runtime import resolve_device, torch_dtype
    from .solvers import SOLVERS, check_solver_options, grid_for

    spec = SOLVERS[solver]
    if solver != "adaptive" and nfe < spec.min_nfe:
        raise click.BadParameter(f"{solver} needs at least {spec.min_nfe} network calls, got {nfe}",
                                 param_hint="--nfe")
    check_solver_options(solver, opts)
    out_dir = Path(out)
    jobs = _sample_jobs(inputs, out_dir, example)
    sizes = _claim_outputs(jobs, out_dir, seed=seed, example=example, trajectory=save_trajectory, overwrite=overwrite)

    pipe = load_pipeline(model, preset=preset, autoencoder=autoencoder, device=resolve_device(device),
                         dtype=torch_dtype(dtype), compile=compile_, fast=not eager, cuda_graphs=cuda_graphs,
                         cpu_bf16=cpu_bf16)
    if scale is not None and scale != pipe.sf:
        raise CliError(f"the model super-resolves x{pipe.sf}; --scale {scale} does not match it")
    if click.get_current_context().get_parameter_source("rho") is click.core.ParameterSource.DEFAULT and grid_name != "rho":
        rho = None if grid_name is not None else rho  # the default -8 is the rho grid's; karras/logeta keep their own
    grid_req, rho = grid_request(grid_name, rho, model=model, solver=solver, nfe=nfe, schedule=pipe.schedule_for(schedule))
    grid = grid_for(solver, pipe.schedule_for(schedule), nfe, rho, grid_req)  # raises on an impossible grid
    _check_space(out_dir, sum(w * h for w, h in sizes) * pipe.sf ** 2 * 3 * (1 + (len(grid) + 1) * save_trajectory))

    t_start = time.perf_counter()
    run = dict(solver=solver, nfe=nfe, rho=rho, grid=grid_req, schedule=schedule, tile=tile, tile_overlap=tile_overlap,
               context_pad=context_pad, **opts)
    summary, seconds, nfe_used = _run_batches(
        pipe, jobs, sizes, run, seed=seed, batch_size=batch_size, steps=max(1, len(grid) - (solver != "markov")),
        out_dir=out_dir, example=example, trajectory=save_trajectory, overwrite=overwrite, as_json=as_json,
        quiet=quiet)

    _report_sample(log, summary, seconds, nfe_used, grid, t_start, as_json=as_json, solver=solver, rho=rho,
                   grid_name=grid_name, nfe=nfe, schedule=schedule, model=model, out_dir=out_dir)


def _report_sample(log: Log, summary: list[dict[str, Any]], seconds: dict[str, float], nfe_used: set[int], grid: Any,
                   t_start: float, *, as_json: bool, solver: str, rho: Optional[float], grid_name: Optional[str],
                   nfe: int, schedule: str, model: str, out_dir: Path) -> None:
    """The summary line on stderr, and with --json the JSON summary on stdout."""
    import time

    from .data.io import strict_json

    n = len(summary)
    used = "/".join(str(v) for v in sorted(nfe_used))
    grid_text = (f"{len(grid)} chain steps" if solver == "markov" else
                 "adaptive" if solver == "adaptive" else f"{f'rho={rho:g}' if rho is not None else f'grid {grid_name}'}, {len(grid)} points")
    line = (f"{solver} ({grid_text}, schedule {schedule}): NFE {used} used of {nfe}; {n} image(s), "
            f"{seconds['total'] / n:.3f} s/image (network {seconds['network'] / n:.3f} s) -> {out_dir}")
    if as_json:
        click.echo(strict_json({"solver": solver, "rho": rho, "grid_request": grid_name, "nfe_budget": nfe, "nfe": sorted(nfe_used),
                               "schedule": schedule, "grid": [float(t) for t in grid], "model": model,
                               "seconds_per_image": seconds["total"] / n, "wall_seconds": time.perf_counter() - t_start,
                               "images": summary}, indent=1))
    log(line)


Job = tuple[Optional[Path], Path]  # (input, or None for the example; output)


def _sample_jobs(inputs: Sequence[str], out_dir: Path, example: bool) -> list[Job]:
    """What to read and where to write it: the bundled example photograph, or every image of the inputs."""
    from .data.io import list_images

    jobs: list[Job] = []
    if example:
        from .demo.samples import EXAMPLE_PHOTO, find_photo

        photo_path = find_photo(EXAMPLE_PHOTO).path
        if not photo_path.is_file():
            raise CliError(f"the bundled example photograph is missing from this installation ({photo_path})")
        jobs.append((photo_path, out_dir / "example_sr.png"))
    else:
        for item in inputs:
            root = Path(item)
            for p in list_images([item]):
                rel = p.relative_to(root).with_suffix(".png") if root.is_dir() else Path(p.stem + ".png")
                jobs.append((p, out_dir / rel))
    return jobs


def _claim_outputs(jobs: Sequence[Job], out_dir: Path, *, seed: int, example: bool, trajectory: bool,
                   overwrite: bool) -> list[tuple[int, int]]:
    """Check seeds and output names, lock ``out_dir`` for the command, read every input once: their (width, height)."""
    from .data.io import lock_folder, remove_stale_temps

    _check_seeds(seed, len(jobs))
    click.get_current_context().with_resource(lock_folder(out_dir))  # held until the command ends
    remove_stale_temps(out_dir, recursive=True)
    _check_outputs(jobs, out_dir, example=example, trajectory=trajectory, overwrite=overwrite)
    # every input read once, up front; its size groups batches
    return [_checked_size(src) for src, _ in jobs] if not example else [(0, 0)] * len(jobs)


def _run_batches(pipe: Any, jobs: Sequence[Job], sizes: Sequence[tuple[int, int]], run: dict[str, Any], *, seed: int,
                 batch_size: int, steps: int, out_dir: Path, example: bool, trajectory: bool, overwrite: bool,
                 as_json: bool, quiet: bool) -> tuple[list[dict[str, Any]], dict[str, float], set[int]]:
    """Super-resolve every job with ``pipe.run(**run)``: (summary per image, seconds, NFEs used).

    Same-size images form a batch (grouped by size when batches hold more than one image);
    image i uses seed + i (a batch: its first image's). Outputs are written as their batch ends.
    """
    import time

    import torch

    order = sorted(range(len(jobs)), key=lambda k: sizes[k]) if batch_size > 1 else list(range(len(jobs)))
    summary: list[dict[str, Any]] = []
    seconds = {"total": 0.0, "network": 0.0}
    nfe_used: set[int] = set()
    with _progress(quiet) as bar:
        task = bar.add_task("images", total=len(jobs))
        step_task = bar.add_task("steps", total=steps, visible=False)
        i = 0
        while i < len(jobs):
            batch, i, example_pair = _next_batch(jobs, order, i, batch_size, pipe.sf, example)
            frames: list[torch.Tensor] = []
            big = example or batch[0][1].shape[-1] * batch[0][1].shape[-2] * len(batch) >= 256 * 256

            def on_step(d: dict[str, Any]) -> None:
                if trajectory:
                    frames.append(d["x0_hat"].detach().to("cpu", copy=True))
                if big:
                    bar.update(step_task, advance=1)
            bar.reset(step_task, visible=big)
            t0 = time.perf_counter()
            res = pipe.run(torch.stack([b[1] for b in batch]), seed=seed + batch[0][0], callback=on_step, **run)
            dt = time.perf_counter() - t0
            seconds["total"] += dt
            seconds["network"] += res.seconds.get("network", 0.0)
            nfe_used.add(res.nfe)
            summary += _save_batch(pipe, jobs, batch, res, frames if trajectory else None, run, seed=seed + batch[0][0],
                                   seconds=dt, overwrite=overwrite, as_json=as_json)
            if example:
                _write_example(pipe, *example_pair, res.sr[0], out_dir, solver=run["solver"], nfe=res.nfe,
                               overwrite=overwrite)
            bar.advance(task, len(batch))
    return summary, seconds, nfe_used


def _next_batch(jobs: Sequence[Job], order: Sequence[int], i: int, batch_size: int, sf: int,
                example: bool) -> tuple[list[tuple[int, Any]], int, Any]:
    """Read jobs from ``order[i]`` on while they match the first one's size, up to ``batch_size``.

    Returns the batch as (job index, LR), the next position, and for the example its (HR, LR)
    (written with the result: a failed run leaves nothing behind).
    """
    from .data.io import bicubic_down, load_image

    batch: list[tuple[int, Any]] = []
    example_pair = None
    while i < len(jobs) and len(batch) < batch_size:
        img = load_image(jobs[order[i]][0])  # type: ignore[arg-type]
        if example:
            hr = img[:, : img.shape[1] // sf * sf, : img.shape[2] // sf * sf]
            img = bicubic_down(hr, sf)
            example_pair = (hr, img)
        if batch and img.shape != batch[0][1].shape:
            break
        batch.append((order[i], img))
        i += 1
    return batch, i, example_pair


def _save_batch(pipe: Any, jobs: Sequence[Job], batch: Sequence[tuple[int, Any]], res: Any, frames: Optional[list[Any]],
                run: dict[str, Any], *, seed: int, seconds: float, overwrite: bool, as_json: bool) -> list[dict[str, Any]]:
    """Write the SR of every image of a finished batch (and its trajectory strip with ``frames``); their summaries.

    Each written path goes to stdout unless --json.
    """
    import torch

    from .data.io import save_image

    entries = []
    for k, (j, lr) in enumerate(batch):
        dst = jobs[j][1]
        save_image(res.sr[k], dst, overwrite=overwrite)
        if frames is not None:
            strip = _trajectory(pipe, frames, k, lr.shape[-2:], run["tile"], run["tile_overlap"]) + [res.sr[k].cpu()]
            save_image(torch.cat(strip, dim=-1), _trajectory_path(dst), overwrite=overwrite)
        entries.append({"input": str(jobs[j][0]), "output": str(dst), "seed": seed, "nfe": res.nfe,
                        "seconds": seconds / len(batch)})
        if not as_json:
            click.echo(str(dst))
    return entries


def _trajectory_path(dst: Path) -> Path:
    return dst.with_name(dst.stem + "_trajectory.png")


def _check_outputs(jobs: Sequence[tuple[Optional[Path], Path]], out_dir: Path, *, example: bool, trajectory: bool,
                   overwrite: bool) -> None:
    """Every output name (results, trajectories, example side files): no input replaced, no two alike, none existing."""
    from .data.io import writable_mode

    targets = [dst for _, dst in jobs] + ([out_dir / f"example_{k}.png" for k in ("lr", "hr", "side_by_side")]
                                          if example else [])
    targets += [_trajectory_path(dst) for _, dst in jobs] if trajectory else []
    sources = {src.resolve() for src, _ in jobs if src is not None}
    seen: set[Path] = set()
    for dst in targets:
        if dst.resolve() in sources:
            raise CliError(f"the output {dst} would overwrite an input; choose another --out")
        if dst.resolve() in seen:
            raise CliError(f"two outputs would both be written to {dst}; super-resolve the inputs into "
                           f"different --out folders (or rename one)")
        seen.add(dst.resolve())
        writable_mode(dst, overwrite=overwrite)  # exists without --overwrite, or read-only: one line


def _checked_size(src: Optional[Path]) -> tuple[int, int]:
    """Read an input fully (ImageReadError in one line if it is broken); its (width, height)."""
    from .data.io import load_image

    img = load_image(src)  # type: ignore[arg-type]
    return int(img.shape[-1]), int(img.shape[-2])


def _check_seeds(seed: int, count: int, option: str = "--seed") -> None:
    """Image i uses seed + i: every one of them must be a valid torch seed ([-2^63, 2^64 - 1])."""
    if seed < -2 ** 63 or seed + max(count, 1) - 1 > 2 ** 64 - 1:
        raise click.BadParameter(f"{seed} + image index must lie in [-2^63, 2^64 - 1] for all {count} image(s)",
                                 param_hint=option)


def _example_defaults(ctx: click.Context, solver: str, nfe: int, rho: float) -> tuple[str, int, float]:
    """--example's solver, NFE and rho: ``EXAMPLE_SETTINGS`` for those not given on the command line or in the env."""
    from click.core import ParameterSource

    from .demo.samples import EXAMPLE_SETTINGS

    given = {name: ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)
             for name in ("solver", "nfe", "rho")}
    return (solver if given["solver"] else str(EXAMPLE_SETTINGS["solver"]),
            nfe if given["nfe"] else int(EXAMPLE_SETTINGS["nfe"]),
            rho if given["rho"] else float(EXAMPLE_SETTINGS["rho"]))


def _write_example(pipe: Any, hr: Any, lr: Any, sr: Any, out_dir: Path, *, solver: str, nfe: int,
                   overwrite: bool) -> None:
    """example_hr/lr.png and example_side_by_side.png (LR nearest | bicubic | result | HR, PSNR-Y, LPIPS if available)."""
    from .data.io import save_image
    from .demo.samples import comparison_panels, example_lpips, write_comparison

    sr = sr.detach().float().cpu()
    panels = comparison_panels(lr, sr, hr, sf=pipe.sf, label=f"cresshift ({solver}, NFE {nfe})", lpips=example_lpips())
    save_image(hr, out_dir / "example_hr.png", overwrite=overwrite)
    save_image(lr, out_dir / "example_lr.png", overwrite=overwrite)
    write_comparison(out_dir / "example_side_by_side.png", panels, overwrite=overwrite)


def _trajectory(pipe: Any, frames: list[Any], k: int, lr_hw: Any, tile: Optional[int], overlap: int) -> list[Any]:
    """x0_hat of every step for image k of the batch, decoded (latent models) and cropped to the output."""
    h, w = int(lr_hw[0]) * pipe.sf, int(lr_hw[1]) * pipe.sf
    out = []
    for f in frames:
        x = pipe.decode(f[k: k + 1].to(pipe.device), tile, overlap)
        out.append(x[0, :, :h, :w].clamp(-1, 1).float().cpu())
    return out


# --- fit-schedule --------------------------------------------------------------------------------
@main.command("fit-schedule")
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False))
@click.option("--preset", type=click.Choice(PRESET_NAMES), default=None, help="An official schedule.")
@click.option("--steps", type=click.IntRange(2, None), default=None, help="T, the chain length.")
@click.option("--kappa", type=click.FloatRange(0, None, min_open=True), default=None, help="[default: 2.0]")
@click.option("--min-noise-level", type=click.FloatRange(0, None, min_open=True), default=None, help="[default: 0.04]")
@click.option("--etas-end", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="[default: 0.99]")
@click.option("--power", type=click.FloatRange(0, None, min_open=True), default=None, help="[default: 0.3]")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Write a PNG of eta(t) and the residuals.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --plot file.")
@click.option("--write", is_flag=True,
              help="Store the fit as 'fitted_schedule' in the cresshift CHECKPOINT (sample --schedule exp uses it).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@common_options
def fit_schedule(checkpoint: Optional[str], preset: Optional[str], steps: Optional[int], kappa: Optional[float],
                 min_noise_level: Optional[float], etas_end: Optional[float], power: Optional[float],
                 plot: Optional[str], overwrite: bool, write: bool, as_json: bool, quiet: bool) -> None:
    """Fit the paper's alpha(t) = a (exp(lam t) - 1) to a discrete eta table.

    The table comes from a cresshift CHECKPOINT, an official --preset, or the formula's
    parameters (--steps, --kappa, --min-noise-level, --etas-end, --power; unset ones take the
    realsr-x4-v1 values). Reports a, lam, the largest absolute and relative eta error at k/T,
    eta(1) against eta_T, and the same for the exact continuation of the table.

    \b
      cresshift fit-schedule --preset realsr-x4-v1 --plot fit.png
      cresshift fit-schedule my_model.safetensors --write
    """
    log = Log(quiet)
    flags = {"steps": steps, "kappa": kappa, "min_noise_level": min_noise_level, "etas_end": etas_end,
             "power": power}
    _check_fit_arguments(checkpoint, preset, flags, write)
    from .data.io import strict_json, writable_mode

    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CliError("--plot needs matplotlib (pip install 'cresshift[plot]')") from None
        writable_mode(plot, overwrite=overwrite)
    if write:
        writable_mode(checkpoint, overwrite=True)  # a read-only checkpoint: refused before anything runs

    from .schedules import fit_candidates, fit_report

    discrete, source = _discrete_table(checkpoint, preset, flags)
    candidates = fit_candidates(discrete)
    fit = candidates["exp-alpha fit"]
    report = fit_report(discrete, source=source, candidates=candidates)

    if as_json:
        click.echo(strict_json(report, indent=1))
    else:
        _print_fit(report)
    if plot:
        _plot_fit(plot, discrete, candidates, overwrite=overwrite)
        log(f"wrote {plot}")
    if write:
        from .models.checkpoints import load_cresshift, save_cresshift

        groups, config = load_cresshift(checkpoint)  # type: ignore[arg-type]
        config["fitted_schedule"] = fit.to_config()
        save_cresshift(checkpoint, groups, config)  # type: ignore[arg-type]
        log(f"stored fitted_schedule (a={fit.a:.6g}, lam={fit.lam:.6g}) in {checkpoint}; "
            f"'cresshift sample --model {checkpoint} --schedule exp' uses it")


def _check_fit_arguments(checkpoint: Optional[str], preset: Optional[str], flags: dict[str, Any], write: bool) -> None:
    """Exactly one source of the discrete table: a CHECKPOINT, --preset, or the formula's flags."""
    given = [f"--{k.replace('_', '-')}" for k, v in flags.items() if v is not None]
    if checkpoint and preset:
        raise click.UsageError("give either a CHECKPOINT or --preset, not both")
    if checkpoint and given:
        raise click.UsageError(f"{', '.join(given)} describe a table; a CHECKPOINT brings its own")
    if write and not checkpoint:
        raise click.UsageError("--write needs a cresshift CHECKPOINT (.safetensors) to store the fit in")
    if not (checkpoint or preset or flags["steps"]):
        raise click.UsageError("give a cresshift CHECKPOINT, --preset NAME, or --steps T (with --kappa, "
                               "--min-noise-level, --etas-end, --power)")


def _discrete_table(checkpoint: Optional[str], preset: Optional[str], flags: dict[str, Any]) -> tuple[Any, str]:
    """(the discrete eta table to fit, where it came from): a checkpoint's, a preset's, or the formula's with
    unset flags taken from realsr-x4-v1."""
    from .schedules import ResShiftSchedule

    if checkpoint:
        if not checkpoint.endswith(".safetensors"):
            raise CliError(f"{checkpoint} is not a cresshift .safetensors file; official .pth checkpoints carry no "
                           f"schedule: pass --preset NAME ({', '.join(PRESET_NAMES)}) instead")
        from .models.checkpoints import load_cresshift

        _, config = load_cresshift(checkpoint)
        if not config.get("diffusion"):
            raise CliError(f"{checkpoint} carries no discrete schedule (no 'diffusion' config); pass --preset NAME")
        return ResShiftSchedule.from_config(config["diffusion"]), checkpoint
    if preset:
        return ResShiftSchedule.from_config(preset), preset
    base = ResShiftSchedule.from_config("realsr-x4-v1")
    return ResShiftSchedule(T=flags["steps"] or base.T, kappa=flags["kappa"] or base.kappa,
                            min_noise_level=flags["min_noise_level"] or base.min_noise_level,
                            etas_end=flags["etas_end"] or base.etas_end,
                            power=flags["power"] or base.power), "the given parameters"


def _print_fit(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 120)
    d = report["discrete"]
    console.print(f"discrete table from {report['source']}: T={report['T']}, kappa={report['kappa']:g}, "
                  f"min_noise_level={d['min_noise_level']:g}, etas_end={d['etas_end']:g}, "
                  f"power={d['schedule_kwargs']['power']:g}")
    console.print(f"exp-alpha fit: a = {report['a']:.6f}, lam = {report['lam']:.6f}   "
                  f"(alpha(t) = a (exp(lam t) - 1))")
    summary = Table("schedule", "max |Δη| at k/T", "max rel. error", "η(1)", "η_T", "η(1) miss")
    eta_T = report["eta_k"][-1]
    for name, r in report["schedules"].items():
        summary.add_row(name, f"{r['max_abs_error']:.3e}", f"{100 * r['max_rel_error']:.3g} %", f"{r['eta_1']:.5f}",
                        f"{eta_T:.5f}", f"{100 * r['end_rel_miss']:.3g} %")
    console.print(summary)
    names = list(report["schedules"])
    steps = Table("k", "t = k/T", "η_k", *[f"{n} Δη" for n in names])
    for k, (t, eta) in enumerate(zip(report["t"], report["eta_k"])):
        steps.add_row(str(k + 1), f"{t:.4f}", f"{eta:.6f}", *[f"{report['schedules'][n]['error'][k]:+.2e}"
                                                               for n in names])
    console.print(steps)


def _plot_fit(path: str, discrete: Any, candidates: dict[str, Any], *, overwrite: bool) -> None:
    import matplotlib

    from .data.io import atomic_write

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t = np.linspace(0, 1, 400)
    tk = np.arange(1, discrete.T + 1) / discrete.T
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(tk, discrete.etas, "ko", label="η_k (discrete table)")
    for name, sched in candidates.items():
        ax1.plot(t, sched.eta(t), label=name)
        ax2.plot(tk, sched.discrete_error(discrete), marker="o", label=name)
    ax1.set(xlabel="t", ylabel="η(t)")
    ax2.set(xlabel="t = k/T", ylabel="η(k/T) − η_k")
    ax2.axhline(0, color="gray", lw=0.5)
    for ax in (ax1, ax2):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110), overwrite=overwrite)
    plt.close(fig)


# --- bench ---------------------------------------------------------------------------------------
def _csv(cast: Callable[[str], Any], what: str) -> Callable[[click.Context, click.Parameter, Optional[str]], Any]:
    def parse(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[list[Any]]:
        if value is None:
            return None
        try:
            items = [cast(v.strip()) for v in value.split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"expected comma-separated {what}, got {value!r}") from None
        if not items:
            raise click.BadParameter(f"expected comma-separated {what}, got nothing")
        return items
    return parse


def _solver_name(name: str) -> str:
    if name not in SOLVER_NAMES:
        raise ValueError(name)
    return name


def _rho_value(text: str) -> float:
    return check_rho(float(text))


@main.command()
@model_options
@click.option("--baseline-model", default="auto", show_default=True,
              help="Model of the Baseline row: auto (bundled-discrete for the bundled model, else --model), "
                   "same, or a path.")
@click.option("--no-baseline", is_flag=True, help="Leave out the Baseline row.")
@click.option("--hr", type=click.Path(exists=True), default=None,
              help="HR images (folder, file or glob); LR by bicubic x1/sf. [default: the bundled held-out tiles]")
@click.option("--lr", type=click.Path(exists=True), default=None,
              help="Paired LR images, matched to --hr by file name.")
@click.option("--limit", type=click.IntRange(1, None), default=None, help="Use the first N images (sorted).")
@click.option("--solvers", callback=_csv(_solver_name, f"solvers ({', '.join(SOLVER_NAMES)})"), default=None,
              help="Comma list [default: euler,heun].")
@click.option("--rhos", callback=_csv(_rho_value, "non-zero numbers"), default=None,
              help="Comma list [default: 1,4,8,-4,-8].")
@click.option("--grid", "grid_name", default=None, metavar="rho|lambda|karras|logeta|auto|optimized|FILE",
              help="Time grid of the solver rows instead of the --rhos grids (optimized: stored by optimize-grid).")
@click.option("--nfe", "nfes", callback=_csv(int, "integers"), default=None, help="Comma list of budgets [default: 15].")
@solver_option()
@click.option("--schedule", type=click.Choice(SCHEDULE_NAMES), default="default", show_default=True,
              help="Schedule of the non-baseline rows.")
@click.option("--lpips-net", type=click.Choice(["alex", "vgg"]), default="alex", show_default=True,
              help="LPIPS backbone (ResShift validates with vgg).")
@click.option("--lpips-backbone", default=None,
              help="Path of the torchvision backbone weights (alexnet-owt-7be5be79.pth / vgg16-397923af.pth) "
                   "if neither 'cresshift fetch lpips' nor the torch hub cache has them.")
@click.option("--crop-border", type=click.IntRange(0, None), default=0, show_default=True,
              help="Pixels shaved from every side before PSNR / SSIM (LPIPS sees the whole image).")
@click.option("--out", type=click.Path(file_okay=False), default="cresshift-bench", show_default=True,
              help="Results folder; rerunning with the same folder resumes.")
@click.option("--fresh", is_flag=True, help="Discard the results already in --out.")
@click.option("--seed", type=int, default=0, show_default=True, help="Image i of the sorted data uses seed + i in every row.")
@click.option("--seeds", type=click.IntRange(1, None), default=1, show_default=True,
              help="Noise seeds per image (prior noise and stochastic rows), the same in every row; cells show the "
                   "mean ± the 95 % bootstrap interval over images, seeds nested.")
@click.option("--tile", type=click.IntRange(8, None), default=None, help="Network tile in LR pixels.")
@click.option("--context-pad", type=click.IntRange(0, None), default=None,
              help="Mirrored border context in network pixels, every row [default: each model's own].")
@click.option("--bicubic", is_flag=True, help="Add a first row 'bicubic' (NFE 0): the bicubic upsampling of the "
              "LR input, scored like every row.")
@click.option("--dry-run", is_flag=True, help="Check everything and print the planned rows, run nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print results.json on stdout instead of the table.")
@common_options
def bench(model: str, preset: Optional[str], autoencoder: Optional[str], device: str, dtype: str,
          baseline_model: str, no_baseline: bool, hr: Optional[str], lr: Optional[str], limit: Optional[int],
          solvers: Optional[list[str]], rhos: Optional[list[float]], grid_name: Optional[str], nfes: Optional[list[int]],
          solver_options: tuple[str, ...], schedule: str, lpips_net: str, lpips_backbone: Optional[str], crop_border: int, out: str,
          fresh: bool, seed: int, seeds: int, tile: Optional[int], context_pad: Optional[int], bicubic: bool,
          dry_run: bool, as_json: bool, quiet: bool) -> None:
    """NFE-matched LPIPS / SSIM / PSNR table of solvers x rho x NFE.

    With no --solvers/--rhos/--nfe this is the paper's Table 1: a Baseline row (the Markov
    sampler at NFE = T), then euler and heun at rho 1, 4, 8, -4, -8 and NFE 15. Results are
    appended to OUT as they finish (rerun to resume) and end as results.json, table.md,
    table.csv, plot_<metric>.png and plot_pd.png (LPIPS against PSNR-Y, one point per row). Every
    cell is the mean ± half its 95 % bootstrap interval; * marks a paired difference to the
    Baseline row whose interval excludes zero. LPIPS weights: 'cresshift fetch lpips' once. The
    table goes to stdout (Markdown when piped). Under
    'torchrun --nproc_per_node N -m cresshift bench ...' images are shared out across processes.

    \b
      cresshift bench
      cresshift bench --nfe 5 --solvers euler,heun,ddim,dpmpp-2m --rhos 1,4,-8
      cresshift bench --seeds 4
      cresshift bench --hr DIV2K_valid_HR --limit 100 --lpips-net vgg --device cuda
    """
    log = Log(quiet)
    if lr and not hr:
        raise click.UsageError("--lr needs --hr (the HR references, matched by file name)")
    if no_baseline and baseline_model != "auto":
        raise click.UsageError("--no-baseline and --baseline-model exclude each other")
    if nfes and any(n < 1 for n in nfes):
        raise click.BadParameter("NFE budgets must be positive", param_hint="--nfe")
    opts = parse_options(solver_options)
    from . import bench as engine
    from .data.io import strict_json

    rows = engine.requested_rows(solvers, rhos, nfes, baseline=not no_baseline, options=opts, grid=grid_name,
                                 bicubic=bicubic)
    settings = engine.BenchSettings(
        model=model, preset=preset, autoencoder=autoencoder, baseline_model=baseline_model, hr=hr, lr=lr, limit=limit,
        seed=seed, seeds=seeds, schedule=schedule, lpips_net=lpips_net, lpips_backbone=lpips_backbone, crop_border=crop_border, device=device,
        dtype=None if dtype == "float32" else dtype, tile=tile, context_pad=context_pad, grid=grid_name, out=out,
        fresh=fresh, command=engine.command_line(_INVOCATION))
    if dry_run:
        planned = engine.plan(settings, rows)
        click.echo(f"{len(planned.items)} images from {planned.hr}; {len(planned.rows)} rows:")
        for row in planned.rows:
            click.echo(f"  {row.describe()}")
        return
    result = _run_bench(settings, rows, quiet=quiet, log=log)
    if result is None:  # a rank > 0 of torchrun: rank 0 reports
        return
    if as_json:
        click.echo(strict_json(engine.result_json(result), indent=1))
    else:
        _print_bench(result)
    for note in result.notes:
        log(f"note: {note}")
    log(f"{result.computed} results computed, {len(result.records) - result.computed} reused; wrote "
        f"{', '.join(result.outputs)}")


def _run_bench(settings: Any, rows: Any, *, quiet: bool, log: Log) -> Any:
    """``bench.run_bench`` with a progress bar and log lines on rank 0 only (None on the other ranks)."""
    from .bench import run_bench

    rank = int(os.environ.get("RANK", "0"))
    with _progress(quiet or rank != 0) as bar:
        task = bar.add_task("bench", total=None)

        def progress(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=f"bench {what}"[:70])
        return run_bench(settings, rows, progress=progress, log=log if rank == 0 else Log(True))


def _print_bench(result: Any) -> None:
    from . import bench as engine

    if not sys.stdout.isatty():
        click.echo(engine.to_markdown(result), nl=False)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*engine.headings(result.lpips_name), title="cresshift bench")
    for entry in result.table:
        table.add_row(*engine.table_cells(entry))
    console = Console(file=sys.stdout)
    console.print(table)
    for line in engine.footer(result):
        console.print(line, highlight=False)


# --- commands in their own modules (cresshift/commands/; their shared helpers: commands/common.py) ---
if __name__ == "__main__":  # torchrun --nproc_per_node N -m cresshift.cli finetune ...
    from cresshift.cli import main as registered_main  # the importable module: no second copy of this one

    registered_main()
from .commands.demo import demo as _demo_command  # noqa: E402
from .commands.fetch import fetch as _fetch_command  # noqa: E402
from .commands.optimize_grid import optimize_grid as _optimize_grid_command  # noqa: E402

main.add_command(_demo_command)
main.add_command(_fetch_command)
main.add_command(_optimize_grid_command)

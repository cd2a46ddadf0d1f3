"""What every ``cresshift`` command shares: static choice names, one-line errors, option helpers, the log.

Imports only click and ``cresshift.runtime`` at module level, so ``cresshift --help`` stays instant.
"""
from __future__ import annotations

import errno
from typing import Any, Callable, Optional, Sequence

import click

from ..runtime import DTYPES, first_line

__all__ = ["SOLVER_NAMES", "SCHEDULE_NAMES", "PRESET_NAMES", "CliError", "raise_one_line", "debug_callback",
           "model_options", "common_options", "Log", "parse_options", "solver_option"]

# Static copies of registry names so --help needs no torch; tests check they match the registries.
SOLVER_NAMES = ("markov", "euler", "heun", "ddim", "dpmpp-2m", "dpmpp-3m", "ipndm", "tuned", "sde", "adaptive")
SCHEDULE_NAMES = ("default", "discrete", "exact", "exp", "paper")
PRESET_NAMES = ("realsr-x4-v1", "realsr-x4-v2", "realsr-x4-v3", "bicsr-x4")


class CliError(click.ClickException):
    """An expected failure: ``Error: <one line>`` on stderr, exit status 2."""

    exit_code = 2


def _as_cli_error(err: BaseException) -> Optional[click.ClickException]:
    """The one-line error for an exception the user can fix, else None (a bug: exit 1)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {err.filename}" if err.filename else ""
        return CliError(f"no space left on the device{where}; free some space or choose another --out")
    if isinstance(err, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        return CliError(f"{err.strerror or first_line(err)}: {err.filename}" if err.filename else first_line(err))
    if isinstance(err, (ValueError, FloatingPointError)):  # CheckpointError, ImageReadError, NonFiniteError ...
        return CliError(first_line(err))
    if type(err).__name__ == "OutOfMemoryError":
        return CliError("out of GPU memory: use --tile (e.g. --tile 256), a smaller --batch-size or --dtype float16")
    if isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and "can't allocate memory" in str(err)):
        return CliError("out of memory (RAM): use --tile (e.g. --tile 256) or a smaller --batch-size / --batch")
    if isinstance(err, ModuleNotFoundError):
        return CliError(f"{first_line(err)}: install it (pip install {err.name})")
    return None


def raise_one_line(ctx: click.Context, err: Exception) -> None:
    """Re-raise ``err`` as it is under --debug, else as one-line CliError (exit 2); a bug says 'unexpected'."""
    if ctx.meta.get("cresshift.debug"):
        raise err
    cli_err = _as_cli_error(err)
    if cli_err is not None:
        raise cli_err from None
    raise CliError(f"unexpected {type(err).__name__}: {first_line(err)} "
                   f"(run with --debug for the traceback)") from None


def debug_callback(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """The ``--debug`` flag's callback: marks the context so errors keep their traceback."""
    if value:
        ctx.meta["cresshift.debug"] = True
    return value


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--model, --preset, --autoencoder, --device, --dtype: which network to load, where, at what precision."""
    for opt in reversed([
        click.option("--model", envvar="CRESSHIFT_MODEL", default="bundled", show_default=True,
                     help="bundled | bundled-discrete | a preset fetched by 'cresshift fetch' | a cresshift "
                          ".safetensors | an official .pth (with --preset)."),
        click.option("--preset", type=click.Choice(PRESET_NAMES), default=None,
                     help="Which official network an official .pth is."),
        click.option("--autoencoder", type=click.Path(dir_okay=False), default=None,
                     help="autoencoder_vq_f4.pth, for official latent models."),
        click.option("--device", envvar="CRESSHIFT_DEVICE", default="auto", show_default=True,
                     help="auto (CUDA if available), cpu, cuda, cuda:1 ..."),
        click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True,
                     help="Network precision (float16/bfloat16: GPU autocast)."),
    ]):
        fn = opt(fn)
    return fn


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--debug and -q/--quiet, on every command."""
    fn = click.option("--debug", is_flag=True, expose_value=False, callback=debug_callback,
                      help="Show tracebacks instead of one-line errors.")(fn)
    return click.option("-q", "--quiet", is_flag=True, help="No progress bars or log lines (errors still show).")(fn)


class Log:
    """Log lines on stderr, silenced by --quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            click.echo(msg, err=True)


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` solver options; values become int, float, bool or stay strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--solver-option")
        value: Any = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    value = cast(raw)
                    break
                except ValueError:
                    pass
        out[key.replace("-", "_")] = value
    return out


def solver_option() -> Callable[..., Any]:
    """-O/--solver-option KEY=VALUE (repeatable), parsed by ``parse_options``."""
    return click.option("-O", "--solver-option", "solver_options", multiple=True, metavar="KEY=VALUE",
                        help="Solver option, repeatable: variable=sigma, noise=0.5, rtol=1e-4 ...")

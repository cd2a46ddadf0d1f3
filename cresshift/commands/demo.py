"""``cresshift demo``: serve the local web demo (page + ``POST /api/super-resolve``) with uvicorn."""
from __future__ import annotations

import errno
from pathlib import Path
from typing import Optional

import click

from .common import CliError, Log, common_options, model_options

DEMO_EXTRA_HINT = 'the demo needs its web packages: pip install -e ".[demo]" (or pip install "cresshift[demo]")'


@click.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; the demo has no login).")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True, help="TCP port.")
@model_options
@click.option("--max-pixels", type=click.IntRange(64, None), default=1024 * 1024, show_default=True,
              help="Largest LR image (width x height) run without tiling; 4x this with a tile size.")
@click.option("--max-waiting", type=click.IntRange(1, None), default=16, show_default=True,
              help="Runs that may wait in the queue behind the running one; more get HTTP 503.")
@common_options
def demo(host: str, port: int, model: str, preset: Optional[str], autoencoder: Optional[str], device: str, dtype: str,
         max_pixels: int, max_waiting: int, quiet: bool) -> None:
    """Serve the local web demo: a page for x4 super-resolution and POST /api/super-resolve.

    The page offers --model (first, the default), bundled and bundled-discrete; every asset is
    served from the package (works offline). One run at a time; other users wait in a queue.

    \b
      cresshift demo                                  # then open http://127.0.0.1:7860
      cresshift demo --model my_model.safetensors --port 8000
      curl -F image=@lr.png -F solver=heun -F nfe=5 -F rho=4 -F seed=0 \\
           http://127.0.0.1:7860/api/super-resolve -o sr.png
    """
    log = Log(quiet)
    try:
        import python_multipart  # noqa: F401  (Starlette's form parser)
        import uvicorn

        from ..demo.app import create_app
    except ImportError:
        raise CliError(DEMO_EXTRA_HINT) from None

    from ..demo.service import ModelChoice
    from ..runtime import resolve_device, torch_dtype

    choices = [ModelChoice(Path(model).name if Path(model).suffix else model, model, preset, autoencoder)]
    choices += [ModelChoice(name, name) for name in ("bundled", "bundled-discrete") if name != model]
    dev = resolve_device(device)
    app = create_app(choices, device=dev, dtype=torch_dtype(dtype), max_pixels=max_pixels, max_waiting=max_waiting)
    _check_port(host, port)
    app.state.demo.store.get(choices[0].name)  # a checkpoint that does not load fails now, in one line
    log(f"cresshift demo on http://{host}:{port} (model {choices[0].name}, device {dev}); Ctrl-C stops it")
    uvicorn.run(app, host=host, port=port, log_level="warning" if quiet else "info")


def _check_port(host: str, port: int) -> None:
    """One line (exit 2) if ``host:port`` cannot be listened on, before uvicorn tries."""
    import socket

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise CliError(f"port {port} is in use on {host}; choose another with --port") from None
        raise CliError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None

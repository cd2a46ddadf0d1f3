"""What every command shares: device, dtype names, the torchrun context, progress bars, versions, error lines.

Bottom layer: imports nothing from cresshift at module level and loads torch / rich only
inside the functions that need them, so any module (and ``cresshift --help``) may import it.
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Any, Optional

__all__ = ["DTYPES", "torch_dtype", "resolve_device", "Distributed", "progress_bar", "versions", "first_line"]

#: network precisions the commands accept, by name (float32: no autocast)
DTYPES = ("float32", "float16", "bfloat16")


def torch_dtype(name: Optional[str]) -> Any:
    """The autocast dtype for a precision name: None for ``None`` / ``float32``, else torch.float16 / bfloat16."""
    import torch

    table = {None: None, "float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if name not in table:
        raise ValueError(f"unknown dtype {name!r}; valid: {', '.join(DTYPES)}")
    return table[name]


def resolve_device(name: str, local_rank: int = 0) -> Any:
    """``auto`` -> CUDA if available else CPU; a bare ``cuda`` -> ``cuda:<local_rank>`` (made current)."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but no CUDA device is available")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    return dev


class Distributed:
    """torchrun awareness: rank, world size, barrier and gather (a no-op in one process).

    Under torchrun (``WORLD_SIZE`` > 1) it initialises the process group (NCCL for
    ``device_kind="cuda"``, gloo otherwise) unless one exists; ``close`` destroys only a group it made.
    """

    def __init__(self, device_kind: str) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.created = False
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
            self.created = True
        if self.world > 1:
            self.world, self.rank = dist.get_world_size(), dist.get_rank()

    def barrier(self) -> None:
        if self.world > 1:
            self.dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` on rank 0 (in rank order); other ranks get an empty list."""
        if self.world == 1:
            return [obj]
        out: Optional[list[Any]] = [None] * self.world if self.rank == 0 else None
        self.dist.gather_object(obj, out, dst=0)
        return out or []

    def close(self) -> None:
        if self.created and self.dist.is_initialized():
            self.dist.destroy_process_group()


def progress_bar(quiet: bool) -> Any:
    """A transient rich progress bar on stderr (description, bar, n/N, times); off if quiet or not a terminal."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=True,
                    disable=quiet or not sys.stderr.isatty())


def versions() -> dict[str, str]:
    """Python, platform and the versions of cresshift and its numerical dependencies (for result files)."""
    from importlib import metadata

    import torch

    import cresshift

    out = {"python": platform.python_version(), "platform": platform.platform(), "cresshift": cresshift.__version__,
           "torch": torch.__version__}  # with its build tag (+cu130, +cpu)
    for pkg in ("numpy", "lpips", "pytorch-msssim", "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def first_line(err: BaseException, limit: Optional[int] = None) -> str:
    """The first line of an exception's message (its type name if empty), cut to ``limit`` characters."""
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line if limit is None else line[:limit]

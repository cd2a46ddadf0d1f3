"""Training checkpoints: the resumable state file (written atomically, pruned to the last K), the checks a
resume makes, and the Ctrl-C guard that keeps a step or a save whole.

A state is plain tensors, numbers and strings, read back with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import json
import signal
import threading
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from ..data.io import atomic_write
from ..models.checkpoints import torch_load_reason

__all__ = ["NonFiniteTrainingError", "first_nonfinite", "nonfinite_weights", "write_state", "read_state",
           "check_resumable", "torch_save", "InterruptGuard"]

#: settings a resumed run must share with the checkpoint (continuous time adds the schedule's)
RESUME_KEYS = ("time", "crop", "sf", "batch", "micro_batch", "seed", "loss_weight", "degrade", "trainable", "scale_aug",
               "t_sampler")
#: the value meant when a checkpoint lacks one of these keys
RESUME_DEFAULTS = {"trainable": "all", "scale_aug": 1.0, "t_sampler": "uniform"}


class NonFiniteTrainingError(ValueError):
    """Training met a non-finite loss, gradient or weight; it stops without saving that state."""


def first_nonfinite(tensors: dict[str, torch.Tensor]) -> Optional[str]:
    """The name of the first floating-point tensor holding NaN or inf, else None."""
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def nonfinite_weights(state: dict[str, Any]) -> Optional[str]:
    """The first network or EMA tensor (``ema.<name>``) of a state holding NaN or inf, else None."""
    return first_nonfinite({**state["net"], **{f"ema.{k}": v for k, v in state["ema"].items()}})


def write_state(state: dict[str, Any], out: Path, name: str, keep_last: int) -> Path:
    """Write ``state`` to ``out/name`` atomically, then delete all but the newest ``keep_last`` ckpt-*.pt."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    atomic_write(path, lambda tmp: torch_save(state, tmp))
    ckpts = sorted(out.glob("ckpt-*.pt"))
    for old in ckpts[:-keep_last] if keep_last > 0 else []:
        old.unlink()
    return path


def read_state(path: Path) -> dict[str, Any]:
    """A training checkpoint's state (``weights_only``: a file can never run code); ValueError if it is none."""
    if not path.is_file():
        raise ValueError(f"resume file not found: {path}")
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read {path} as a cresshift training checkpoint: {torch_load_reason(err)}") from None
    if not isinstance(st, dict) or "settings" not in st or "data_rng" not in st:
        raise ValueError(f"{path} is not a cresshift training checkpoint (ckpt-*.pt from cresshift finetune)")
    return st


def check_resumable(st: dict[str, Any], path: Path, *, settings: Any, config: dict[str, Any],
                    world: int) -> None:
    """Raise ValueError unless ``st`` continues this run exactly: the same model and diffusion ``config``,
    the ``settings`` (a TrainSettings) that shape the data and loss, the number of processes, and finite weights."""
    if st.get("model_config") != json.dumps(config["model"], sort_keys=True):
        raise ValueError(f"{path} was written for another model configuration; resume with the same settings")
    if st.get("diffusion_config") != json.dumps(config["diffusion"], sort_keys=True):
        raise ValueError(f"{path} was written for another diffusion (kappa, schedule or output type)")
    old = json.loads(st["settings"])
    keys = list(RESUME_KEYS) + (["schedule", "a", "lam"] if settings.time == "continuous" else [])
    for k in keys:
        if old.get(k, RESUME_DEFAULTS.get(k)) != getattr(settings, k):
            raise ValueError(f"{path} was trained with {k}={old.get(k, RESUME_DEFAULTS.get(k))!r}, "
                             f"these settings say {getattr(settings, k)!r}")
    if int(st.get("world_size", 1)) != world:
        raise ValueError(f"{path} was written by {st.get('world_size', 1)} processes; resume it with the same number "
                         f"(got {world}) so that every rank continues its own data order")
    bad = nonfinite_weights(st)
    if bad is not None:
        raise NonFiniteTrainingError(f"{path} holds NaN or inf weights ({bad}); resume from an earlier checkpoint")


def torch_save(obj: Any, path: str) -> None:
    """torch.save through a file object that keeps the OSError of a failed write (a full disk).

    torch.save reports a failed write as ``RuntimeError: [enforce fail at inline_container.cc]``;
    the recorded OSError (ENOSPC, EIO ...) is raised instead.
    """
    with open(path, "wb") as fh:
        writer = _RecordingWriter(fh)
        try:
            torch.save(obj, writer)
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None
            raise


class _RecordingWriter:
    """A write-only file wrapper that remembers the last OSError its ``write`` raised."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.error: Optional[OSError] = None

    def write(self, data: Any) -> int:
        try:
            return self.fh.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.fh.flush()


class InterruptGuard:
    """SIGINT during training: the first asks to stop after the current step; a later one stops at once,
    except inside a step or a save (``critical``), where it waits for the end of that block."""

    def __init__(self) -> None:
        self.requested = 0
        self.depth = 0
        self.pending = False

    def on_sigint(self, signum: int, frame: Any) -> None:
        self.requested += 1
        if self.requested > 1:
            if self.depth:
                self.pending = True
            else:
                raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The handler, while the block runs (main thread only; elsewhere signals are not ours)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = signal.signal(signal.SIGINT, self.on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, old)

    @contextlib.contextmanager
    def critical(self, *, raise_pending: bool = True) -> Iterator[None]:
        """A block a second Ctrl-C does not cut: it is raised at the block's end (unless ``raise_pending`` is False)."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if self.depth == 0 and self.pending:
            self.pending = False
            if raise_pending:
                raise KeyboardInterrupt

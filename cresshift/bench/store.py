"""The resumable record store: per-(row, image, draw) results as fsynced JSON lines, and the run.json guard."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from ..runtime import Distributed
    from .settings import BenchSettings


class RecordStore:
    """Per-image results as JSON lines, appended and fsynced as they finish; one file per rank."""

    def __init__(self, out: Optional[Path], rank: int = 0) -> None:
        self.out = out
        self.path = None if out is None else out / ("results.jsonl" if rank == 0 else f"results.rank{rank}.jsonl")

    def files(self) -> list[Path]:
        return [] if self.out is None else sorted(self.out.glob("results*.jsonl"))

    def load(self) -> dict[tuple[str, str, int], dict[str, Any]]:
        """Every complete record in ``out`` by (row, image, draw) (a line cut short by a kill is ignored), first one wins."""
        from ..data.io import restore_nonfinite

        done: dict[tuple[str, str, int], dict[str, Any]] = {}
        for f in self.files():
            for line in f.read_text(encoding="utf-8").splitlines():
                try:
                    rec = restore_nonfinite(json.loads(line))
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict) and "row" in rec and "image" in rec:
                    done.setdefault(record_key(rec), rec)
        return done

    def append(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        from ..data.io import strict_json

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


def record_key(rec: dict[str, Any]) -> tuple[str, str, int]:
    """A record's identity in the store: (row key, image name, draw)."""
    return rec["row"], rec["image"], int(rec.get("draw", 0))


def prepare_out(settings: BenchSettings, store: RecordStore, dist: Distributed) -> None:
    """Create ``out``; refuse results of another run; ``fresh`` deletes the old records first.

    A run.json with no records beside it (a run that failed before its first result) is
    replaced, so the corrected command can start.
    """
    from ..data.io import atomic_write, remove_stale_temps, strict_json

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

"""A single-worker job queue: one super-resolution runs at a time, later ones wait in order.

Each job reports progress (solver steps done of total) and can be cancelled while it waits or
runs: the running job checks for cancellation at every solver step (the solver callback).
Finished jobs are kept (the newest ``keep``) so their images can still be fetched.
"""
from __future__ import annotations

import collections
import itertools
import queue
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

__all__ = ["Job", "JobQueue", "JobCancelled", "QueueFull", "RequestError"]


class RequestError(ValueError):
    """A request the user can fix: HTTP ``status`` (4xx) and a one-line message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class JobCancelled(Exception):
    """Raised inside a running job when its cancellation was requested."""


class QueueFull(RequestError):
    """More jobs are waiting than the queue holds."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the demo is busy: {limit} runs are already waiting; try again in a minute", status=503)


_TERMINAL = ("done", "failed", "cancelled")


@dataclass
class Job:
    """One queued run: ``work(job)`` returns the result; state queued -> running -> done | failed | cancelled."""

    work: Callable[["Job"], Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    ticket: int = 0
    state: str = "queued"
    done: int = 0
    total: int = 0
    result: Any = None
    error: Optional[str] = None
    status: int = 200
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    def progress(self, done: int, total: int) -> None:
        """Record progress; raise ``JobCancelled`` if cancellation was requested (called at every solver step)."""
        self.done, self.total = done, total
        if self.cancel_requested.is_set():
            raise JobCancelled()

    def finish(self, state: str, *, result: Any = None, error: Optional[str] = None, status: int = 200) -> None:
        """Set the final state, result or error and HTTP status, and wake everyone waiting on ``finished``."""
        self.state, self.result, self.error, self.status = state, result, error, status
        self.finished.set()


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


class JobQueue:
    """Runs submitted jobs one at a time on a daemon worker thread, in submission order."""

    def __init__(self, *, max_waiting: int = 16, keep: int = 32) -> None:
        self.max_waiting = max_waiting
        self._queue: "queue.Queue[Optional[Job]]" = queue.Queue()
        self._jobs: "collections.OrderedDict[str, Job]" = collections.OrderedDict()
        self._keep = keep
        self._lock = threading.Lock()
        self._tickets = itertools.count(1)
        self._worker = threading.Thread(target=self._loop, name="cresshift-demo-worker", daemon=True)
        self._worker.start()

    def submit(self, work: Callable[[Job], Any]) -> Job:
        """Queue ``work``; ``QueueFull`` if ``max_waiting`` jobs already wait."""
        with self._lock:
            if self.waiting() >= self.max_waiting:
                raise QueueFull(self.max_waiting)
            job = Job(work, ticket=next(self._tickets))
            self._jobs[job.id] = job
            self._forget_old()
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> Optional[Job]:
        with self._lock:
            return self._jobs.get(job_id)

    def waiting(self) -> int:
        """Jobs queued and not started."""
        return sum(1 for j in list(self._jobs.values()) if j.state == "queued")

    def ahead_of(self, job: Job) -> int:
        """How many queued or running jobs come before ``job``."""
        return sum(1 for j in list(self._jobs.values())
                   if j.ticket < job.ticket and j.state in ("queued", "running"))

    def cancel(self, job: Job) -> None:
        """Ask ``job`` to stop: a queued job never starts, a running one stops at its next solver step."""
        job.cancel_requested.set()

    def close(self) -> None:
        """Stop the worker after the current job (queued jobs are cancelled)."""
        for job in list(self._jobs.values()):
            if job.state == "queued":
                job.cancel_requested.set()
        self._queue.put(None)

    def _forget_old(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.state in _TERMINAL]
        for key in finished[: max(0, len(finished) - self._keep)]:
            del self._jobs[key]

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.cancel_requested.is_set():
                job.finish("cancelled", error="cancelled before it started", status=409)
                continue
            job.state = "running"
            try:
                job.finish("done", result=job.work(job))
            except JobCancelled:
                job.finish("cancelled", error="cancelled", status=409)
            except RequestError as err:
                job.finish("failed", error=_one_line(err), status=err.status)
            except (ValueError, FloatingPointError) as err:  # bad options or inputs found by the library
                job.finish("failed", error=_one_line(err), status=400)
            except Exception as err:  # a bug or an out-of-memory: reported in one line, the worker goes on
                job.finish("failed", error=f"{type(err).__name__}: {_one_line(err)}", status=500)

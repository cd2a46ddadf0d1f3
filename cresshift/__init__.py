"""cresshift: continuous-time ResShift — schedules, solvers, models and benchmarks for fast diffusion SR."""
from __future__ import annotations

from typing import Any

from . import grids, schedules
from .solvers import SOLVERS, SampleResult, sample

__version__ = "0.1.0"
__all__ = ["sample", "SOLVERS", "SampleResult", "schedules", "grids", "load_pipeline", "__version__"]


def load_pipeline(name_or_path: str = "bundled", **kwargs: Any) -> Any:
    """Load an SR pipeline: ``bundled``, ``bundled-discrete``, a cresshift file, or an official preset."""
    from .models.pipeline import load_pipeline as _load

    return _load(name_or_path, **kwargs)

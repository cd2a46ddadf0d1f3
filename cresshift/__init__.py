"""cresshift: continuous-time ResShift — schedules, solvers, models and benchmarks for fast diffusion SR.

The top-level names are imported lazily, so ``cresshift --help`` does not load torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["sample", "SOLVERS", "SampleResult", "schedules", "grids", "load_pipeline", "__version__"]

_LAZY = {"sample": ("cresshift.solvers", "sample"), "SOLVERS": ("cresshift.solvers", "SOLVERS"),
         "SampleResult": ("cresshift.solvers", "SampleResult"), "schedules": ("cresshift.schedules", None),
         "grids": ("cresshift.grids", None), "converters": ("cresshift.converters", None)}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        mod = importlib.import_module(module)
        return mod if attr is None else getattr(mod, attr)
    raise AttributeError(f"module 'cresshift' has no attribute {name!r}")


def load_pipeline(name_or_path: str = "bundled", **kwargs: Any) -> Any:
    """Load an SR pipeline: ``bundled``, ``bundled-discrete``, a cresshift file, or an official preset."""
    from .models.pipeline import load_pipeline as _load

    return _load(name_or_path, **kwargs)

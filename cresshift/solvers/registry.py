"""The solver registry's entry type: everything ``sample`` needs to run a solver, in one place."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
import torch

from ..grids import GRID_FAMILIES, GridChoice, GridRequest, make_grid, schedule_kind
from ..schedules import ContinuousSchedule, ResShiftSchedule, as_continuous
from .base import Chain

__all__ = ["SolverSpec", "fixed_grid_chain", "Schedule", "AutoRule"]

Schedule = Union[ResShiftSchedule, ContinuousSchedule]
#: ``grid="auto"`` for one schedule kind: ((up to this NFE, grid), ..., (None, grid beyond))
AutoRule = tuple[tuple[Optional[int], GridChoice], ...]


def _no_defaults(schedule: ContinuousSchedule) -> dict[str, Any]:
    return {}


def fixed_grid_chain(spec: "SolverSpec", schedule: Schedule, nfe: Optional[int], grid: GridRequest = None,
                     rho: Optional[float] = None) -> Chain:
    """The grid hook of solvers over an explicit time grid: the largest grid of the requested family
    whose NFE (``spec.nfe_for_points``) fits ``nfe``, or an explicit grid checked against it."""
    cont = as_continuous(schedule)
    explicit = grid is not None and not (isinstance(grid, str) and (grid in GRID_FAMILIES or grid == "auto"))
    if nfe is None and not explicit:
        raise ValueError(f"solver {spec.name!r} needs an nfe budget")
    if nfe is not None and not explicit and nfe < spec.min_nfe:
        raise ValueError(f"solver {spec.name!r} needs nfe >= {spec.min_nfe}, got nfe={nfe}")
    n = spec.points_for_nfe(nfe) if nfe is not None and not explicit else sys.maxsize
    ts = make_grid(grid, n, cont, rho=rho, solver=spec)
    if len(ts) < spec.min_points:
        raise ValueError(f"solver {spec.name!r} needs a grid of at least {spec.min_points} times, got {len(ts)}")
    if explicit and nfe is not None and spec.nfe_for_points(len(ts)) > nfe:
        raise ValueError(f"a grid of {len(ts)} points costs {spec.nfe_for_points(len(ts))} NFE with {spec.name!r}, "
                         f"over the budget nfe={nfe}")
    return Chain(ts=ts, eta_start=float(cont.eta(float(ts[0]))), kwargs=dict(schedule=cont, ts=ts))


@dataclass(frozen=True)
class SolverSpec:
    """A registered solver: its function, order, NFE rule, grid hook, options and default grid.

    ``fn(model, x, y, *, callback, **chain.kwargs, **options)`` runs it; ``chain(spec, schedule,
    nfe, grid, rho)`` prepares its grid (``fixed_grid_chain``; Markov: the respaced chain);
    ``options`` are the keyword options it accepts, ``defaults(schedule)`` their per-schedule
    defaults; ``auto`` maps a schedule kind (``cresshift.grids.schedule_kind``; ``"default"``
    for the rest) to the grid ``grid="auto"`` means, by NFE (``AutoRule``; chosen with
    benchmarks/solver_accuracy.py).
    """

    name: str
    fn: Callable[..., torch.Tensor]
    order: float
    evals_per_step: int  # network calls per grid step (the final x0_hat call is one more)
    min_points: int = 2
    stochastic: bool = False
    description: str = ""
    option_names: tuple[str, ...] = ()
    defaults: Callable[[ContinuousSchedule], dict[str, Any]] = _no_defaults
    chain: Callable[..., Chain] = fixed_grid_chain
    auto: Mapping[str, AutoRule] = field(default_factory=lambda: {"default": ((None, GridChoice("rho", 1.0)),)})
    budget_hint: str = ""  # appended when the solver asks for more than its NFE budget
    check: Optional[Callable[[Mapping[str, Any]], None]] = None  # raises ValueError for bad option values

    def points_for_nfe(self, nfe: int) -> int:
        """The largest grid whose NFE (evals_per_step (n - 1) + 1) is within ``nfe``."""
        return (nfe - 1) // self.evals_per_step + 1

    def nfe_for_points(self, n: int) -> int:
        """NFE of a grid of ``n`` points: evals_per_step (n - 1) + 1."""
        return self.evals_per_step * (n - 1) + 1

    @property
    def min_nfe(self) -> int:
        return self.nfe_for_points(self.min_points)

    def options(self) -> list[str]:
        """Keyword options the solver function accepts (beyond the common ones)."""
        return list(self.option_names)

    def auto_grid(self, schedule: Schedule, n: Optional[int] = None) -> GridChoice:
        """The grid ``grid="auto"`` means for this solver on ``schedule`` with ``n`` points (None: many)."""
        rule = self.auto.get(schedule_kind(schedule), self.auto["default"])
        nfe = None if n is None else self.nfe_for_points(n)
        return next(choice for up_to, choice in rule if up_to is None or (nfe is not None and nfe <= up_to))

    def grid(self, schedule: Schedule, nfe: Optional[int], *, rho: Optional[float] = None,
             grid: GridRequest = None) -> np.ndarray:
        """The decreasing times this solver evaluates the network at for a budget and a grid request."""
        return self.chain(self, schedule, nfe, grid, rho).ts

    def check_options(self, options: Mapping[str, Any]) -> None:
        """ValueError for an option this solver does not take or a value it refuses."""
        unknown = set(options) - set(self.option_names)
        if unknown:
            raise ValueError(f"solver {self.name!r} does not take {', '.join(sorted(unknown))}; "
                             f"its options are: {', '.join(self.option_names) or 'none'}")
        if self.check is not None:
            self.check(options)

    def solver_options(self, schedule: Schedule, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` checked (``check_options``) over the per-schedule defaults (None keeps a default)."""
        self.check_options(options)
        merged = self.defaults(as_continuous(schedule))
        merged.update({k: v for k, v in options.items() if not (v is None and k in merged)})
        return merged

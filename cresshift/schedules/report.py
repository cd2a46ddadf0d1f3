"""The fit report: how well the exp-alpha fit and the exact continuation reproduce a discrete eta table."""
from __future__ import annotations

import warnings
from typing import Any, Optional

from .continuous import ContinuousSchedule, ExactSchedule, ExpAlphaSchedule, ScheduleMismatchWarning
from .discrete import ResShiftSchedule

__all__ = ["fit_candidates", "fit_report"]

#: relative miss of eta(1) against eta_T above which the report warns
END_MISS_TOLERANCE = 0.01


def fit_candidates(discrete: ResShiftSchedule) -> dict[str, ContinuousSchedule]:
    """The continuous schedules a report compares: the exp-alpha fit, the exact continuation, and the
    paper's constants when ``discrete`` is the realsr-x4-v1 table they were made for."""
    candidates: dict[str, ContinuousSchedule] = {"exp-alpha fit": ExpAlphaSchedule.fit(discrete, warn=False),
                                                 "exact": ExactSchedule(discrete)}
    if discrete == ResShiftSchedule.from_config("realsr-x4-v1"):
        candidates["paper (a=1.1113)"] = ExpAlphaSchedule.paper(warn=False)
    return candidates


def fit_report(discrete: ResShiftSchedule, *, source: str,
               candidates: Optional[dict[str, ContinuousSchedule]] = None) -> dict[str, Any]:
    """JSON-ready report: the fit's (a, lam), the table, and per candidate eta(k/T) - eta_k, the largest
    absolute and relative error, eta(1) and its relative miss of eta_T.

    Warns (ScheduleMismatchWarning) when the fit's eta(1) misses eta_T by more than 1 %.
    """
    candidates = fit_candidates(discrete) if candidates is None else candidates
    fit = candidates["exp-alpha fit"]
    assert isinstance(fit, ExpAlphaSchedule)
    report: dict[str, Any] = {
        "source": source, "discrete": discrete.to_config(), "T": discrete.T, "kappa": discrete.kappa,
        "a": fit.a, "lam": fit.lam, "fitted_schedule": fit.to_config(),
        "t": [(k + 1) / discrete.T for k in range(discrete.T)], "eta_k": discrete.etas.tolist(), "schedules": {}}
    for name, sched in candidates.items():
        err = sched.discrete_error(discrete)
        report["schedules"][name] = {
            "config": sched.to_config(), "eta_at_steps": sched.step_etas().tolist(), "error": err.tolist(),
            "max_abs_error": float(abs(err).max()), "max_rel_error": float((abs(err) / discrete.etas).max()),
            "eta_1": float(sched.eta(1.0)), "end_rel_miss": sched.check_end(discrete, tol=float("inf"))}
    miss = report["schedules"]["exp-alpha fit"]["end_rel_miss"]
    if miss > END_MISS_TOLERANCE:
        warnings.warn(f"the fit's eta(1) = {fit.eta(1.0):.4f} misses eta_T = {discrete.etas[-1]:.4f} by "
                      f"{100 * miss:.1f} % (> {100 * END_MISS_TOLERANCE:g} %): its prior does not match the trained marginals",
                      ScheduleMismatchWarning, stacklevel=2)
    return report

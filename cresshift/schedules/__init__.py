"""Schedules: the official discrete eta table and continuous eta(t) (design §2–3)."""
from .continuous import (ContinuousSchedule, ExactSchedule, ExpAlphaSchedule, ScheduleMismatchWarning,
                         as_continuous, schedule_from_config)
from .discrete import PRESETS, ResShiftSchedule
from .report import fit_candidates, fit_report

__all__ = ["ResShiftSchedule", "ExpAlphaSchedule", "ExactSchedule", "ContinuousSchedule",
           "ScheduleMismatchWarning", "schedule_from_config", "as_continuous", "PRESETS",
           "fit_candidates", "fit_report"]

"""AdaMod Lab studies: specs, workloads, the trial loop, the robustness report (no HTTP here)."""

from __future__ import annotations

from studies.records import TrialRecord
from studies.spec import (
    BOUNDED_OPTIMIZERS,
    DEFAULT_MAX_TRIALS,
    OPTIMIZERS,
    Budget,
    LrGrid,
    StudySpec,
    TrialConfig,
    expand_grid,
    load_spec,
)

__all__ = [
    "BOUNDED_OPTIMIZERS",
    "DEFAULT_MAX_TRIALS",
    "OPTIMIZERS",
    "Budget",
    "LrGrid",
    "StudySpec",
    "TrialConfig",
    "TrialRecord",
    "expand_grid",
    "load_spec",
]

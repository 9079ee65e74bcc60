"""Aggregate trial counts for monitoring (GET /metrics), read from the rows at scrape time.

Reading them from the database, not counting events in one process, keeps them right across API
restarts and with several API replicas. Each function is one aggregate query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import case, func, select

from studies.db.engine import Database
from studies.db.models import TRIAL_STATES, TrialRow

__all__ = ["DurationHistogram", "trial_durations", "trial_state_counts"]


def trial_state_counts(db: Database) -> dict[str, int]:
    """How many trials are in each state (every state present, zeros included): one GROUP BY."""
    with db.session(readonly=True) as session:
        rows = session.execute(select(TrialRow.state, func.count()).group_by(TrialRow.state)).all()
    counts = dict.fromkeys(TRIAL_STATES, 0)
    counts.update({str(state): int(n) for state, n in rows})
    return counts


@dataclass
class DurationHistogram:
    """Cumulative counts of finished trials with duration_s <= each bound, their count and sum."""

    bounds: list[float]
    cumulative: list[int]
    count: int
    total_s: float


def trial_durations(
    db: Database, bounds: Sequence[float], states: Sequence[str] = ("completed", "diverged")
) -> DurationHistogram:
    """The histogram of stored durations of trials in `states`, bucketed in SQL (one query)."""
    ordered = sorted(float(b) for b in bounds)
    columns = [func.sum(case((TrialRow.duration_s <= bound, 1), else_=0)) for bound in ordered]
    query = select(func.count(), func.coalesce(func.sum(TrialRow.duration_s), 0.0), *columns).where(
        TrialRow.state.in_(tuple(states)), TrialRow.duration_s.is_not(None)
    )
    with db.session(readonly=True) as session:
        row = session.execute(query).one()
    count, total, *cumulative = row
    return DurationHistogram(
        bounds=ordered,
        cumulative=[int(c or 0) for c in cumulative],
        count=int(count),
        total_s=float(total or 0.0),
    )

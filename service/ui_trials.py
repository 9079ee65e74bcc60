"""The rows of the study page's trial table, read without the columns the table does not show.

studies.db.list_trials returns every trial whole (curve, bound telemetry) for GET /trials; the
page's table, re-read at each progress change while a study runs, needs none of that. Reading
only its columns keeps a poll of a study of thousands of trials cheap: see
benchmarks/ui_study_page.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from studies.db import Database
from studies.db.models import StudyRow, TrialRow
from studies.db.optuna_bridge import capped_value


@dataclass(frozen=True)
class TrialTableRow:
    """One row of the trial table: what the template shows of a trial."""

    id: int
    number: int
    params: dict[str, Any]
    state: str
    value: float | None
    attempts: int
    worker: dict[str, Any]
    duration_s: float | None
    error: str | None
    pack_size: int | None  # None: not finished; 1 for rows stored before trial packs
    reused_from: int | None


def trial_table(db: Database, study_id: int) -> list[TrialTableRow] | None:
    """Every trial of a study in grid order, table columns only; None for an unknown study."""
    columns = (
        TrialRow.id,
        TrialRow.number,
        TrialRow.params,
        TrialRow.state,
        TrialRow.loss,
        TrialRow.loss0,
        TrialRow.attempts,
        TrialRow.worker_host,
        TrialRow.worker_pid,
        TrialRow.worker_device,
        TrialRow.duration_s,
        TrialRow.error,
        TrialRow.result,  # small (curve and telemetry have their own columns): for pack_size
        TrialRow.reused_from,
    )
    with db.session(readonly=True) as session:
        if session.get(StudyRow, study_id) is None:
            return None
        rows = session.execute(
            select(*columns).where(TrialRow.study_id == study_id).order_by(TrialRow.number)
        ).all()
    table = []
    for r in rows:
        finished = r.state in ("completed", "diverged")
        worker = (
            {}
            if r.worker_host is None and r.worker_pid is None
            else {"host": r.worker_host, "pid": r.worker_pid, "device": r.worker_device}
        )
        table.append(
            TrialTableRow(
                id=r.id,
                number=r.number,
                params=r.params or {},
                state=r.state,
                value=capped_value(r.state, r.loss, r.loss0) if finished else None,
                attempts=r.attempts,
                worker=worker,
                duration_s=r.duration_s,
                error=r.error,
                pack_size=((r.result or {}).get("pack_size") or 1) if finished else None,
                reused_from=r.reused_from,
            )
        )
    return table

"""Retrying a study: its failed and cancelled trials queued again (POST /studies/{id}/retry).

A module of its own because it is the one operation that moves trials backwards: everywhere else
a trial only moves forward (queued, running, then a terminal state), and the queue, the report
cache and the Optuna repair pass were written with that in mind. Keeping the reset in one place,
with the reasons beside it, makes the exception easy to find.

In one transaction (the study row locked first, then the trial rows in id order, then their
Optuna trials: the lock order of cancel_study and of the queue's writes):

- every trial in state `failed` or `cancelled` becomes `queued` as if new: attempts 0, error,
  lease, worker, result, curve, start and finish times cleared (its config and grid number stay);
- a cancelled study is cancelled no more, so the requeued trials are claimed and its running
  trials (which would have stopped at their next evaluation) run to completion;
- each requeued trial's Optuna trial is made WAITING again, its old value, curve and result
  attributes removed (optuna_bridge.reopen_trials): grid point k stays Optuna trial number k and
  the re-run's claim makes it RUNNING as for any re-run. A trial cancelled before it ever ran has
  no Optuna trial; its claim creates one. Where Optuna is written through its storage API only
  (optuna_bridge.direct_writes is false) a finished Optuna trial cannot be reopened: it stays,
  and the re-run adds a new one.

Running, queued, completed and diverged trials are not touched (divergence is a result).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import null, select, update

from studies.db.engine import Database
from studies.db.models import TrialRow
from studies.db.optuna_bridge import direct_writes, handle_in_session, reopen_trials
from studies.db.repository import StudyView, get_study, lock_study_row

__all__ = ["RETRIED_STATES", "RetryOutcome", "retry_study"]

RETRIED_STATES = ("failed", "cancelled")


@dataclass
class RetryOutcome:
    """The study after a retry, and how many of its trials were queued again."""

    study: StudyView
    requeued: int


def retry_study(db: Database, study_id: int) -> RetryOutcome | None:
    """Queues a study's failed and cancelled trials again, in one transaction; None when the
    study does not exist. Nothing to retry is not an error: `requeued` is then 0."""
    direct = direct_writes(db.url)  # outside the transaction: it may read Optuna's schema
    with db.session() as session:
        study = lock_study_row(session, study_id)  # as cancel_study does
        if study is None:
            return None
        retried = session.execute(
            select(TrialRow.id, TrialRow.optuna_trial_id)
            .where(TrialRow.study_id == study_id, TrialRow.state.in_(RETRIED_STATES))
            .order_by(TrialRow.id)
            .with_for_update()
        ).all()
        ids = [row.id for row in retried]
        if ids:
            values = _fresh_trial_values()
            if not direct:
                values["optuna_trial_id"] = None  # the re-run's completion records a new one
            session.execute(
                update(TrialRow)
                .where(TrialRow.id.in_(ids), TrialRow.state.in_(RETRIED_STATES))
                .values(**values),
                execution_options={"synchronize_session": False},
            )
            optuna_ids = [int(row.optuna_trial_id) for row in retried if row.optuna_trial_id]
            if direct and optuna_ids:
                # None when the Optuna study is gone: the claim then finds its trial missing and
                # creates a new one, as it does after any deletion of the mirror.
                handle = handle_in_session(session, db.url, study_id)
                if handle is not None:
                    reopen_trials(session, handle, optuna_ids)
        if study.cancelled:
            study.cancelled = False
            study.cancelled_at = None
    view = get_study(db, study_id)
    return None if view is None else RetryOutcome(study=view, requeued=len(ids))


def _fresh_trial_values() -> dict[str, object]:
    """The columns of a trial that has never run (what create_study writes, config aside); SQL
    NULL, not JSON null, in the JSON columns, as on a new row."""
    cleared = (
        "lease_token",
        "lease_expires_at",
        "worker_host",
        "worker_pid",
        "worker_device",
        "value",
        "loss",
        "loss0",
        "accuracy",
        "curve",
        "bound_stats",
        "result",
        "steps",
        "duration_s",
        "error",
        "reuse_key",
        "reused_from",
        "started_at",
        "claimed_at",
        "finished_at",
    )
    return {
        "state": "queued",
        "attempts": 0,
        "optuna_final": False,
        **dict.fromkeys(cleared, null()),
    }

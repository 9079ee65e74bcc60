"""The worker registry: who is alive, on which machine and device, training which trials.

Each worker process registers a row under a random token at start, its heartbeat beats it (one
UPDATE: last_beat_at and the trials it holds), and it marks the row exited on the way out. A
worker killed without warning (SIGKILL, a lost machine) simply stops beating: it is *live* while
its last beat is younger than `stale_after_s` (about three heartbeat intervals), *lost* after
that, and its row is pruned once its last beat is older than PRUNE_AFTER_S (exited rows too), so
the table stays small. Times come from the database server on PostgreSQL, as in the queue.

`end_cancelled_expired` is the other half of liveness: a running trial of a cancelled study whose
lease expired (its worker died after the cancel) is ended as cancelled by whoever calls it, a
worker or the API, so a cancelled study always finishes.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Interval, and_, delete, func, literal, select, update

from studies.db.engine import Database
from studies.db.models import StudyRow, TrialRow, UtcDateTime, WorkerRow, utcnow
from studies.db.optuna_bridge import sync_optuna

__all__ = [
    "DEFAULT_STALE_AFTER_S",
    "PRUNE_AFTER_S",
    "WORKER_STATES",
    "WorkerIdentity",
    "WorkerView",
    "beat",
    "end_cancelled_expired",
    "live_worker_count",
    "live_workers",
    "mark_exited",
    "prune_workers",
    "register_worker",
]

# What a worker row says of itself; "lost" is derived (no beat for stale_after_s), never stored.
WORKER_STATES = ("running", "stopping", "exited")
DEFAULT_STALE_AFTER_S = 60.0  # three beats of the default 60 s lease (a beat every 20 s)
PRUNE_AFTER_S = 24 * 3600.0
CANCELLED_EXPIRED_ERROR = "lease expired after the study was cancelled: the worker stopped"
_NO_SYNC = {"synchronize_session": False}


@dataclass(frozen=True)
class WorkerIdentity:
    """Who a registered worker is: its row's id and what it told the registry at start."""

    worker_id: str
    host: str
    pid: int
    device: str
    pack_size: int | None = None


@dataclass
class WorkerView:
    """One worker as GET /workers shows it; `state` is "lost" when it stopped beating."""

    id: str
    host: str
    pid: int
    device: str
    pack_size: int | None
    state: str
    current_trial_ids: list[int]
    started_at: datetime
    last_beat_at: datetime
    exited_at: datetime | None


def _now(db: Database) -> ColumnElement[Any]:
    # The server's clock on PostgreSQL (one clock for every machine); SQLite is one machine.
    if db.is_postgres:
        return func.now()
    return literal(utcnow(), UtcDateTime())


def _ago(db: Database, seconds: float) -> ColumnElement[Any]:
    if db.is_postgres:
        return func.now() - literal(timedelta(seconds=seconds), Interval())
    return literal(utcnow() - timedelta(seconds=seconds), UtcDateTime())


def _check_state(state: str) -> str:
    if state not in WORKER_STATES:
        raise ValueError(f"worker state: must be one of {WORKER_STATES} (got {state!r})")
    return state


def _check_seconds(name: str, seconds: float) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise ValueError(f"{name}: must be a number > 0 (got {seconds!r})")
    return float(seconds)


def register_worker(
    db: Database, *, host: str, pid: int, device: str, pack_size: int | None = None
) -> WorkerIdentity:
    """Registers a worker process under a fresh random id (state running, beaten now)."""
    identity = WorkerIdentity(secrets.token_hex(16), host[:255], int(pid), device[:64], pack_size)
    reregister(db, identity)
    return identity


def reregister(db: Database, identity: WorkerIdentity, trial_ids: Sequence[int] = ()) -> None:
    """Inserts the row of `identity` again (a worker whose row was pruned while it was frozen)."""
    with db.session() as session:
        now = _now(db)
        session.execute(
            WorkerRow.__table__.insert().values(
                id=identity.worker_id,
                host=identity.host,
                pid=identity.pid,
                device=identity.device,
                pack_size=identity.pack_size,
                state="running",
                current_trial_ids=[int(t) for t in trial_ids],
                started_at=now,
                last_beat_at=now,
            )
        )


def beat(
    db: Database, worker_id: str, trial_ids: Sequence[int] = (), *, state: str = "running"
) -> bool:
    """One heartbeat: last_beat_at = now, the trials held now, and the state (running or
    stopping), in one UPDATE. False when the row is gone (pruned) or the worker exited."""
    if _check_state(state) == "exited":
        raise ValueError("worker state: use mark_exited to exit")
    with db.session() as session:
        updated = session.execute(
            update(WorkerRow)
            .where(WorkerRow.id == worker_id, WorkerRow.state != "exited")
            .values(
                last_beat_at=_now(db),
                current_trial_ids=sorted(int(t) for t in trial_ids),
                state=state,
            ),
            execution_options=_NO_SYNC,
        ).rowcount
    return updated == 1


def mark_exited(db: Database, worker_id: str) -> bool:
    """Marks a worker exited (it holds nothing any more); False when its row is gone."""
    with db.session() as session:
        now = _now(db)
        updated = session.execute(
            update(WorkerRow)
            .where(WorkerRow.id == worker_id)
            .values(state="exited", current_trial_ids=[], last_beat_at=now, exited_at=now),
            execution_options=_NO_SYNC,
        ).rowcount
    return updated == 1


def _is_live(db: Database, stale_after_s: float) -> ColumnElement[bool]:
    return and_(WorkerRow.state != "exited", WorkerRow.last_beat_at >= _ago(db, stale_after_s))


def live_workers(
    db: Database, stale_after_s: float = DEFAULT_STALE_AFTER_S, *, include_all: bool = False
) -> list[WorkerView]:
    """The live workers, oldest first; `include_all` adds exited and lost ones (not yet pruned).

    A worker is live while it has not exited and its last beat is younger than `stale_after_s`;
    a row that is neither is shown with state "lost".
    """
    stale_after_s = _check_seconds("stale_after_s", stale_after_s)
    live = _is_live(db, stale_after_s)
    query = select(WorkerRow, live.label("live")).order_by(WorkerRow.started_at, WorkerRow.id)
    if not include_all:
        query = query.where(live)
    with db.session(readonly=True) as session:
        rows = session.execute(query).all()
    return [_view(row, bool(is_live)) for row, is_live in rows]


def live_worker_count(db: Database, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> int:
    """How many workers are live (for /metrics): one COUNT."""
    stale_after_s = _check_seconds("stale_after_s", stale_after_s)
    with db.session(readonly=True) as session:
        return int(
            session.execute(
                select(func.count()).select_from(WorkerRow).where(_is_live(db, stale_after_s))
            ).scalar_one()
        )


def _view(row: WorkerRow, live: bool) -> WorkerView:
    return WorkerView(
        id=row.id,
        host=row.host,
        pid=row.pid,
        device=row.device,
        pack_size=row.pack_size,
        state=row.state if live or row.state == "exited" else "lost",
        current_trial_ids=[int(t) for t in row.current_trial_ids or []],
        started_at=row.started_at,
        last_beat_at=row.last_beat_at,
        exited_at=row.exited_at,
    )


def prune_workers(db: Database, older_than_s: float = PRUNE_AFTER_S) -> int:
    """Deletes the rows whose last beat is older than `older_than_s` (exited or lost long ago);
    returns how many. A pruned worker that is merely frozen registers again at its next beat."""
    older_than_s = _check_seconds("older_than_s", older_than_s)
    with db.session() as session:
        return int(
            session.execute(
                delete(WorkerRow).where(WorkerRow.last_beat_at < _ago(db, older_than_s)),
                execution_options=_NO_SYNC,
            ).rowcount
        )


def _study_cancelled() -> ColumnElement[bool]:
    return (
        select(StudyRow.cancelled).where(StudyRow.id == TrialRow.study_id).scalar_subquery()
    ).is_(True)


def _unlocked(db: Database, condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """`condition`, limited on PostgreSQL to rows no other transaction has locked (as in
    queue.requeue_expired: a frozen worker's row lock must not stall the caller)."""
    if not db.is_postgres:
        return condition  # SQLite: one writer at a time, nothing to skip
    ids = select(TrialRow.id).where(condition).with_for_update(skip_locked=True, of=TrialRow)
    return and_(TrialRow.id.in_(ids.scalar_subquery()), condition)


def end_cancelled_expired(db: Database) -> int:
    """Ends the running trials of cancelled studies whose lease expired: state cancelled, lease
    cleared, finished now; returns how many. Also cancels queued trials of cancelled studies.

    The same outcome queue.requeue_expired gives such a trial (an expired lease of a cancelled
    study ends "cancelled", its attempt counted, the reason in `error`), without touching any
    other expired lease, so the API may call it too. Rows another transaction holds are skipped
    on PostgreSQL and ended by a later call.
    """
    expired = and_(
        TrialRow.state == "running", TrialRow.lease_expires_at < _now(db), _study_cancelled()
    )
    abandoned = and_(TrialRow.state == "queued", _study_cancelled())
    with db.session() as session:
        ended = (
            session.execute(
                update(TrialRow)
                .where(_unlocked(db, expired))
                .values(
                    state="cancelled",
                    lease_expires_at=None,
                    finished_at=_now(db),
                    error=CANCELLED_EXPIRED_ERROR,
                )
                .returning(TrialRow.id),
                execution_options=_NO_SYNC,
            )
            .scalars()
            .all()
        )
        session.execute(
            update(TrialRow)
            .where(_unlocked(db, abandoned))
            .values(state="cancelled", finished_at=_now(db)),
            execution_options=_NO_SYNC,
        )
    if ended:  # no worker is left to show them PRUNED in Optuna
        sync_optuna(db, trial_ids=[int(t) for t in ended])
    return len(ended)

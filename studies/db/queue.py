"""The durable trial queue: atomic claim, leases renewed by heartbeat, conditional completion.

Every state change is one short transaction. A claim is one UPDATE ... WHERE id = (SELECT ...
ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING on PostgreSQL, and the same
statement inside BEGIN IMMEDIATE (one writer at a time) on SQLite. Every later write carries the
lease token, so a worker that lost its lease (and whose trial was handed to another) changes
nothing: a trial completes at most once. Times come from the database server on PostgreSQL, so
workers on machines with skewed clocks agree on when a lease expires. renew_leases and
record_evaluations do the same for every member of a trial pack (studies.db.packs) in one
transaction, locking the rows in id order.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Interval,
    and_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    update,
)

from studies.db.engine import Database, finite_or_none
from studies.db.models import StudyRow, TrialRow, UtcDateTime, utcnow
from studies.db.optuna_bridge import (
    FinishedTrial,
    StudyHandle,
    capped_value,
    direct_writes,
    finish_trials,
    handle_in_session,
    record_trial,
    set_trials_waiting,
    start_running_trials,
    study_handle,
    sync_optuna,
    write_intermediates,
)

if TYPE_CHECKING:
    from studies.spec import TrialConfig
    from studies.trial import EvalPoint, TrialResult

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_MAX_ATTEMPTS",
    "ClaimedTrial",
    "WorkerInfo",
    "buffer_evaluation",
    "claim_next_trial",
    "complete_and_claim_next",
    "complete_pack",
    "complete_trial",
    "eval_point_json",
    "fail_attempt",
    "queue_counts",
    "record_evaluation",
    "record_evaluations",
    "release_lease",
    "renew_lease",
    "renew_leases",
    "requeue_expired",
]

DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_MAX_ATTEMPTS = 3
MAX_ERROR_LENGTH = 10_000
_NO_SYNC = {"synchronize_session": False}


@dataclass
class WorkerInfo:
    """Who runs a trial: recorded on the trial row."""

    host: str
    pid: int
    device: str


@dataclass
class ClaimedTrial:
    """A trial this worker holds the lease of; every write about it carries the lease token."""

    trial_id: int
    study_id: int
    lease_token: str
    attempt: int
    config: TrialConfig
    number: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    curve: list[dict[str, Any]] = field(default_factory=list)
    worker: WorkerInfo | None = None
    claimed_at: datetime | None = None
    # The trial's Optuna trial (RUNNING from the claim on; None in the fallback mode), and the
    # steps whose intermediate values are committed there.
    optuna_trial_id: int | None = None
    optuna_steps: set[int] = field(default_factory=set)
    # TrialConfig.pack_key() as stored on the row (None: never packed); see studies.db.packs.
    pack_key: str | None = None


def _check_lease_seconds(lease_seconds: float) -> float:
    if isinstance(lease_seconds, bool) or not isinstance(lease_seconds, int | float):
        raise ValueError(f"lease_seconds: must be a number (got {lease_seconds!r})")
    if not math.isfinite(lease_seconds) or lease_seconds <= 0:
        raise ValueError(f"lease_seconds: must be > 0 (got {lease_seconds!r})")
    return float(lease_seconds)


def _check_max_attempts(max_attempts: int) -> int:
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts: must be an integer >= 1 (got {max_attempts!r})")
    return max_attempts


def _now(db: Database) -> ColumnElement[Any]:
    # The server's clock on PostgreSQL (one clock for every machine); SQLite is one machine.
    if db.is_postgres:
        return func.now()
    return literal(utcnow(), UtcDateTime())


def _lease_until(db: Database, lease_seconds: float) -> ColumnElement[Any]:
    if db.is_postgres:
        return func.now() + literal(timedelta(seconds=lease_seconds), Interval())
    return literal(utcnow() + timedelta(seconds=lease_seconds), UtcDateTime())


def _study_cancelled(*, locked: bool = False) -> ColumnElement[Any]:
    """Whether the trial's study is cancelled. `locked`: read under a share lock of the study
    row (PostgreSQL; SQLite has one writer at a time anyway), so that a hand-back or a failure
    racing a cancel or a retry (both hold that row's lock while they change the flag) waits for
    it and decides on the flag it committed, not the one before: a trial handed back just as its
    study is retried is queued, not cancelled in a study that no longer is."""
    flag = select(StudyRow.cancelled).where(StudyRow.id == TrialRow.study_id)
    if locked:
        flag = flag.with_for_update(read=True)
    return flag.scalar_subquery().is_(True)


def _held(claim: ClaimedTrial) -> ColumnElement[bool]:
    return and_(
        TrialRow.id == claim.trial_id,
        TrialRow.lease_token == claim.lease_token,
        TrialRow.state == "running",
    )


def claim_next_trial(
    db: Database,
    worker: WorkerInfo,
    *,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    study_id: int | None = None,
) -> ClaimedTrial | None:
    """Atomically takes the next queued trial (priority, then FIFO) and a lease on it;
    `study_id`: only a trial of that study."""
    lease_seconds = _check_lease_seconds(lease_seconds)
    with db.session() as session:
        return _claim_in_session(session, db, worker, lease_seconds, study_id)


def _claim_in_session(
    session: Any,
    db: Database,
    worker: WorkerInfo,
    lease_seconds: float,
    study_id: int | None = None,
) -> ClaimedTrial | None:
    """The next queued trial of a study not cancelled (of `study_id` only, when given), claimed
    in the caller's transaction: one UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED)
    RETURNING."""
    token = secrets.token_hex(16)
    only = () if study_id is None else (TrialRow.study_id == study_id,)
    next_id = (
        select(TrialRow.id)
        .join(StudyRow, StudyRow.id == TrialRow.study_id)
        .where(TrialRow.state == "queued", StudyRow.cancelled.is_(False), *only)
        .order_by(TrialRow.priority.desc(), TrialRow.id)
        .limit(1)
        .with_for_update(skip_locked=True, of=TrialRow)
        .scalar_subquery()
    )
    statement = _claim_statement(db, worker, lease_seconds, TrialRow.id == next_id, token)
    row = session.execute(statement, execution_options=_NO_SYNC).one_or_none()
    if row is None:
        return None
    return _claimed_from_row(session, db, row, token, worker, lease_seconds)


def _claim_statement(
    db: Database,
    worker: WorkerInfo,
    lease_seconds: float,
    where: ColumnElement[bool],
    token: str | ColumnElement[Any],
) -> Any:
    """The UPDATE ... RETURNING that makes the trials matching `where` running under a lease
    (`token`: one token, or a CASE giving each row its own). Shared by every kind of claim, so
    a trial claimed in a pack is claimed exactly like one claimed alone."""
    now = _now(db)
    return (
        update(TrialRow)
        .where(where)
        .values(
            state="running",
            attempts=TrialRow.attempts + 1,
            lease_token=token,
            lease_expires_at=_lease_until(db, lease_seconds),
            worker_host=worker.host,
            worker_pid=worker.pid,
            worker_device=worker.device,
            claimed_at=now,
            started_at=func.coalesce(TrialRow.started_at, now),
            curve=None,
        )
        .returning(
            TrialRow.id,
            TrialRow.study_id,
            TrialRow.attempts,
            TrialRow.config,
            TrialRow.number,
            TrialRow.params,
            TrialRow.claimed_at,
            TrialRow.optuna_trial_id,
            TrialRow.pack_key,
        )
    )


def _claimed_from_row(
    session: Any, db: Database, row: Any, token: str, worker: WorkerInfo, lease_seconds: float
) -> ClaimedTrial:
    """A ClaimedTrial for a row that _claim_statement returned; its Optuna trial becomes RUNNING
    in the same transaction."""
    return _claimed_from_rows(session, db, [(row, token)], worker, lease_seconds)[0]


def _claimed_from_rows(
    session: Any,
    db: Database,
    rows: Sequence[tuple[Any, str]],
    worker: WorkerInfo,
    lease_seconds: float,
) -> list[ClaimedTrial]:
    """_claimed_from_row for many (row, token) of one study (a pack's members), their Optuna
    trials made RUNNING together."""
    from studies.spec import TrialConfig

    optuna_trial_ids = _start_optuna_trials(session, db, [row for row, _ in rows])
    return [
        ClaimedTrial(
            trial_id=row.id,
            study_id=row.study_id,
            lease_token=token,
            attempt=row.attempts,
            config=TrialConfig.model_validate(row.config),
            number=row.number,
            params=row.params,
            lease_seconds=lease_seconds,
            worker=worker,
            claimed_at=row.claimed_at,
            optuna_trial_id=optuna_trial_id,
            pack_key=row.pack_key,
        )
        for (row, token), optuna_trial_id in zip(rows, optuna_trial_ids, strict=True)
    ]


def _start_optuna_trials(session: Any, db: Database, rows: Sequence[Any]) -> list[int | None]:
    """Makes the claimed trials' Optuna trials RUNNING in the claim's transaction (rows of one
    study): created at the first claim, reused by a re-run. None each when Optuna is written at
    completion only."""
    if not rows:
        return []
    if not direct_writes(db.url):
        return [None] * len(rows)  # the fallback: create_new_trial at completion
    handle = handle_in_session(session, db.url, rows[0].study_id)
    if handle is None:
        return [None] * len(rows)  # no Optuna study yet: completion creates both
    # Restarted for a re-run, or new (also when a deleted mirror took the old one with it).
    optuna_trial_ids = start_running_trials(
        session, handle, [(row.number, row.params, row.optuna_trial_id) for row in rows]
    )
    changed = [
        {"b_id": row.id, "b_optuna_trial_id": optuna_trial_id}
        for row, optuna_trial_id in zip(rows, optuna_trial_ids, strict=True)
        if optuna_trial_id != row.optuna_trial_id
    ]
    if changed:
        table = TrialRow.__table__
        session.connection().execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(optuna_trial_id=bindparam("b_optuna_trial_id")),
            changed,
        )
    return list(optuna_trial_ids)


def renew_lease(db: Database, claim: ClaimedTrial, *, lease_seconds: float | None = None) -> bool:
    """Extends the lease; False when it was lost or the study was cancelled (stop the trial)."""
    return claim.trial_id in renew_leases(db, [claim], lease_seconds=lease_seconds)


def renew_leases(
    db: Database, claims: Sequence[ClaimedTrial], *, lease_seconds: float | None = None
) -> set[int]:
    """Extends the leases of many claims (a pack) in one UPDATE; returns the ids of the trials
    still held and not cancelled (a missing id: stop that trial)."""
    if not claims:
        return set()
    seconds = _check_lease_seconds(lease_seconds or max(c.lease_seconds for c in claims))
    # Rows locked in id order, as record_evaluations writes them: the heartbeat and the
    # worker's own evaluation writes about one pack then never deadlock on PostgreSQL.
    locked = (
        select(TrialRow.id)
        .where(or_(*(_held(claim) for claim in claims)), ~_study_cancelled())
        .order_by(TrialRow.id)
        .with_for_update()
        .scalar_subquery()
    )
    with db.session() as session:
        held = session.execute(
            update(TrialRow)
            .where(TrialRow.id.in_(locked))
            .values(lease_expires_at=_lease_until(db, seconds))
            .returning(TrialRow.id),
            execution_options=_NO_SYNC,
        ).scalars()
        return {int(trial_id) for trial_id in held}


def eval_point_json(point: EvalPoint) -> dict[str, Any]:
    """One evaluation as stored in the curve column (non-finite numbers become null)."""
    return {
        "step": int(point.step),
        "epoch": finite_or_none(point.epoch),
        "val_loss": finite_or_none(point.val_loss),
        "train_loss": finite_or_none(point.train_loss),
        "accuracy": finite_or_none(point.accuracy),
    }


def buffer_evaluation(claim: ClaimedTrial, point: EvalPoint) -> None:
    """Adds an evaluation to the claim's curve without writing it (the next write carries it)."""
    stored = eval_point_json(point)
    # Idempotent, so that a retry after a lost reply does not store the point twice.
    if not claim.curve or claim.curve[-1] != stored:
        claim.curve.append(stored)


def record_evaluation(db: Database, claim: ClaimedTrial, point: EvalPoint) -> bool:
    """Stores one evaluation (and any buffered before it) on the trial's curve and as Optuna
    intermediate values, and renews the lease, in one transaction; False: stop the trial."""
    return claim.trial_id in record_evaluations(db, [(claim, point)])


def record_evaluations(
    db: Database, evaluations: Sequence[tuple[ClaimedTrial, EvalPoint]]
) -> set[int]:
    """record_evaluation for many claims (the members of a pack) in one transaction; returns the
    ids of the trials still held and not cancelled (a missing id: stop that trial)."""
    for claim, point in evaluations:
        buffer_evaluation(claim, point)
    # In id order, like renew_leases: one lock order for every multi-trial write.
    claims = sorted({id(claim): claim for claim, _ in evaluations}.values(), key=_trial_id)
    pending = {
        id(claim): _unreported(claim) if claim.optuna_trial_id is not None else {}
        for claim in claims
    }
    held: set[int] = set()
    if not claims:
        return held
    by_id = {claim.trial_id: claim for claim in claims}
    with db.session() as session:
        # A few statements for the whole pack, not three per member: lock our rows (id order),
        # keep those whose lease is ours and whose study is not cancelled, write their curves and
        # leases in one executemany, then Optuna's intermediate values in one upsert.
        rows = session.execute(
            select(TrialRow.id, TrialRow.lease_token, TrialRow.state, StudyRow.cancelled)
            .join(StudyRow, StudyRow.id == TrialRow.study_id)
            .where(TrialRow.id.in_(sorted(by_id)))
            .order_by(TrialRow.id)
            .with_for_update(of=TrialRow)
        ).all()
        held = {
            int(row.id)
            for row in rows
            if row.state == "running"
            and row.lease_token == by_id[row.id].lease_token
            and not row.cancelled
        }
        for seconds in sorted({by_id[i].lease_seconds for i in held}):
            session.connection().execute(
                update(TrialRow)
                .where(TrialRow.id == bindparam("row_id"))
                .values(curve=bindparam("new_curve"), lease_expires_at=_lease_until(db, seconds)),
                [
                    {"row_id": i, "new_curve": list(by_id[i].curve)}
                    for i in sorted(held)
                    if by_id[i].lease_seconds == seconds
                ],
            )
        # Only while the leases are held: our rows' locks order this after any re-claim's reset.
        written = write_intermediates(
            session,
            [
                (claim.optuna_trial_id, claim.number, pending[id(claim)])
                for claim in claims
                if claim.trial_id in held and claim.optuna_trial_id is not None
            ],
            url=db.url,
        )
    for claim in claims:  # committed: those steps are in Optuna now
        if claim.trial_id in held and claim.optuna_trial_id in written:
            claim.optuna_steps.update(pending[id(claim)])
    return held


def _trial_id(claim: ClaimedTrial) -> int:
    return claim.trial_id


def _unreported(claim: ClaimedTrial) -> dict[int, float]:
    return {
        int(p["step"]): float(p["val_loss"])
        for p in claim.curve
        if p.get("val_loss") is not None and int(p["step"]) not in claim.optuna_steps
    }


def _finished(
    claim: ClaimedTrial, state: str, result: TrialResult | None, error: str | None = None
) -> FinishedTrial:
    return FinishedTrial(
        trial_id=claim.trial_id,
        number=claim.number,
        params=claim.params or claim.config.params(),
        state=state,
        loss=None if result is None else finite_or_none(result.loss),
        loss0=None if result is None else finite_or_none(result.loss0),
        accuracy=None if result is None else finite_or_none(result.accuracy),
        intermediate={} if result is None else {p.step: float(p.val_loss) for p in result.curve},
        worker=_worker_dict(claim),
        attempts=claim.attempt,
        started_at=claim.claimed_at,
        finished_at=utcnow(),
        error=error,
        reused_from=None if result is None else result.reused_from,
    )


def complete_trial(
    db: Database, claim: ClaimedTrial, result: TrialResult, *, optuna: bool = True
) -> bool:
    """Stores a finished trial, and its Optuna trial, in one transaction, if this worker still
    holds the lease. Returns False when the lease was lost: nothing was written.

    A result with state "cancelled" hands the trial back instead (see release_lease). Safe to
    retry: a repeat after a lost reply finds the trial finished under its own lease.
    """
    stored, _ = complete_and_claim_next(db, claim, result, None, optuna=optuna)
    return stored


def complete_and_claim_next(
    db: Database,
    claim: ClaimedTrial,
    result: TrialResult,
    worker: WorkerInfo | None,
    *,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    optuna: bool = True,
    study_id: int | None = None,
) -> tuple[bool, ClaimedTrial | None]:
    """complete_trial, and in the same transaction the claim of `worker`'s next trial (None: no
    claim; `study_id`: only of that study): one transaction per trial. Returns (stored, next
    claim or None).

    A retry after a lost reply reports the completion but not a claim that reply carried; that
    trial is requeued when its lease expires.
    """
    stored, following = complete_pack(
        db,
        [(claim, result)],
        worker,
        lease_seconds=lease_seconds,
        optuna=optuna,
        study_id=study_id,
    )
    return stored[0], following


def complete_pack(
    db: Database,
    members: Sequence[tuple[ClaimedTrial, TrialResult]],
    worker: WorkerInfo | None,
    *,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    optuna: bool = True,
    study_id: int | None = None,
) -> tuple[list[bool], ClaimedTrial | None]:
    """complete_and_claim_next for every member of a pack in one transaction (a pack of 64 was
    64 commits and most of its recording time). Returns each member's `stored` (in the order
    given) and the next claim (of `study_id` only, when given), which rides on the same commit.

    Each member is stored only under its own lease; a member whose lease was lost is skipped
    (False) without undoing the others. A cancelled result hands its trial back instead (its
    own transaction, before the others). Safe to retry as a whole: a member already stored by a
    first try that lost its reply is found finished under its own lease and reported True.
    """
    stored = [False] * len(members)
    finishing: list[tuple[int, ClaimedTrial, TrialResult, FinishedTrial]] = []
    for index, (claim, result) in enumerate(members):
        if result.state == "cancelled":
            stored[index] = release_lease(db, claim, keep_curve=True)
        else:
            finishing.append((index, claim, result, _finished(claim, result.state, result)))
    finishing.sort(key=lambda item: item[1].trial_id)  # one lock order for multi-trial writes
    direct = optuna and direct_writes(db.url)
    handles: dict[int, StudyHandle] = {}
    if direct:  # outside the transaction: study_handle may need to write (SQLite)
        for study_id in sorted({claim.study_id for _, claim, _, _ in finishing}):
            handles[study_id] = study_handle(db, study_id)
    following = None
    if not finishing and worker is None:
        return stored, None
    with db.session() as session:
        fresh = not finishing  # nothing to store: a plain claim
        outcomes = _complete_in_session(
            session,
            [(claim, result, finished) for _, claim, result, finished in finishing],
            handles,
        )
        for (index, _, _, _), outcome in zip(finishing, outcomes, strict=True):
            stored[index] = outcome != "lost"
            fresh = fresh or outcome == "stored"
        if worker is not None and fresh:
            # Not on a retry that found everything stored already: the lost reply may have
            # carried a claim, and this worker must not hold two.
            following = _claim_in_session(session, db, worker, lease_seconds, study_id)
    if optuna and not direct:
        for index, claim, _, finished in finishing:
            if stored[index]:
                _mirror_through_storage(db, claim, finished)
    return stored, following


def _complete_in_session(
    session: Any,
    items: Sequence[tuple[ClaimedTrial, TrialResult, FinishedTrial]],
    handles: dict[int, StudyHandle],
) -> list[str]:
    """Stores each finished trial (and its Optuna trial, when its study has a handle) in the
    caller's transaction if its lease is still held: "stored"; "done" when a first try (whose
    reply was lost) stored it already; "lost" when the lease is gone (nothing written). One
    outcome per item, in order; `items` in trial id order (one lock order for every
    multi-trial write).

    A few statements for all the items (a pack's members), not seven per member: our rows read
    and locked in one, written in one executemany, then each study's Optuna trials in a few
    (finish_trials). Our rows first, then Optuna's: every transaction takes the two locks in
    that order."""
    if not items:
        return []
    rows = {
        row.id: row
        for row in session.execute(
            select(TrialRow.id, TrialRow.lease_token, TrialRow.state, TrialRow.optuna_trial_id)
            .where(TrialRow.id.in_([claim.trial_id for claim, _, _ in items]))
            .order_by(TrialRow.id)
            .with_for_update(of=TrialRow)
        )
    }
    outcomes: list[str] = []
    writes: dict[bool, list[dict[str, Any]]] = {True: [], False: []}  # by mirrored in Optuna
    for claim, result, finished in items:
        row = rows.get(claim.trial_id)
        if row is None or row.lease_token != claim.lease_token:
            outcomes.append("lost")  # not ours (any more)
        elif row.state == "running":
            mirrored = claim.study_id in handles
            writes[mirrored].append(_finished_values(claim, result, finished, mirrored))
            outcomes.append("stored")
        elif row.state == result.state:  # ours already: a retry after a lost reply
            claim.optuna_trial_id = row.optuna_trial_id
            outcomes.append("done")
        else:
            outcomes.append("lost")
    for values in writes.values():
        if values:
            columns = [
                key.removeprefix("b_") for key in values[0] if key not in ("b_id", "b_token")
            ]
            session.connection().execute(_finish_statement(columns), values)
    stored = [item for item, outcome in zip(items, outcomes, strict=True) if outcome == "stored"]
    for study_id, handle in handles.items():
        members = [(claim, finished) for claim, _, finished in stored if claim.study_id == study_id]
        if members:
            _finish_in_session(session, handle, members)
    return outcomes


def _finish_statement(columns: Sequence[str]) -> Any:
    """Our rows of finished trials, written for many trials in one executemany: the bind names
    are the columns prefixed "b_" (SQLAlchemy reserves the column names for the SET clause),
    still conditional on the lease, which the caller checked under the rows' locks."""
    table = TrialRow.__table__
    return (
        update(table)
        .where(
            table.c.id == bindparam("b_id"),
            table.c.lease_token == bindparam("b_token"),
            table.c.state == "running",
        )
        .values({column: bindparam(f"b_{column}") for column in columns})
    )


def _finished_values(
    claim: ClaimedTrial, result: TrialResult, finished: FinishedTrial, mirrored: bool
) -> dict[str, Any]:
    """The bind values of _finish_statement for one trial; `mirrored`: its Optuna trial is
    written in the same transaction (optuna_final is set), else the flag is left as it is."""
    values: dict[str, Any] = {
        "state": result.state,
        "loss": finished.loss,
        "loss0": finished.loss0,
        "accuracy": finished.accuracy,
        "value": capped_value(result.state, finished.loss, finished.loss0),
        "curve": [eval_point_json(p) for p in result.curve],
        "bound_stats": result.bound_stats,
        "result": result.to_dict(exclude=("curve", "bound_stats")),  # each has its own column
        "steps": int(result.steps),
        "duration_s": finite_or_none(result.duration_s),
        "error": None,
        "lease_expires_at": None,
        "finished_at": finished.finished_at,
        "reuse_key": _reuse_key(claim.config, result),
        "reused_from": result.reused_from,
    }
    if mirrored:
        values["optuna_final"] = True
    return {"b_id": claim.trial_id, "b_token": claim.lease_token} | {
        f"b_{key}": value for key, value in values.items()
    }


def _reuse_key(config: TrialConfig, result: TrialResult) -> str | None:
    """The finished trial's reuse key (studies/reuse.py); None for a result that cannot stand
    for another (cancelled, or without its device or torch version)."""
    from studies.reuse import reuse_key

    if result.state not in ("completed", "diverged") or not result.device:
        return None
    try:
        return reuse_key(config, device=result.device, torch_version=result.torch_version)
    except (ValueError, RuntimeError, KeyError):  # an unknown device or workload: never reused
        return None


def _finish_in_session(
    session: Any, handle: StudyHandle, members: Sequence[tuple[ClaimedTrial, FinishedTrial]]
) -> list[bool]:
    """Gives each claimed trial's Optuna trial its final state in the caller's transaction (all
    of them in a few statements: finish_trials); False for one whose Optuna study is gone (the
    row is left for sync_optuna)."""
    optuna_trial_ids = finish_trials(
        session,
        handle,
        [(claim.optuna_trial_id, finished, claim.optuna_steps) for claim, finished in members],
    )
    for (claim, _), optuna_trial_id in zip(members, optuna_trial_ids, strict=True):
        if optuna_trial_id != claim.optuna_trial_id:  # new, or recreated: rare, one by one
            session.execute(
                update(TrialRow)
                .where(TrialRow.id == claim.trial_id)
                .values(optuna_trial_id=optuna_trial_id, optuna_final=optuna_trial_id is not None),
                execution_options=_NO_SYNC,
            )
        claim.optuna_trial_id = optuna_trial_id
    return [optuna_trial_id is not None for optuna_trial_id in optuna_trial_ids]


def _mirror_through_storage(db: Database, claim: ClaimedTrial, finished: FinishedTrial) -> None:
    claim.optuna_trial_id = record_trial(db, claim.study_id, finished)
    with db.session() as session:
        session.execute(
            update(TrialRow)
            .where(TrialRow.id == claim.trial_id)
            .values(optuna_trial_id=claim.optuna_trial_id, optuna_final=True),
            execution_options=_NO_SYNC,
        )


def _worker_dict(claim: ClaimedTrial) -> dict[str, Any] | None:
    if claim.worker is None:
        return None
    return {"host": claim.worker.host, "pid": claim.worker.pid, "device": claim.worker.device}


def release_lease(db: Database, claim: ClaimedTrial, *, keep_curve: bool = False) -> bool:
    """Hands a trial back without counting the attempt (graceful shutdown, cancellation).

    The trial is queued again, or cancelled when its study was cancelled. False: lease lost.
    Its Optuna trial becomes WAITING (queued again; RUNNING once re-run) or PRUNED (cancelled,
    keeping the intermediate values written so far), in the same transaction.
    """
    cancelled = _study_cancelled(locked=True)
    handle = _live_handle(db, claim)
    with db.session() as session:
        state = session.execute(
            update(TrialRow)
            .where(_held(claim))
            .values(
                state=case((cancelled, "cancelled"), else_="queued"),
                attempts=TrialRow.attempts - 1,
                lease_expires_at=None,
                finished_at=case((cancelled, _now(db)), else_=None),
                curve=case((cancelled, TrialRow.curve), else_=None) if keep_curve else None,
            )
            .returning(TrialRow.state),
            execution_options=_NO_SYNC,
        ).scalar_one_or_none()
        if state is not None and handle is not None:
            _optuna_after_attempt(session, handle, claim, state, None)
    return state is not None


def _live_handle(db: Database, claim: ClaimedTrial) -> StudyHandle | None:
    # Read before the transaction: study_handle may need to write (SQLite: another connection).
    if claim.optuna_trial_id is None or not direct_writes(db.url):
        return None
    return study_handle(db, claim.study_id)


def _optuna_after_attempt(
    session: Any, handle: StudyHandle, claim: ClaimedTrial, state: str, error: str | None
) -> None:
    """Shows the outcome of an attempt that did not complete in its Optuna trial: WAITING when
    queued again, FAIL when failed, PRUNED when cancelled (each final one marked on our row)."""
    if state == "queued":
        assert claim.optuna_trial_id is not None
        set_trials_waiting(session, [claim.optuna_trial_id])
        return
    finished = _finished(claim, state, None, error)
    finished.intermediate = {}  # those written so far stay; buffered ones were not stored
    if _finish_in_session(session, handle, [(claim, finished)])[0]:
        session.execute(
            update(TrialRow).where(TrialRow.id == claim.trial_id).values(optuna_final=True),
            execution_options=_NO_SYNC,
        )


def _retry_or_fail(db: Database, max_attempts: int) -> dict[str, Any]:
    cancelled = _study_cancelled(locked=True)
    final = cancelled | (TrialRow.attempts >= max_attempts)
    return {
        "state": case(
            (cancelled, "cancelled"),
            (TrialRow.attempts >= max_attempts, "failed"),
            else_="queued",
        ),
        "lease_expires_at": None,
        "finished_at": case((final, _now(db)), else_=None),
    }


def fail_attempt(
    db: Database, claim: ClaimedTrial, error: str, *, max_attempts: int, final: bool = False
) -> str | None:
    """Records an error: the trial is queued again, or "failed" after `max_attempts` attempts.

    `final`: "failed" now, whatever the attempt (a timed-out trial: a rerun would time out
    again). Returns the trial's new state, or None when the lease was lost. A failed trial is
    written to Optuna as a FAIL trial in the same transaction.
    """
    max_attempts = _check_max_attempts(max_attempts)
    if final:
        max_attempts = 1  # every claimed trial has had at least its one attempt
    error = str(error)[:MAX_ERROR_LENGTH]
    handle = _live_handle(db, claim)
    if handle is None and claim.attempt >= max_attempts and direct_writes(db.url):
        handle = study_handle(db, claim.study_id)  # no Optuna trial yet: the FAIL one is new
    with db.session() as session:
        state = session.execute(
            update(TrialRow)
            .where(_held(claim))
            .values(error=error, **_retry_or_fail(db, max_attempts))
            .returning(TrialRow.state),
            execution_options=_NO_SYNC,
        ).scalar_one_or_none()
        # A queued trial without an Optuna trial has nothing to show there yet.
        if (
            state is not None
            and handle is not None
            and (state != "queued" or claim.optuna_trial_id is not None)
        ):
            _optuna_after_attempt(session, handle, claim, state, error)
    if state in ("failed", "cancelled") and handle is None:
        sync_optuna(db, trial_ids=[claim.trial_id])
    return state


def _unlocked(db: Database, condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """`condition`, limited on PostgreSQL to the rows no other transaction has locked.

    A worker frozen inside a transaction (SIGSTOP, a hung thread) keeps its row locks until
    idle_in_transaction_session_timeout ends it; a sweep that waited for them would stall every
    live worker behind it. Skipped rows are simply swept next time. The condition is repeated
    outside the subquery so that the UPDATE re-checks it on the rows it has locked.
    """
    if not db.is_postgres:
        return condition  # SQLite: one writer at a time, nothing to skip
    ids = select(TrialRow.id).where(condition).with_for_update(skip_locked=True, of=TrialRow)
    return and_(TrialRow.id.in_(ids.scalar_subquery()), condition)


def requeue_expired(db: Database, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> int:
    """Puts trials whose lease expired back in the queue (or "failed"); any worker may call it.

    Also cancels queued trials of cancelled studies (a trial handed back while its study was
    being cancelled); an expired lease of a cancelled study ends "cancelled", not queued, so a
    cancelled study whose worker died still finishes. Rows locked by another transaction are
    skipped on PostgreSQL (see _unlocked), so the sweep never waits on a frozen worker. Returns
    how many expired leases were reclaimed.
    """
    max_attempts = _check_max_attempts(max_attempts)
    direct = direct_writes(db.url)
    expired = and_(TrialRow.state == "running", TrialRow.lease_expires_at < _now(db))
    abandoned = and_(TrialRow.state == "queued", _study_cancelled())
    with db.session() as session:
        result = session.execute(
            update(TrialRow)
            .where(_unlocked(db, expired))
            .values(
                error=case(
                    (
                        TrialRow.attempts >= max_attempts,
                        "lease expired: the worker stopped renewing it (last attempt)",
                    ),
                    else_="lease expired: the worker stopped renewing it",
                ),
                **_retry_or_fail(db, max_attempts),
            )
            .returning(TrialRow.id, TrialRow.state, TrialRow.optuna_trial_id),
            execution_options=_NO_SYNC,
        ).all()
        if direct:  # queued again: WAITING in Optuna until re-run
            set_trials_waiting(
                session,
                [int(o) for _, state, o in result if state == "queued" and o is not None],
            )
        session.execute(
            update(TrialRow)
            .where(_unlocked(db, abandoned))
            .values(state="cancelled", finished_at=_now(db)),
            execution_options=_NO_SYNC,
        )
    # Trials that failed here had no worker left to record them in Optuna.
    failed = [trial_id for trial_id, state, _ in result if state in ("failed", "cancelled")]
    if failed:
        sync_optuna(db, trial_ids=failed)
    return len(result)


def queue_counts(db: Database, *, study_id: int | None = None) -> dict[str, int]:
    """How many trials of studies not cancelled (of `study_id` only, when given) are queued and
    running (for idle detection)."""
    only = () if study_id is None else (TrialRow.study_id == study_id,)
    with db.session(readonly=True) as session:
        rows = session.execute(
            select(TrialRow.state, func.count())
            .join(StudyRow, StudyRow.id == TrialRow.study_id)
            .where(TrialRow.state.in_(("queued", "running")), StudyRow.cancelled.is_(False), *only)
            .group_by(TrialRow.state)
        ).all()
    counts = {"queued": 0, "running": 0}
    counts.update({state: int(n) for state, n in rows})
    return counts

"""Studies and trials as the service sees them: create (idempotent), read, list, cancel.

Status and progress are derived from the trial rows in SQL, so they are never out of date.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, bindparam, case, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from studies.db.engine import Database
from studies.db.models import StudyRow, TrialRow, utcnow
from studies.db.optuna_bridge import capped_value, create_optuna_study, optuna_study_name

if TYPE_CHECKING:
    from studies.records import TrialRecord
    from studies.spec import StudySpec

__all__ = [
    "STUDY_STATUSES",
    "IdempotencyConflict",
    "StudyView",
    "TrialView",
    "cancel_study",
    "create_study",
    "get_study",
    "list_studies",
    "list_trials",
    "load_records",
    "spec_hash",
]

STUDY_STATUSES = ("queued", "running", "completed", "cancelled", "failed")
MAX_IDEMPOTENCY_KEY_LENGTH = 200
MAX_LIST_LIMIT = 1000
_PROGRESS_STATES = ("queued", "running", "completed", "diverged", "failed", "cancelled")


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different spec."""


@dataclass
class StudyView:
    """A study as the API returns it: spec, derived status and progress, timestamps."""

    id: int
    name: str
    status: str
    spec: dict[str, Any]
    n_trials: int
    progress: dict[str, int]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    optuna_study_name: str


@dataclass
class TrialView:
    """One trial as the API returns it: grid coordinates, state, result, who ran it."""

    id: int
    number: int
    params: dict[str, Any]
    state: str
    value: float | None
    loss0: float | None
    accuracy: float | None
    curve: list[dict[str, Any]]
    attempts: int
    worker: dict[str, Any] | None
    duration_s: float | None
    error: str | None
    bound_stats: dict[str, Any] | None
    pack_size: int | None = None  # how many trials trained together (None: not finished)
    reused_from: int | None = None  # the trial whose result this one copied (None: trained)
    resumed_from_step: int | None = None  # the checkpoint step its last attempt resumed from


def spec_hash(spec: dict[str, Any]) -> str:
    """sha256 of the normalized spec's canonical JSON (what idempotency compares)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_idempotency_key(key: str | None) -> None:
    if key is None:
        return
    if not isinstance(key, str) or not key.strip():
        raise ValueError("idempotency_key: must be a non-empty string")
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValueError(
            f"idempotency_key: at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters (got {len(key)})"
        )


def _existing_for_key(db: Database, key: str, digest: str) -> StudyView | None:
    with db.session(readonly=True) as session:
        row = session.execute(
            select(StudyRow.id, StudyRow.spec_hash).where(StudyRow.idempotency_key == key)
        ).one_or_none()
    if row is None:
        return None
    if row.spec_hash != digest:
        raise IdempotencyConflict(
            f"Idempotency-Key {key!r} was already used for study {row.id} with a different spec"
        )
    view = get_study(db, row.id)
    assert view is not None
    return view


def create_study(db: Database, spec: StudySpec, *, idempotency_key: str | None = None) -> StudyView:
    """Stores a study and one queued trial per grid point in one transaction; mirrors it in Optuna.

    Same idempotency key and same spec: the existing study; same key, other spec: conflict.
    """
    from studies.spec import expand_grid

    _check_idempotency_key(idempotency_key)
    spec_dict = spec.model_dump(mode="json")
    digest = spec_hash(spec_dict)
    if idempotency_key is not None:
        existing = _existing_for_key(db, idempotency_key, digest)
        if existing is not None:
            return existing
    configs = expand_grid(spec)
    now = utcnow()
    try:
        with db.session() as session:
            study = StudyRow(
                name=spec.name,
                workload=spec.workload,
                spec=spec_dict,
                spec_hash=digest,
                n_trials=len(configs),
                priority=spec.priority,
                idempotency_key=idempotency_key,
                created_at=now,
            )
            session.add(study)
            session.flush()
            # Readable in optuna-dashboard, unique by the id; the bridge finds it by this column.
            mirror_name = optuna_study_name(study.id, spec.name)
            study.optuna_study_name = mirror_name
            rows = []
            for number, config in enumerate(configs):
                data = config.model_dump(mode="json")
                rows.append(
                    {
                        "study_id": study.id,
                        "number": number,
                        "config": data,
                        "config_key": config.key(),
                        "pack_key": config.pack_key(),
                        "params": config.params(),
                        "priority": spec.priority,
                        "state": "queued",
                        "attempts": 0,
                        "created_at": now,
                    }
                )
            session.execute(insert(TrialRow), rows)
            study_id = study.id
    except IntegrityError:
        # A concurrent request with the same key won the race: answer as it was answered.
        if idempotency_key is None:
            raise
        existing = _existing_for_key(db, idempotency_key, digest)
        if existing is None:
            raise
        return existing
    try:
        create_optuna_study(db.url, study_id, spec_dict, n_trials=len(configs), name=mirror_name)
    except Exception:
        # Never leave a study that cannot be mirrored: undo ours, then report the error.
        with db.session() as session:
            session.execute(TrialRow.__table__.delete().where(TrialRow.study_id == study_id))
            session.execute(StudyRow.__table__.delete().where(StudyRow.id == study_id))
        raise
    view = get_study(db, study_id)
    assert view is not None
    return view


def _state_count(state: str) -> Any:
    return func.coalesce(func.sum(case((TrialRow.state == state, 1), else_=0)), 0).label(state)


@functools.cache
def _study_query(one_study: bool = False) -> tuple[Select[Any], Any]:
    """The query of every study's row, progress counts and status, and its status column;
    `one_study`: of the study bound as the `study_id` parameter only.

    Built once: building this expression cost more than running it (3 of a GET /studies/{id}'s
    5 ms, paid on every poll of a study's progress). Statements are immutable, so callers
    extend it (.where, .order_by) without changing the cached one."""
    counts_query = select(
        TrialRow.study_id.label("study_id"),
        func.count().label("total"),
        *(_state_count(state) for state in _PROGRESS_STATES),
        func.min(TrialRow.started_at).label("started_at"),
        func.max(TrialRow.finished_at).label("finished_at"),
    ).group_by(TrialRow.study_id)
    if one_study:
        counts_query = counts_query.where(TrialRow.study_id == bindparam("study_id"))
    counts = counts_query.subquery()
    pending = func.coalesce(counts.c.queued, 0) + func.coalesce(counts.c.running, 0)
    succeeded = func.coalesce(counts.c.completed, 0) + func.coalesce(counts.c.diverged, 0)
    status = case(
        (StudyRow.cancelled.is_(True), "cancelled"),
        ((pending > 0) & counts.c.started_at.is_(None), "queued"),
        (pending > 0, "running"),
        (succeeded > 0, "completed"),
        else_="failed",
    ).label("status")
    query = select(StudyRow, counts, status).outerjoin(counts, counts.c.study_id == StudyRow.id)
    if one_study:
        query = query.where(StudyRow.id == bindparam("study_id"))
    return query, status


def _to_view(row: Any) -> StudyView:
    study: StudyRow = row[0]
    mapping = row._mapping
    progress = {"total": int(mapping["total"] or 0)}
    for state in _PROGRESS_STATES:
        progress[state] = int(mapping[state] or 0)
    status = mapping["status"]
    finished_at = None
    if status in ("completed", "failed"):
        finished_at = mapping["finished_at"]
    elif status == "cancelled" and progress["running"] == 0:
        finished_at = study.cancelled_at
    return StudyView(
        id=study.id,
        name=study.name,
        status=status,
        spec=study.spec,
        n_trials=study.n_trials,
        progress=progress,
        created_at=study.created_at,
        started_at=mapping["started_at"],
        finished_at=finished_at,
        optuna_study_name=study.optuna_study_name or optuna_study_name(study.id),
    )


def get_study(db: Database, study_id: int) -> StudyView | None:
    """One study with its derived status and progress, or None when it does not exist."""
    query, _ = _study_query(one_study=True)
    with db.session(readonly=True) as session:
        row = session.execute(query, {"study_id": study_id}).one_or_none()
        return None if row is None else _to_view(row)


def list_studies(
    db: Database, *, status: str | None = None, limit: int = 50, offset: int = 0
) -> list[StudyView]:
    """Studies, newest first, optionally only those with a given status."""
    if status is not None and status not in STUDY_STATUSES:
        raise ValueError(f"status: must be one of {', '.join(STUDY_STATUSES)} (got {status!r})")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit: must be an integer from 1 to {MAX_LIST_LIMIT} (got {limit!r})")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset: must be an integer >= 0 (got {offset!r})")
    query, status_column = _study_query()
    if status is not None:
        query = query.where(status_column == status)
    query = query.order_by(StudyRow.id.desc()).limit(limit).offset(offset)
    with db.session(readonly=True) as session:
        return [_to_view(row) for row in session.execute(query)]


def lock_study_row(session: Any, study_id: int) -> StudyRow | None:
    """Locks a study's row for a change of its flags (cancel, retry); None when it is absent.

    FOR NO KEY UPDATE (key_share): the key is not changed, and a plain FOR UPDATE would conflict
    with the KEY SHARE locks that foreign-key checks of concurrent trial writes take on this row,
    which deadlocked against a worker holding a trial row (seen in CI). Workers settling a trial
    read the study's cancelled flag under FOR SHARE (studies/db/queue.py), which waits for it.
    """
    return session.execute(
        select(StudyRow).where(StudyRow.id == study_id).with_for_update(key_share=True)
    ).scalar_one_or_none()


def cancel_study(db: Database, study_id: int) -> StudyView | None:
    """Cancels a study: its queued trials never start; running ones stop at their next evaluation.

    A study whose trials have all finished is left as it is. None when the study does not exist.
    """
    with db.session() as session:
        study = lock_study_row(session, study_id)
        if study is None:
            return None
        unfinished = session.execute(
            select(func.count())
            .select_from(TrialRow)
            .where(TrialRow.study_id == study_id, TrialRow.state.in_(("queued", "running")))
        ).scalar_one()
        if not study.cancelled and unfinished:
            now = utcnow()
            study.cancelled = True
            study.cancelled_at = now
            session.execute(
                update(TrialRow)
                .where(TrialRow.study_id == study_id, TrialRow.state == "queued")
                .values(state="cancelled", finished_at=now),
                execution_options={"synchronize_session": False},
            )
    return get_study(db, study_id)


def _worker(row: TrialRow) -> dict[str, Any] | None:
    if row.worker_host is None and row.worker_pid is None:
        return None
    return {"host": row.worker_host, "pid": row.worker_pid, "device": row.worker_device}


def _trial_view(row: TrialRow) -> TrialView:
    return TrialView(
        id=row.id,
        number=row.number,
        params=row.params,
        state=row.state,
        value=capped_value(row.state, row.loss, row.loss0)
        if row.state in ("completed", "diverged")
        else None,
        loss0=row.loss0,
        accuracy=row.accuracy,
        curve=row.curve or [],
        attempts=row.attempts,
        worker=_worker(row),
        duration_s=row.duration_s,
        error=row.error,
        bound_stats=row.bound_stats,
        pack_size=(row.result or {}).get("pack_size"),
        reused_from=row.reused_from,
        resumed_from_step=(row.result or {}).get("resumed_from_step"),
    )


def _study_exists(session: Any, study_id: int) -> bool:
    return session.get(StudyRow, study_id) is not None


def list_trials(db: Database, study_id: int) -> list[TrialView] | None:
    """Every trial of a study in grid order, or None when the study does not exist."""
    with db.session(readonly=True) as session:
        if not _study_exists(session, study_id):
            return None
        rows = session.execute(
            select(TrialRow).where(TrialRow.study_id == study_id).order_by(TrialRow.number)
        ).scalars()
        return [_trial_view(row) for row in rows]


def load_records(db: Database, study_id: int) -> list[TrialRecord] | None:
    """The analysis' view of every trial of a study, whatever its state (curves included)."""
    from studies.records import TrialRecord

    with db.session(readonly=True) as session:
        if not _study_exists(session, study_id):
            return None
        rows = session.execute(
            select(
                TrialRow.id,
                TrialRow.params,
                TrialRow.state,
                TrialRow.loss,
                TrialRow.loss0,
                TrialRow.result,
                TrialRow.curve,
                TrialRow.bound_stats,
                TrialRow.error,
            )
            .where(TrialRow.study_id == study_id)
            .order_by(TrialRow.number)
        )
        return [
            TrialRecord.from_params(
                params,
                state=state,
                loss=loss,
                loss0=loss0,
                result=result,
                curve=curve,
                bound_stats=bound_stats,
                trial_id=trial_id,
                error=error,
            )
            for trial_id, params, state, loss, loss0, result, curve, bound_stats, error in rows
        ]

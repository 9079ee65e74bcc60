"""The Optuna mirror of each study: same database, one Optuna trial per trial of ours that ran.

Our tables are the source of truth and the queue; Optuna's study (named `adamod-lab-{id}`) is a
read model for `optuna-dashboard` and `optuna.load_study`. Its value is the capped loss
min(loss, loss0) (loss0 when diverged), the quantity the robustness analysis ranks; failed trials
are Optuna FAIL trials; the curve is the trial's intermediate values.

The Optuna trial follows ours live, each change written in the SAME transaction as ours with a few
direct statements on Optuna's tables through Optuna's own table definitions (the rows RDBStorage
would write): created RUNNING (params, distributions, datetime_start) by the claim, intermediate
values added by each written evaluation, COMPLETE or FAIL (value, user attributes) at completion,
WAITING when handed back or requeued, RUNNING again (its old intermediate values cleared) when
re-run, PRUNED when its study is cancelled. Our row keeps the Optuna trial id, so every attempt
of a grid point uses the same Optuna trial, and `optuna_final` once Optuna shows the final state.
The Optuna trial number is our grid number, so Optuna trial k is grid point k and no study-wide
lock is needed. Each write costs a statement or two instead of RDBStorage's many. When the
database's Optuna schema is not the installed Optuna's head revision, we fall back to
create_new_trial at completion (separate transaction; no live view), and `sync_optuna` repairs
anything a crash left behind.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from studies.db.optuna_schema import engine_kwargs, init_optuna_schema

if TYPE_CHECKING:
    import optuna
    from sqlalchemy.orm import Session

    from studies.db.engine import Database

__all__ = [
    "OPTUNA_TRIAL_ID_ATTR",
    "FinishedTrial",
    "StudyHandle",
    "capped_value",
    "create_optuna_study",
    "direct_writes",
    "distributions_for_spec",
    "finish_trial",
    "get_storage",
    "handle_in_session",
    "init_optuna_schema",
    "insert_finished_trial",
    "insert_running_trial",
    "optuna_study_name",
    "record_trial",
    "restart_trial",
    "set_trials_waiting",
    "study_handle",
    "sync_optuna",
    "write_intermediate",
]

OPTUNA_TRIAL_ID_ATTR = "adamod_lab_trial_id"
_lock = threading.Lock()
_storages: dict[tuple[str, int], Any] = {}
_handles: dict[tuple[str, int], StudyHandle] = {}
_direct: dict[str, bool] = {}


@dataclass(frozen=True)
class StudyHandle:
    """What writing into one Optuna study needs: its id and the grid's distributions."""

    optuna_study_id: int
    distributions: dict[str, Any]


@dataclass
class FinishedTrial:
    """A finished trial of ours, as mirrored in Optuna."""

    trial_id: int
    number: int  # our grid number, also the Optuna trial number
    params: dict[str, Any]
    state: str  # completed | diverged | failed
    loss: float | None
    loss0: float | None
    accuracy: float | None
    intermediate: dict[int, float]
    worker: dict[str, Any] | None
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None = None

    def value(self) -> float | None:
        """The Optuna value: the capped loss, None for failed trials."""
        if self.state not in ("completed", "diverged"):
            return None
        value = capped_value(self.state, self.loss, self.loss0)
        return value if value is not None and math.isfinite(value) else None

    def user_attrs(self) -> dict[str, Any]:
        """Our facts about the trial that Optuna has no field for."""
        attrs: dict[str, Any] = {
            OPTUNA_TRIAL_ID_ATTR: self.trial_id,
            "state": self.state,
            "loss": self.loss if self.loss is not None and math.isfinite(self.loss) else None,
            "loss0": self.loss0,
            "accuracy": self.accuracy,
            "worker": self.worker,
            "attempts": self.attempts,
        }
        if self.error:
            attrs["error"] = self.error[:2000]
        return attrs


def optuna_study_name(study_id: int) -> str:
    """The name of the Optuna study that mirrors our study `study_id`."""
    return f"adamod-lab-{study_id}"


def capped_value(state: str, loss: float | None, loss0: float | None) -> float | None:
    """The trial's value: min(loss, loss0), loss0 when diverged, None when unknown.

    The same definition as TrialRecord.capped_loss (ROBUSTNESS.md), on raw stored values.
    """
    loss = loss if loss is not None and math.isfinite(loss) else None
    loss0 = loss0 if loss0 is not None and math.isfinite(loss0) else None
    if state == "diverged" or loss is None:
        return loss0
    return loss if loss0 is None else min(loss, loss0)


def get_storage(url: str) -> optuna.storages.RDBStorage:
    """One RDBStorage per URL per process (creating one costs a schema check)."""
    import optuna

    key = (url, os.getpid())  # a forked child must not share its parent's connections
    with _lock:
        storage = _storages.get(key)
        if storage is None:
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs(url),
                skip_compatibility_check=True,
                skip_table_creation=True,
            )
            _storages[key] = storage
        return storage


def direct_writes(url: str) -> bool:
    """True when the database's Optuna schema is the installed Optuna's (checked once per URL)."""
    with _lock:
        known = _direct.get(url)
    if known is None:
        storage = get_storage(url)
        try:
            known = storage.get_current_version() == storage.get_head_version()
        except Exception:
            known = False
        with _lock:
            _direct[url] = known
    return known


def distributions_for_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Optuna distributions of the grid axes of a normalized StudySpec dict."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from studies.spec import BOUNDED_OPTIMIZERS, LrGrid, resolve_warmup

    lrs = LrGrid.model_validate(spec["lr"]).values()
    optimizers = list(spec["optimizers"])
    beta3: list[Any] = []
    if any(o in BOUNDED_OPTIMIZERS for o in optimizers):
        beta3.extend(float(b) for b in spec["beta3"])
    if any(o not in BOUNDED_OPTIMIZERS for o in optimizers):
        beta3.append(None)  # Adam and friends have no beta3
    # The spec keeps "auto" as written; trials carry the resolved number of steps.
    beta2 = float(spec.get("betas", (0.9, 0.999))[1])
    distributions = {
        "lr": FloatDistribution(min(lrs), max(lrs), log=True),
        "optimizer": CategoricalDistribution(optimizers),
        "beta3": CategoricalDistribution(beta3),
        "warmup_steps": CategoricalDistribution(
            [resolve_warmup(w, beta2) for w in spec["warmup_steps"]]
        ),
        "seed": CategoricalDistribution(list(range(int(spec["seeds"])))),
    }
    if "schedule" in spec:
        # Studies stored before schedules existed have none (and their trials no such param).
        distributions["schedule"] = CategoricalDistribution(list(spec["schedule"]))
    return distributions


def create_optuna_study(url: str, study_id: int, spec: dict[str, Any]) -> StudyHandle:
    """Creates (or finds) the Optuna study mirroring ours (its own short transactions)."""
    import optuna
    from optuna.exceptions import DuplicatedStudyError

    storage = get_storage(url)
    name = optuna_study_name(study_id)
    try:
        optuna_id = storage.create_new_study(
            directions=[optuna.study.StudyDirection.MINIMIZE], study_name=name
        )
        storage.set_study_user_attr(optuna_id, "adamod_lab_study_id", study_id)
        storage.set_study_user_attr(optuna_id, "workload", spec.get("workload"))
        storage.set_study_user_attr(optuna_id, "value", "capped validation loss min(loss, loss0)")
    except DuplicatedStudyError:
        optuna_id = storage.get_study_id_from_name(name)
    handle = StudyHandle(optuna_id, distributions_for_spec(spec))
    with _lock:
        _handles[(url, study_id)] = handle
    return handle


def study_handle(db: Database, study_id: int) -> StudyHandle:
    """The cached handle of our study's Optuna study, created if missing (heals a crash at
    submit time). Call it outside a write transaction: on SQLite it may need to write."""
    with _lock:
        cached = _handles.get((db.url, study_id))
    if cached is not None:
        return cached
    from sqlalchemy import select

    from studies.db.models import StudyRow

    with db.session(readonly=True) as session:
        spec = session.execute(select(StudyRow.spec).where(StudyRow.id == study_id)).scalar_one()
    return create_optuna_study(db.url, study_id, spec)


def handle_in_session(session: Session, url: str, study_id: int) -> StudyHandle | None:
    """The study's handle read through the caller's (write) transaction; None when its Optuna
    study does not exist yet (the caller then leaves the Optuna trial to completion)."""
    with _lock:
        cached = _handles.get((url, study_id))
    if cached is not None:
        return cached
    from optuna.storages._rdb import models
    from sqlalchemy import select

    from studies.db.models import StudyRow

    # Inside a SQLite write transaction another connection cannot write, so no creation here.
    optuna_id = session.execute(
        select(models.StudyModel.study_id).where(
            models.StudyModel.study_name == optuna_study_name(study_id)
        )
    ).scalar_one_or_none()
    if optuna_id is None:
        return None
    spec = session.execute(select(StudyRow.spec).where(StudyRow.id == study_id)).scalar_one()
    handle = StudyHandle(int(optuna_id), distributions_for_spec(spec))
    with _lock:
        _handles[(url, study_id)] = handle
    return handle


def _utc_naive(moment: datetime | None) -> datetime:
    # Optuna's RDBStorage stores naive UTC.
    return (moment or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)


def _optuna_state(trial: FinishedTrial) -> Any:
    from optuna.trial import TrialState

    if trial.state == "cancelled":
        return TrialState.PRUNED  # stopped early on request: neither a result nor an error
    return TrialState.COMPLETE if trial.value() is not None else TrialState.FAIL


def _insert_trial_row(
    session: Session,
    handle: StudyHandle,
    number: int,
    params: dict[str, Any],
    state: Any,
    started_at: datetime | None,
    finished_at: datetime | None,
) -> int:
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from sqlalchemy import insert

    trials = models.TrialModel.__table__
    # The Optuna trial number is our grid number: unique within the study by our own constraint,
    # so no study-wide lock and count is needed (Optuna's create_new_trial takes both, which
    # serializes every new trial of a study).
    optuna_trial_id = session.execute(
        insert(trials)
        .values(
            number=number,
            study_id=handle.optuna_study_id,
            state=state,
            datetime_start=_utc_naive(started_at),
            datetime_complete=None if finished_at is None else _utc_naive(finished_at),
        )
        .returning(trials.c.trial_id)
    ).scalar_one()
    session.execute(
        insert(models.TrialParamModel.__table__),
        [
            {
                "trial_id": optuna_trial_id,
                "param_name": name,
                "param_value": distribution.to_internal_repr(params.get(name)),
                "distribution_json": distribution_to_json(distribution),
            }
            for name, distribution in handle.distributions.items()
        ],
    )
    return int(optuna_trial_id)


def insert_running_trial(
    session: Session, handle: StudyHandle, number: int, params: dict[str, Any]
) -> int:
    """Creates a RUNNING Optuna trial (params, distributions, datetime_start now) inside the
    caller's transaction; returns its id. The claim calls it."""
    from optuna.trial import TrialState

    return _insert_trial_row(session, handle, number, params, TrialState.RUNNING, None, None)


def restart_trial(session: Session, optuna_trial_id: int) -> None:
    """Makes an existing Optuna trial RUNNING again for a re-run: new datetime_start, and the
    previous attempt's intermediate values cleared (the re-run reports its own)."""
    from optuna.storages._rdb import models
    from optuna.trial import TrialState
    from sqlalchemy import delete, update

    session.execute(
        update(models.TrialModel.__table__)
        .where(models.TrialModel.__table__.c.trial_id == optuna_trial_id)
        .values(state=TrialState.RUNNING, datetime_start=_utc_naive(None), datetime_complete=None)
    )
    values = models.TrialIntermediateValueModel.__table__
    session.execute(delete(values).where(values.c.trial_id == optuna_trial_id))


def set_trials_waiting(session: Session, optuna_trial_ids: list[int]) -> None:
    """Marks Optuna trials WAITING: their trials were handed back or requeued, not finished."""
    if not optuna_trial_ids:
        return
    from optuna.storages._rdb import models
    from optuna.trial import TrialState
    from sqlalchemy import update

    trials = models.TrialModel.__table__
    session.execute(
        update(trials)
        .where(trials.c.trial_id.in_(optuna_trial_ids), trials.c.state == TrialState.RUNNING)
        .values(state=TrialState.WAITING)
    )


def write_intermediate(session: Session, optuna_trial_id: int, points: dict[int, float]) -> None:
    """Writes (or overwrites) intermediate values of an Optuna trial in the caller's transaction.

    An upsert, so that a retry after a lost reply, which cannot know whether its first try
    committed, writes the same rows again instead of failing on Optuna's (trial_id, step) key.
    """
    if not points:
        return
    from optuna.storages._rdb import models
    from sqlalchemy import delete, insert

    table = models.TrialIntermediateValueModel.__table__
    rows = []
    for step, point in sorted(points.items()):
        stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(point)
        rows.append(
            {
                "trial_id": optuna_trial_id,
                "step": int(step),
                "intermediate_value": stored,
                "intermediate_value_type": kind,
            }
        )
    dialect = session.get_bind().dialect.name
    for start in range(0, len(rows), 200):  # SQLite's limit on bound parameters
        chunk = rows[start : start + 200]
        if dialect in ("postgresql", "sqlite"):
            if dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as upsert
            else:
                from sqlalchemy.dialects.sqlite import insert as upsert
            statement = upsert(table).values(chunk)
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=[table.c.trial_id, table.c.step],
                    set_={
                        "intermediate_value": statement.excluded.intermediate_value,
                        "intermediate_value_type": statement.excluded.intermediate_value_type,
                    },
                )
            )
        else:
            steps = [row["step"] for row in chunk]
            session.execute(
                delete(table).where(table.c.trial_id == optuna_trial_id, table.c.step.in_(steps))
            )
            session.execute(insert(table), chunk)


def _write_result(
    session: Session, optuna_trial_id: int, trial: FinishedTrial, written_steps: set[int]
) -> None:
    from optuna.storages._rdb import models
    from sqlalchemy import insert

    value = trial.value() if trial.state != "cancelled" else None
    if value is not None:
        stored, kind = models.TrialValueModel.value_to_stored_repr(value)
        session.execute(
            insert(models.TrialValueModel.__table__).values(
                trial_id=optuna_trial_id, objective=0, value=stored, value_type=kind
            )
        )
    write_intermediate(
        session,
        optuna_trial_id,
        {step: v for step, v in trial.intermediate.items() if step not in written_steps},
    )
    session.execute(
        insert(models.TrialUserAttributeModel.__table__),
        [
            {"trial_id": optuna_trial_id, "key": key, "value_json": json.dumps(attr)}
            for key, attr in trial.user_attrs().items()
        ],
    )


def insert_finished_trial(session: Session, handle: StudyHandle, trial: FinishedTrial) -> int:
    """Writes one finished trial into Optuna's tables inside the caller's transaction.

    The rows are those RDBStorage.create_new_trial(template_trial=...) writes, except that the
    trial number is our grid number. Returns the Optuna trial id. For trials that had no Optuna
    trial while running (claimed without one, or repaired by sync_optuna).
    """
    optuna_trial_id = _insert_trial_row(
        session,
        handle,
        trial.number,
        trial.params,
        _optuna_state(trial),
        trial.started_at,
        trial.finished_at,
    )
    _write_result(session, optuna_trial_id, trial, set())
    return optuna_trial_id


def finish_trial(
    session: Session,
    handle: StudyHandle,
    optuna_trial_id: int | None,
    trial: FinishedTrial,
    *,
    written_steps: set[int] | None = None,
) -> int:
    """Gives the trial's Optuna trial its final state (COMPLETE, FAIL, or PRUNED when
    cancelled), value, the intermediate values not in `written_steps`, and user attributes,
    inside the caller's transaction; inserts the whole trial when it has none. Returns its id."""
    from optuna.storages._rdb import models
    from sqlalchemy import update

    if optuna_trial_id is None:
        return insert_finished_trial(session, handle, trial)
    trials = models.TrialModel.__table__
    updated = session.execute(
        update(trials)
        .where(trials.c.trial_id == optuna_trial_id)
        .values(state=_optuna_state(trial), datetime_complete=_utc_naive(trial.finished_at))
    ).rowcount
    if updated != 1:  # its row is gone (deleted by hand): write the whole trial again
        return insert_finished_trial(session, handle, trial)
    _write_result(session, optuna_trial_id, trial, written_steps or set())
    return optuna_trial_id


def record_trial(db: Database, study_id: int, trial: FinishedTrial) -> int:
    """Writes one finished trial through Optuna's public storage API (its own transaction).

    The fallback for databases whose Optuna schema we do not write directly.
    """
    from optuna.trial import FrozenTrial

    handle = study_handle(db, study_id)
    value = trial.value()
    local = {
        "start": _utc_naive(trial.started_at or trial.finished_at),
        "end": _utc_naive(trial.finished_at),
    }
    frozen = FrozenTrial(
        number=0,  # the storage assigns the number
        state=_optuna_state(trial),
        value=value,
        values=None,
        datetime_start=local["start"].replace(tzinfo=UTC).astimezone().replace(tzinfo=None),
        datetime_complete=local["end"].replace(tzinfo=UTC).astimezone().replace(tzinfo=None),
        params={k: trial.params.get(k) for k in handle.distributions},
        distributions=handle.distributions,
        user_attrs=trial.user_attrs(),
        system_attrs={},
        intermediate_values=trial.intermediate,
        trial_id=0,
    )
    return get_storage(db.url).create_new_trial(handle.optuna_study_id, template_trial=frozen)


def finished_trial_from_row(row: Any) -> FinishedTrial:
    """A FinishedTrial from a stored TrialRow."""
    worker = None
    if row.worker_host is not None:
        worker = {"host": row.worker_host, "pid": row.worker_pid, "device": row.worker_device}
    return FinishedTrial(
        trial_id=row.id,
        number=row.number,
        params=row.params,
        state=row.state,
        loss=row.loss,
        loss0=row.loss0,
        accuracy=row.accuracy,
        intermediate={
            int(p["step"]): float(p["val_loss"])
            for p in row.curve or []
            if p.get("val_loss") is not None
        },
        worker=worker,
        attempts=row.attempts,
        started_at=row.claimed_at or row.started_at,
        finished_at=row.finished_at,
        error=row.error,
    )


def sync_optuna(
    db: Database,
    *,
    older_than_s: float = 60.0,
    trial_ids: list[int] | None = None,
    limit: int = 1000,
) -> int:
    """Gives Optuna the final state of terminal trials whose Optuna trial lacks it; returns how
    many Optuna trials it wrote.

    Normally there are none: completions write Optuna in the same transaction. They appear when a
    lease expires on a trial's last attempt (it fails with no worker to record it), when a study
    is cancelled (its handed-back trials, WAITING in Optuna, become PRUNED), or after a crash in
    the fallback path. Each is written in one transaction with its row locked, so two workers
    syncing at once never write it twice.
    """
    from datetime import timedelta

    from sqlalchemy import and_, select, text, update

    from studies.db.models import OPTUNA_PENDING_SQL, TrialRow, utcnow

    pending_clause = text(OPTUNA_PENDING_SQL)
    recent = (
        TrialRow.id.in_(trial_ids)
        if trial_ids is not None
        else TrialRow.finished_at <= utcnow() - timedelta(seconds=older_than_s)
    )
    # Cancelled before they ever ran: nothing to show in Optuna.
    with db.session() as session:
        session.execute(
            update(TrialRow)
            .where(
                and_(pending_clause, TrialRow.state == "cancelled"),
                TrialRow.optuna_trial_id.is_(None),
                recent,
            )
            .values(optuna_final=True),
            execution_options={"synchronize_session": False},
        )
    query = select(TrialRow.id, TrialRow.study_id).where(pending_clause, recent)
    with db.session(readonly=True) as session:
        pending = session.execute(query.order_by(TrialRow.id).limit(limit)).all()
    written = 0
    direct = direct_writes(db.url) if pending else False
    for trial_id, study_id in pending:
        handle = study_handle(db, study_id)
        if not direct:
            written += _sync_through_storage(db, handle, trial_id)
            continue
        with db.session() as session:
            row = session.execute(
                select(TrialRow)
                .where(TrialRow.id == trial_id, TrialRow.optuna_final.is_(False))
                .with_for_update()
            ).scalar_one_or_none()
            if row is None:
                continue  # another worker mirrored it meanwhile
            optuna_trial_id = row.optuna_trial_id
            if row.state != "cancelled" or optuna_trial_id is not None:
                optuna_trial_id = finish_trial(
                    session, handle, optuna_trial_id, finished_trial_from_row(row)
                )
                written += 1
            session.execute(
                update(TrialRow)
                .where(TrialRow.id == trial_id)
                .values(optuna_trial_id=optuna_trial_id, optuna_final=True),
                execution_options={"synchronize_session": False},
            )
    return written


def _sync_through_storage(db: Database, handle: StudyHandle, trial_id: int) -> int:
    from sqlalchemy import select, update

    from studies.db.models import TrialRow

    with db.session(readonly=True) as session:
        row = session.execute(select(TrialRow).where(TrialRow.id == trial_id)).scalar_one()
    present = {
        t.user_attrs.get(OPTUNA_TRIAL_ID_ATTR): t._trial_id
        for t in get_storage(db.url).get_all_trials(handle.optuna_study_id, deepcopy=False)
    }
    optuna_trial_id = present.get(trial_id)
    wrote = 0
    if optuna_trial_id is None and row.state != "cancelled":
        optuna_trial_id = record_trial(db, row.study_id, finished_trial_from_row(row))
        wrote = 1
    with db.session() as session:
        session.execute(
            update(TrialRow)
            .where(TrialRow.id == trial_id)
            .values(optuna_trial_id=optuna_trial_id, optuna_final=True),
            execution_options={"synchronize_session": False},
        )
    return wrote

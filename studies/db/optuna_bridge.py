"""The Optuna mirror of each study: same database, one Optuna trial per finished trial of ours.

Our tables are the source of truth and the queue; Optuna's study (named `adamod-lab-{id}`) is a
read model for `optuna-dashboard` and `optuna.load_study`. Its value is the capped loss
min(loss, loss0) (loss0 when diverged), the quantity the robustness analysis ranks; failed trials
are Optuna FAIL trials; the curve is the trial's intermediate values.

A finished trial is written once, when it finishes, in the SAME transaction that stores our
result: a few multi-row INSERTs into Optuna's tables through Optuna's own table definitions (the
rows RDBStorage.create_new_trial would write). The Optuna trial number is our grid number, so
Optuna trial k is grid point k and no study-wide lock is needed. So a trial is in Optuna exactly
when it is finished in ours, and the write costs a few milliseconds instead of the ~30 statements
of create_new_trial. When the database's Optuna schema is not the installed Optuna's head
revision, we fall back to create_new_trial (separate transaction), and `sync_optuna` repairs
anything a crash left unmirrored.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

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
    "get_storage",
    "init_optuna_schema",
    "insert_finished_trial",
    "optuna_study_name",
    "record_trial",
    "study_handle",
    "sync_optuna",
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


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # Optuna's engine knows nothing of our workers writing at the same time: wait, don't fail.
        return {"connect_args": {"timeout": 30}}
    return {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 4}


def init_optuna_schema(url: str) -> None:
    """Creates (or upgrades the check of) Optuna's tables; called by Database.migrate()."""
    import optuna

    storage = optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
    storage.engine.dispose()


def get_storage(url: str) -> optuna.storages.RDBStorage:
    """One RDBStorage per URL per process (creating one costs a schema check)."""
    import optuna

    key = (url, os.getpid())  # a forked child must not share its parent's connections
    with _lock:
        storage = _storages.get(key)
        if storage is None:
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=_engine_kwargs(url),
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

    from studies.spec import BOUNDED_OPTIMIZERS, LrGrid

    lrs = LrGrid.model_validate(spec["lr"]).values()
    optimizers = list(spec["optimizers"])
    beta3: list[Any] = []
    if any(o in BOUNDED_OPTIMIZERS for o in optimizers):
        beta3.extend(float(b) for b in spec["beta3"])
    if any(o not in BOUNDED_OPTIMIZERS for o in optimizers):
        beta3.append(None)  # Adam and friends have no beta3
    return {
        "lr": FloatDistribution(min(lrs), max(lrs), log=True),
        "optimizer": CategoricalDistribution(optimizers),
        "beta3": CategoricalDistribution(beta3),
        "warmup_steps": CategoricalDistribution([int(w) for w in spec["warmup_steps"]]),
        "seed": CategoricalDistribution(list(range(int(spec["seeds"])))),
    }


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


def _utc_naive(moment: datetime | None) -> datetime:
    # Optuna's RDBStorage stores naive UTC.
    return (moment or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)


def insert_finished_trial(session: Session, handle: StudyHandle, trial: FinishedTrial) -> int:
    """Writes one finished trial into Optuna's tables inside the caller's transaction.

    The rows are those RDBStorage.create_new_trial(template_trial=...) writes, except that the
    trial number is our grid number. Returns the Optuna trial id.
    """
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from optuna.trial import TrialState
    from sqlalchemy import insert

    trials = models.TrialModel.__table__
    value = trial.value()
    state = TrialState.COMPLETE if value is not None else TrialState.FAIL
    # The Optuna trial number is our grid number: unique within the study by our own constraint,
    # so no study-wide lock and count is needed (Optuna's create_new_trial takes both, which
    # serializes every completion of a study).
    optuna_trial_id = session.execute(
        insert(trials)
        .values(
            number=trial.number,
            study_id=handle.optuna_study_id,
            state=state,
            datetime_start=_utc_naive(trial.started_at),
            datetime_complete=_utc_naive(trial.finished_at),
        )
        .returning(trials.c.trial_id)
    ).scalar_one()
    params = [
        {
            "trial_id": optuna_trial_id,
            "param_name": name,
            "param_value": distribution.to_internal_repr(trial.params.get(name)),
            "distribution_json": distribution_to_json(distribution),
        }
        for name, distribution in handle.distributions.items()
    ]
    session.execute(insert(models.TrialParamModel.__table__), params)
    if value is not None:
        stored, kind = models.TrialValueModel.value_to_stored_repr(value)
        session.execute(
            insert(models.TrialValueModel.__table__).values(
                trial_id=optuna_trial_id, objective=0, value=stored, value_type=kind
            )
        )
    intermediate = []
    for step, point in sorted(trial.intermediate.items()):
        stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(point)
        intermediate.append(
            {
                "trial_id": optuna_trial_id,
                "step": int(step),
                "intermediate_value": stored,
                "intermediate_value_type": kind,
            }
        )
    if intermediate:
        session.execute(insert(models.TrialIntermediateValueModel.__table__), intermediate)
    session.execute(
        insert(models.TrialUserAttributeModel.__table__),
        [
            {"trial_id": optuna_trial_id, "key": key, "value_json": json.dumps(attr)}
            for key, attr in trial.user_attrs().items()
        ],
    )
    return int(optuna_trial_id)


def record_trial(db: Database, study_id: int, trial: FinishedTrial) -> int:
    """Writes one finished trial through Optuna's public storage API (its own transaction).

    The fallback for databases whose Optuna schema we do not write directly.
    """
    from optuna.trial import FrozenTrial, TrialState

    handle = study_handle(db, study_id)
    value = trial.value()
    local = {
        "start": _utc_naive(trial.started_at or trial.finished_at),
        "end": _utc_naive(trial.finished_at),
    }
    frozen = FrozenTrial(
        number=0,  # the storage assigns the number
        state=TrialState.COMPLETE if value is not None else TrialState.FAIL,
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
    """Mirrors finished trials that are not in Optuna yet; returns how many it wrote.

    Normally there are none: completions write Optuna in the same transaction. They appear when a
    lease expires on a trial's last attempt (it fails with no worker to record it), or after a
    crash in the fallback path. Each is written in one transaction with its row locked, so two
    workers syncing at once never write it twice.
    """
    from datetime import timedelta

    from sqlalchemy import select, update

    from studies.db.models import FINISHED_STATES, TrialRow, utcnow

    query = select(TrialRow.id, TrialRow.study_id).where(
        TrialRow.optuna_trial_id.is_(None), TrialRow.state.in_(FINISHED_STATES)
    )
    if trial_ids is not None:
        query = query.where(TrialRow.id.in_(trial_ids))
    else:
        query = query.where(TrialRow.finished_at <= utcnow() - timedelta(seconds=older_than_s))
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
                .where(TrialRow.id == trial_id, TrialRow.optuna_trial_id.is_(None))
                .with_for_update()
            ).scalar_one_or_none()
            if row is None:
                continue  # another worker mirrored it meanwhile
            optuna_trial_id = insert_finished_trial(session, handle, finished_trial_from_row(row))
            session.execute(
                update(TrialRow)
                .where(TrialRow.id == trial_id)
                .values(optuna_trial_id=optuna_trial_id),
                execution_options={"synchronize_session": False},
            )
            written += 1
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
    if optuna_trial_id is None:
        optuna_trial_id = record_trial(db, row.study_id, finished_trial_from_row(row))
        wrote = 1
    with db.session() as session:
        session.execute(
            update(TrialRow).where(TrialRow.id == trial_id).values(optuna_trial_id=optuna_trial_id),
            execution_options={"synchronize_session": False},
        )
    return wrote

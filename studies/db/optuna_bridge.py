"""The Optuna mirror of each study: same database, one Optuna trial per finished trial of ours.

Our tables are the source of truth and the queue; Optuna's study (named `adamod-lab-{id}`) is a
read model for `optuna-dashboard` and `optuna.load_study`. Each finished trial is written in one
storage call (`create_new_trial` with a complete FrozenTrial: params, value, intermediate values,
user attributes) when it finishes, instead of ask/report/tell chatter during training: one
transaction instead of one per evaluation. Its value is the capped loss min(loss, loss0) (loss0 when
diverged), the quantity the robustness analysis ranks; failed trials are Optuna FAIL trials.
"""

from __future__ import annotations

import math
import os
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from studies.db.engine import Database

__all__ = [
    "OPTUNA_TRIAL_ID_ATTR",
    "capped_value",
    "create_optuna_study",
    "distributions_for_spec",
    "get_storage",
    "init_optuna_schema",
    "optuna_study_name",
    "record_trial",
    "record_trial_row",
    "sync_optuna",
]

OPTUNA_TRIAL_ID_ATTR = "adamod_lab_trial_id"
_lock = threading.Lock()
_storages: dict[tuple[str, int], Any] = {}
# (url, our study id) -> (Optuna study id, distributions)
_studies: dict[tuple[str, int], tuple[int, dict[str, Any]]] = {}


def optuna_study_name(study_id: int) -> str:
    """The name of the Optuna study that mirrors our study `study_id`."""
    return f"adamod-lab-{study_id}"


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # Optuna's engine knows nothing of our workers writing at the same time: wait, don't fail.
        return {"connect_args": {"timeout": 30}}
    return {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 4}


def init_optuna_schema(url: str) -> None:
    """Creates (or checks) Optuna's tables in the database; called by Database.migrate()."""
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


def create_optuna_study(url: str, study_id: int, spec: dict[str, Any]) -> int:
    """Creates (or finds) the Optuna study mirroring ours; returns its Optuna study id."""
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
    with _lock:
        _studies[(url, study_id)] = (optuna_id, distributions_for_spec(spec))
    return optuna_id


def _study_handle(
    url: str, study_id: int, spec: dict[str, Any] | None, db: Database | None
) -> tuple[int, dict[str, Any]]:
    with _lock:
        cached = _studies.get((url, study_id))
    if cached is not None:
        return cached
    if spec is None:
        if db is None:
            raise ValueError("spec: needed when the study is not cached and no db is given")
        spec = _load_spec(db, study_id)
    create_optuna_study(url, study_id, spec)  # get-or-create: also heals a crash at submit time
    with _lock:
        return _studies[(url, study_id)]


def _load_spec(db: Database, study_id: int) -> dict[str, Any]:
    from sqlalchemy import select

    from studies.db.models import StudyRow

    with db.session(readonly=True) as session:
        return session.execute(select(StudyRow.spec).where(StudyRow.id == study_id)).scalar_one()


def capped_value(state: str, loss: float | None, loss0: float | None) -> float | None:
    """The trial's value: min(loss, loss0), loss0 when diverged, None when unknown.

    The same definition as TrialRecord.capped_loss (ROBUSTNESS.md), on raw stored values.
    """
    loss = loss if loss is not None and math.isfinite(loss) else None
    loss0 = loss0 if loss0 is not None and math.isfinite(loss0) else None
    if state == "diverged" or loss is None:
        return loss0
    return loss if loss0 is None else min(loss, loss0)


def _local_naive(moment: datetime | None) -> datetime | None:
    # Optuna stores naive local times (datetime.now()).
    if moment is None:
        return None
    return moment.astimezone().replace(tzinfo=None)


def record_trial(
    url: str,
    *,
    study_id: int,
    spec: dict[str, Any] | None,
    trial_id: int,
    params: dict[str, Any],
    state: str,
    loss: float | None,
    loss0: float | None,
    accuracy: float | None,
    intermediate: dict[int, float],
    worker: dict[str, Any] | None,
    attempts: int,
    started_at: datetime | None,
    finished_at: datetime | None,
    error: str | None = None,
    db: Database | None = None,
) -> int:
    """Writes one finished trial (completed, diverged or failed) to Optuna in one call."""
    from optuna.trial import FrozenTrial, TrialState

    optuna_study_id, distributions = _study_handle(url, study_id, spec, db)
    value = capped_value(state, loss, loss0) if state in ("completed", "diverged") else None
    ok = value is not None and math.isfinite(value)
    user_attrs: dict[str, Any] = {
        OPTUNA_TRIAL_ID_ATTR: trial_id,
        "state": state,
        "loss": loss if loss is not None and math.isfinite(loss) else None,
        "loss0": loss0,
        "accuracy": accuracy,
        "worker": worker,
        "attempts": attempts,
    }
    if error:
        user_attrs["error"] = error[:2000]
    finished = finished_at or datetime.now(UTC)
    trial = FrozenTrial(
        number=0,  # the storage assigns the number
        state=TrialState.COMPLETE if ok else TrialState.FAIL,
        value=value if ok else None,
        values=None,
        datetime_start=_local_naive(started_at or finished),
        datetime_complete=_local_naive(finished),
        params={k: params.get(k) for k in distributions},
        distributions=distributions,
        user_attrs=user_attrs,
        system_attrs={},
        intermediate_values=intermediate,
        trial_id=0,
    )
    return get_storage(url).create_new_trial(optuna_study_id, template_trial=trial)


def record_trial_row(db: Database, trial_id: int) -> int | None:
    """Writes a finished trial to Optuna from its stored row; returns the Optuna trial id."""
    from studies.db.models import FINISHED_STATES, TrialRow

    with db.session(readonly=True) as session:
        row = session.get(TrialRow, trial_id)
        if row is None or row.state not in FINISHED_STATES:
            return None
        worker = None
        if row.worker_host is not None:
            worker = {"host": row.worker_host, "pid": row.worker_pid, "device": row.worker_device}
        return record_trial(
            db.url,
            study_id=row.study_id,
            spec=None,
            db=db,
            trial_id=row.id,
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
            started_at=row.started_at,
            finished_at=row.finished_at,
            error=row.error,
        )


def sync_optuna(db: Database, *, older_than_s: float = 60.0, limit: int = 1000) -> int:
    """Writes finished trials missing from Optuna (a worker died between the two writes, or the
    trial failed by lease expiry); returns how many were written. Any worker may call it.

    A trial already present (found by its `adamod_lab_trial_id` user attribute) is only marked.
    """
    from datetime import timedelta

    from sqlalchemy import select, update

    from studies.db.models import FINISHED_STATES, TrialRow, utcnow

    cutoff = utcnow() - timedelta(seconds=older_than_s)
    with db.session(readonly=True) as session:
        pending = session.execute(
            select(TrialRow.id, TrialRow.study_id)
            .where(
                TrialRow.optuna_trial_id.is_(None),
                TrialRow.state.in_(FINISHED_STATES),
                TrialRow.finished_at <= cutoff,
            )
            .order_by(TrialRow.id)
            .limit(limit)
        ).all()
    if not pending:
        return 0
    storage = get_storage(db.url)
    written = 0
    marks: list[tuple[int, int]] = []
    present: dict[int, dict[int, int]] = {}
    for trial_id, study_id in pending:
        if study_id not in present:
            try:
                optuna_id = storage.get_study_id_from_name(optuna_study_name(study_id))
                trials = storage.get_all_trials(optuna_id, deepcopy=False)
            except KeyError:
                trials = []
            present[study_id] = {
                int(t.user_attrs[OPTUNA_TRIAL_ID_ATTR]): t._trial_id
                for t in trials
                if OPTUNA_TRIAL_ID_ATTR in t.user_attrs
            }
        optuna_trial_id = present[study_id].get(trial_id)
        if optuna_trial_id is None:
            optuna_trial_id = record_trial_row(db, trial_id)
            written += optuna_trial_id is not None
        if optuna_trial_id is not None:
            marks.append((trial_id, optuna_trial_id))
    with db.session() as session:
        for trial_id, optuna_trial_id in marks:
            session.execute(
                update(TrialRow)
                .where(TrialRow.id == trial_id)
                .values(optuna_trial_id=optuna_trial_id),
                execution_options={"synchronize_session": False},
            )
    return written

"""The Optuna mirror of each study: same database, one Optuna trial per trial of ours that ran.

Our tables are the source of truth and the queue; Optuna's study (named
`adamod-lab-{id}-{name}`, kept in studies.optuna_study_name) is a read model for
`optuna-dashboard` and `optuna.load_study`. Its value is the capped loss min(loss, loss0) (loss0
when diverged), the quantity the robustness analysis ranks, named by Optuna's metric names;
failed trials are Optuna FAIL trials; the curve is the trial's intermediate values. Only the axes
that vary in the study are Optuna params; the seed and fixed settings are trial user attributes
(optuna_params.py); every attribute is a flat scalar.

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

The mirror never takes a worker down (a person may delete it, e.g. in optuna-dashboard): every
write checks, in its own transaction, that the Optuna study and trial it writes to still exist
(PostgreSQL: locking them FOR KEY SHARE, so a concurrent delete waits for our commit instead of
failing our insert), and skips what vanished; the study's rows are then marked for sync_optuna,
which recreates the study (same name and attributes) and mirrors every finished trial again.
Each vanished study or trial is logged once. The study is marked read-only for Optuna clients
(user attribute "adamod_lab"); a trial an Optuna client adds anyway with study.ask() gets a
number count-based by Optuna, so the insert of grid trial k first moves any other trial numbered
k past the grid (number >= n_trials): grid trial k is always Optuna trial number k.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from studies.db.optuna_params import (
    METRIC_NAME,
    METRIC_NAMES_ATTR,
    distributions_for_spec,
    optuna_study_name,
    split_params,
    study_user_attrs,
)
from studies.db.optuna_schema import engine_kwargs, init_optuna_schema

if TYPE_CHECKING:
    import optuna
    from sqlalchemy.orm import Session

    from studies.db.engine import Database

__all__ = [
    "METRIC_NAME",
    "OPTUNA_TRIAL_ID_ATTR",
    "READ_ONLY_ATTR",
    "RESULT_ATTR_KEYS",
    "FinishedTrial",
    "StudyHandle",
    "capped_value",
    "create_optuna_study",
    "direct_writes",
    "distributions_for_spec",
    "finish_trial",
    "finish_trials",
    "get_storage",
    "handle_in_session",
    "init_optuna_schema",
    "insert_finished_trial",
    "insert_running_trial",
    "insert_running_trials",
    "optuna_study_name",
    "record_trial",
    "reopen_trials",
    "restart_trial",
    "set_trials_waiting",
    "start_running_trial",
    "start_running_trials",
    "study_alive",
    "study_handle",
    "sync_optuna",
    "write_intermediate",
]

OPTUNA_TRIAL_ID_ATTR = "adamod_lab_trial_id"
# The study user attribute that tells Optuna clients (dashboard, scripts) the study is ours.
READ_ONLY_ATTR = "adamod_lab"
log = logging.getLogger("studies.db.optuna")
_lock = threading.Lock()
# What was already logged as vanished: (url, "study"|"trial", id); each is logged once.
_reported: set[tuple[str, str, int]] = set()
_storages: dict[tuple[str, int], Any] = {}
_handles: dict[tuple[str, int], StudyHandle] = {}
_direct: dict[str, bool] = {}


@dataclass(frozen=True)
class StudyHandle:
    """What writing into one Optuna study needs: its id and the distributions of the axes that
    vary; our study id, its size, the database URL and the Optuna study's name, to forget the
    handle, renumber foreign trials and tell a recreated study from a vanished one."""

    optuna_study_id: int
    distributions: dict[str, Any]
    study_id: int = 0
    n_trials: int = 0
    url: str = ""
    name: str = ""


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
    reused_from: int | None = None  # our trial whose result this one copied (None: trained)

    def value(self) -> float | None:
        """The Optuna value: the capped loss, None for failed trials."""
        if self.state not in ("completed", "diverged"):
            return None
        value = capped_value(self.state, self.loss, self.loss0)
        return value if value is not None and math.isfinite(value) else None

    def user_attrs(self, distributions: dict[str, Any] | None = None) -> dict[str, Any]:
        """Our facts about the trial that Optuna has no field for, flat and scalar; with the
        study's `distributions`, also the grid coordinates that are not Optuna params (the
        seed, the fixed settings)."""
        attrs: dict[str, Any] = {
            OPTUNA_TRIAL_ID_ATTR: self.trial_id,
            "state": self.state,
            "loss": _finite(self.loss),
            "loss0": _finite(self.loss0),
            "accuracy": _finite(self.accuracy),
            "attempts": self.attempts,
        }
        for key in ("host", "pid", "device"):
            attrs[f"worker_{key}"] = (self.worker or {}).get(key)
        if self.error:
            attrs["error"] = self.error[:2000]
        if self.reused_from is not None:
            attrs["reused_from"] = self.reused_from
        if distributions is not None:
            attrs.update(split_params(self.params, distributions)[1])
        return attrs


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


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


def _read_only_attrs(study_id: int) -> dict[str, Any]:
    # Optuna has no read-only flag: these tell clients (and people) that writes are ours.
    return {
        READ_ONLY_ATTR: f"read-only mirror of adamod-lab study {study_id}: do not add trials",
        "read_only": True,
        "managed_by": "adamod-lab",
    }


def _n_trials(storage: Any, study_id: int) -> int:
    # Our table is in the same database: read the grid size through Optuna's own engine.
    from sqlalchemy import select

    from studies.db.models import StudyRow

    with storage.engine.connect() as connection:
        n = connection.execute(
            select(StudyRow.n_trials).where(StudyRow.id == study_id)
        ).scalar_one_or_none()
    return int(n or 0)


def _create_or_find(url: str, study_id: int, spec: dict[str, Any], name: str) -> tuple[int, bool]:
    """The Optuna study's id, and whether this call created it (with its attributes)."""
    import optuna
    from optuna.exceptions import DuplicatedStudyError

    storage = get_storage(url)
    try:
        optuna_id = storage.create_new_study(
            directions=[optuna.study.StudyDirection.MINIMIZE], study_name=name
        )
    except DuplicatedStudyError:
        return storage.get_study_id_from_name(name), False
    user_attrs = {**study_user_attrs(study_id, spec), **_read_only_attrs(study_id)}
    # What Study.set_metric_names writes (dashboard: "capped validation loss", not "Objective 0").
    system_attrs = {METRIC_NAMES_ATTR: [METRIC_NAME]}
    if direct_writes(url):
        _insert_study_attrs(storage, optuna_id, user_attrs, system_attrs)
    else:
        for key, value in user_attrs.items():
            storage.set_study_user_attr(optuna_id, key, value)
        for key, value in system_attrs.items():
            storage.set_study_system_attr(optuna_id, key, value)
    return optuna_id, True


def _insert_study_attrs(
    storage: Any, optuna_id: int, user_attrs: dict[str, Any], system_attrs: dict[str, Any]
) -> None:
    """The study's attributes in one transaction: the rows set_study_user_attr and
    set_study_system_attr write, one INSERT each instead of one transaction per attribute."""
    from optuna.storages._rdb import models
    from sqlalchemy import insert

    with storage.engine.begin() as connection:
        for table, attrs in (
            (models.StudyUserAttributeModel.__table__, user_attrs),
            (models.StudySystemAttributeModel.__table__, system_attrs),
        ):
            connection.execute(
                insert(table),
                [
                    {"study_id": optuna_id, "key": key, "value_json": json.dumps(value)}
                    for key, value in attrs.items()
                ],
            )


def create_optuna_study(
    url: str,
    study_id: int,
    spec: dict[str, Any],
    *,
    n_trials: int | None = None,
    name: str | None = None,
) -> StudyHandle:
    """Creates (or finds) the Optuna study mirroring ours (its own short transactions), named
    `name` (default: optuna_study_name(study_id, spec's name), what create_study stores)."""
    name = name or optuna_study_name(study_id, spec.get("name"))
    optuna_id, _ = _create_or_find(url, study_id, spec, name)
    if n_trials is None:
        n_trials = _n_trials(get_storage(url), study_id)
    handle = StudyHandle(optuna_id, distributions_for_spec(spec), study_id, n_trials, url, name)
    with _lock:
        _handles[(url, study_id)] = handle
    return handle


def _handle_name(handle: StudyHandle) -> str:
    # Handles built before names were stored on them (none in this code) fall back to the id.
    return handle.name or optuna_study_name(handle.study_id)


def _report_once(url: str, kind: str, ident: int, message: str, *args: Any) -> None:
    with _lock:
        if (url, kind, ident) in _reported:
            return
        if len(_reported) > 10_000:  # a long-lived process: keep the memory bounded
            _reported.clear()
        _reported.add((url, kind, ident))
    log.warning(message, *args)


def _forget(url: str, study_id: int, optuna_study_id: int) -> None:
    with _lock:
        cached = _handles.get((url, study_id))
        if cached is not None and cached.optuna_study_id == optuna_study_id:
            del _handles[(url, study_id)]


def study_alive(session: Session, handle: StudyHandle) -> bool:
    """True when the handle's Optuna study still exists (someone may have deleted it), checked
    in the caller's transaction; on PostgreSQL its row is then locked FOR KEY SHARE, so that a
    concurrent delete waits for our commit instead of failing our writes."""
    from optuna.storages._rdb import models
    from sqlalchemy import select

    studies = models.StudyModel.__table__
    found = session.execute(
        select(studies.c.study_id)
        .where(studies.c.study_id == handle.optuna_study_id)
        .with_for_update(read=True, key_share=True)
    ).scalar_one_or_none()
    if found is not None:
        return True
    _study_missing(session, handle)
    return False


def _study_missing(session: Session, handle: StudyHandle) -> None:
    """The handle's Optuna study vanished: forget the handle and, unless another process has
    recreated it already (and marked them), mark the study's trials for sync_optuna, which
    recreates the study and mirrors them all again."""
    from optuna.storages._rdb import models
    from sqlalchemy import select, update

    from studies.db.models import TrialRow

    _forget(handle.url, handle.study_id, handle.optuna_study_id)
    studies = models.StudyModel.__table__
    recreated = session.execute(
        select(studies.c.study_id).where(studies.c.study_name == _handle_name(handle))
    ).scalar_one_or_none()
    if recreated is not None:
        return  # only this process's handle was stale
    _report_once(
        handle.url,
        "study",
        handle.optuna_study_id,
        "Optuna study %s (id %d) is gone (deleted?): its writes are skipped until it is "
        "recreated; sync_optuna mirrors every finished trial again",
        _handle_name(handle),
        handle.optuna_study_id,
    )
    session.execute(
        update(TrialRow)
        .where(TrialRow.study_id == handle.study_id, TrialRow.optuna_final.is_(True))
        .values(optuna_final=False),
        execution_options={"synchronize_session": False},
    )


def _trial_missing(url: str, optuna_trial_id: int) -> None:
    _report_once(
        url,
        "trial",
        optuna_trial_id,
        "Optuna trial %d is gone (deleted?): skipping its writes; its trial is mirrored "
        "again at completion or by sync_optuna",
        optuna_trial_id,
    )


def study_handle(db: Database, study_id: int, *, validate: bool = False) -> StudyHandle:
    """The cached handle of our study's Optuna study, created if missing (heals a crash at
    submit time, or a deleted mirror). `validate`: check (and recreate) it even when cached.
    Call it outside a write transaction: on SQLite it may need to write."""
    if not validate:
        with _lock:
            cached = _handles.get((db.url, study_id))
        if cached is not None:
            return cached
    from sqlalchemy import select, update

    from studies.db.models import StudyRow, TrialRow

    with db.session(readonly=True) as session:
        spec, n_trials, stored_name = session.execute(
            select(StudyRow.spec, StudyRow.n_trials, StudyRow.optuna_study_name).where(
                StudyRow.id == study_id
            )
        ).one()
        mirrored = session.execute(
            select(TrialRow.id)
            .where(TrialRow.study_id == study_id, TrialRow.optuna_trial_id.is_not(None))
            .limit(1)
        ).scalar_one_or_none()
    name = stored_name or optuna_study_name(study_id)
    optuna_id, created = _create_or_find(db.url, study_id, spec, name)
    if created and mirrored is not None:
        # Recreated after a deletion: its Optuna trials went with it; sync_optuna writes them.
        with _lock:  # SQLite may reuse the ids: a later deletion is news again
            _reported.difference_update(
                {key for key in _reported if key[0] == db.url and key[2] == optuna_id}
                | {key for key in _reported if key[0] == db.url and key[1] == "trial"}
            )
        _report_once(
            db.url,
            "recreated",
            optuna_id,
            "Optuna study %s recreated (id %d): finished trials are mirrored again by sync_optuna",
            name,
            optuna_id,
        )
        with db.session() as session:
            session.execute(
                update(TrialRow)
                .where(TrialRow.study_id == study_id, TrialRow.optuna_final.is_(True))
                .values(optuna_final=False),
                execution_options={"synchronize_session": False},
            )
    handle = StudyHandle(
        optuna_id, distributions_for_spec(spec), study_id, int(n_trials), db.url, name
    )
    with _lock:
        _handles[(db.url, study_id)] = handle
    return handle


def handle_in_session(session: Session, url: str, study_id: int) -> StudyHandle | None:
    """The study's handle read through the caller's (write) transaction, its Optuna study
    checked to exist; None when it does not (yet, or any more: the caller then leaves the Optuna
    trial to completion, which recreates the study)."""
    with _lock:
        cached = _handles.get((url, study_id))
    if cached is not None and study_alive(session, cached):
        return cached
    from optuna.storages._rdb import models
    from sqlalchemy import select

    from studies.db.models import StudyRow

    spec, n_trials, stored_name = session.execute(
        select(StudyRow.spec, StudyRow.n_trials, StudyRow.optuna_study_name).where(
            StudyRow.id == study_id
        )
    ).one()
    name = stored_name or optuna_study_name(study_id)
    # Inside a SQLite write transaction another connection cannot write, so no creation here.
    optuna_id = session.execute(
        select(models.StudyModel.study_id).where(models.StudyModel.study_name == name)
    ).scalar_one_or_none()
    if optuna_id is None:
        return None
    handle = StudyHandle(
        int(optuna_id), distributions_for_spec(spec), study_id, int(n_trials), url, name
    )
    if not study_alive(session, handle):  # takes the lock
        return None
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
    return _insert_trial_rows(session, handle, [(number, params)], state, started_at, finished_at)[
        0
    ]


def _insert_trial_rows(
    session: Session,
    handle: StudyHandle,
    trials: Sequence[tuple[int, dict[str, Any]]],
    state: Any,
    started_at: datetime | None,
    finished_at: datetime | None,
) -> list[int]:
    """Optuna trials of grid (number, params), all in `state`, in one executemany per table (a
    pack's members at claim time: four statements, not four per member); their ids in order."""
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from sqlalchemy import insert

    if not trials:
        return []
    table = models.TrialModel.__table__
    # The Optuna trial number is our grid number: unique within the study by our own constraint,
    # so no study-wide lock and count is needed (Optuna's create_new_trial takes both, which
    # serializes every new trial of a study).
    _move_foreign_trials(session, handle, [number for number, _ in trials])
    common = {
        "study_id": handle.optuna_study_id,
        "state": state,
        "datetime_start": _utc_naive(started_at),
        "datetime_complete": None if finished_at is None else _utc_naive(finished_at),
    }
    ids = [
        int(trial_id)
        for trial_id in session.execute(
            insert(table).returning(table.c.trial_id, sort_by_parameter_order=True),
            [{"number": number, **common} for number, _ in trials],
        ).scalars()
    ]
    # Only the study's varying axes the trial has a value for (Adam trials lack β3); the seed
    # and the fixed settings become user attributes, visible while the trial runs.
    param_rows, attrs = [], []
    for optuna_trial_id, (_, params) in zip(ids, trials, strict=True):
        optuna_params, fixed = split_params(params, handle.distributions)
        param_rows += [
            {
                "trial_id": optuna_trial_id,
                "param_name": name,
                "param_value": handle.distributions[name].to_internal_repr(value),
                "distribution_json": distribution_to_json(handle.distributions[name]),
            }
            for name, value in optuna_params.items()
        ]
        attrs.append((optuna_trial_id, fixed))
    if param_rows:
        session.execute(insert(models.TrialParamModel.__table__), param_rows)
    _upsert_trial_attrs(session, attrs)
    return ids


def _move_foreign_trials(session: Session, handle: StudyHandle, numbers: Sequence[int]) -> None:
    """Moves any trial already numbered one of `numbers` in the study past the grid.

    Only a trial an Optuna client added (study.ask(), despite the read-only attribute) can hold
    a grid number before grid trial `number` is inserted: Optuna numbers it by counting the
    study's trials, which our out-of-order grid numbers do not fill in order. Moving it to
    max(n_trials, highest number + 1) keeps grid trial k Optuna's trial number k, and it out of
    the way of every later grid trial. Normally one indexed SELECT that finds nothing.
    """
    from optuna.storages._rdb import models
    from sqlalchemy import func, select, update

    trials = models.TrialModel.__table__
    in_study = trials.c.study_id == handle.optuna_study_id
    taken = session.execute(
        select(trials.c.trial_id, trials.c.number)
        .where(in_study, trials.c.number.in_(sorted(set(numbers))))
        .order_by(trials.c.trial_id)
    ).all()
    for trial_id, number in taken:
        highest = session.execute(select(func.max(trials.c.number)).where(in_study)).scalar()
        moved_to = max(handle.n_trials, int(highest if highest is not None else -1) + 1)
        session.execute(update(trials).where(trials.c.trial_id == trial_id).values(number=moved_to))
        log.warning(
            "Optuna study %s: trial %d (added by an Optuna client) held grid number %d; "
            "renumbered %d (the study is read-only for Optuna clients)",
            _handle_name(handle),
            trial_id,
            number,
            moved_to,
        )


def insert_running_trial(
    session: Session, handle: StudyHandle, number: int, params: dict[str, Any]
) -> int:
    """Creates a RUNNING Optuna trial (params, distributions, datetime_start now) inside the
    caller's transaction; returns its id. The claim calls it."""
    return insert_running_trials(session, handle, [(number, params)])[0]


def insert_running_trials(
    session: Session, handle: StudyHandle, trials: Sequence[tuple[int, dict[str, Any]]]
) -> list[int]:
    """insert_running_trial for many (grid number, params) of one study (a pack's members), in
    a few statements; their ids in order."""
    from optuna.trial import TrialState

    return _insert_trial_rows(session, handle, trials, TrialState.RUNNING, None, None)


def restart_trial(
    session: Session,
    optuna_trial_id: int,
    *,
    handle: StudyHandle | None = None,
    number: int | None = None,
) -> bool:
    """Makes an existing Optuna trial RUNNING again for a re-run: new datetime_start, and the
    previous attempt's intermediate values cleared (the re-run reports its own). With `handle`
    and `number`, only if it is still that study's trial of that number (a deleted trial's id
    may be reused on SQLite). False: no such trial any more."""
    from optuna.storages._rdb import models
    from optuna.trial import TrialState
    from sqlalchemy import delete, update

    trials = models.TrialModel.__table__
    where = [trials.c.trial_id == optuna_trial_id]
    if handle is not None:
        where.append(trials.c.study_id == handle.optuna_study_id)
    if number is not None:
        where.append(trials.c.number == number)
    updated = session.execute(
        update(trials)
        .where(*where)
        .values(state=TrialState.RUNNING, datetime_start=_utc_naive(None), datetime_complete=None)
    ).rowcount
    if updated != 1:
        return False
    values = models.TrialIntermediateValueModel.__table__
    session.execute(delete(values).where(values.c.trial_id == optuna_trial_id))
    return True


def start_running_trial(
    session: Session,
    handle: StudyHandle,
    number: int,
    params: dict[str, Any],
    optuna_trial_id: int | None,
) -> int:
    """The claimed trial's Optuna trial made RUNNING in the claim's transaction: the existing
    one restarted for a re-run, or a new one when it has none or its old one was deleted.
    Returns its id (store it on our row when it changed)."""
    return start_running_trials(session, handle, [(number, params, optuna_trial_id)])[0]


def start_running_trials(
    session: Session,
    handle: StudyHandle,
    trials: Sequence[tuple[int, dict[str, Any], int | None]],
) -> list[int]:
    """start_running_trial for many claimed trials of one study (a pack's members): re-runs
    restarted one by one (rare), the new ones created together (insert_running_trials).
    `trials` are (grid number, params, Optuna trial id or None); their ids in order."""
    ids: list[int | None] = []
    new: list[tuple[int, dict[str, Any]]] = []
    for number, params, optuna_trial_id in trials:
        if optuna_trial_id is not None:
            if restart_trial(session, optuna_trial_id, handle=handle, number=number):
                ids.append(optuna_trial_id)
                continue
            _trial_missing(handle.url, optuna_trial_id)
        ids.append(None)
        new.append((number, params))
    created = iter(insert_running_trials(session, handle, new))
    return [
        next(created) if optuna_trial_id is None else optuna_trial_id for optuna_trial_id in ids
    ]


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


# The user attributes a finished trial's result writes (FinishedTrial.user_attrs without the
# grid's own attributes); a running trial has none of them.
RESULT_ATTR_KEYS = (
    OPTUNA_TRIAL_ID_ATTR,
    "state",
    "loss",
    "loss0",
    "accuracy",
    "attempts",
    "worker_host",
    "worker_pid",
    "worker_device",
    "error",
    "reused_from",
)


def reopen_trials(session: Session, handle: StudyHandle, optuna_trial_ids: list[int]) -> int:
    """Makes finished Optuna trials (FAIL, PRUNED) of the handle's study WAITING again, in the
    caller's transaction: their trials were queued again by a retry (studies.db.retry).

    Optuna's storage API never reopens a finished trial, but these are our rows: reusing the
    trial keeps grid point k Optuna trial number k (a new trial would need that number too).
    Its value, intermediate values and result attributes go (the re-run writes its own; the
    params and the grid's attributes stay), so it reads as a trial that has not run yet; the
    claim makes it RUNNING as for any re-run. Returns how many Optuna trials it reopened.
    """
    if not optuna_trial_ids:
        return 0
    from optuna.storages._rdb import models
    from optuna.trial import TrialState
    from sqlalchemy import delete, select, update

    trials = models.TrialModel.__table__
    ids = list(
        session.execute(
            select(trials.c.trial_id)
            .where(
                trials.c.trial_id.in_(optuna_trial_ids),
                trials.c.study_id == handle.optuna_study_id,
            )
            .order_by(trials.c.trial_id)
            .with_for_update()
        ).scalars()
    )
    if not ids:
        return 0
    session.execute(
        update(trials)
        .where(trials.c.trial_id.in_(ids))
        .values(state=TrialState.WAITING, datetime_complete=None)
    )
    for model in (models.TrialValueModel, models.TrialIntermediateValueModel):
        table = model.__table__
        session.execute(delete(table).where(table.c.trial_id.in_(ids)))
    attrs = models.TrialUserAttributeModel.__table__
    session.execute(
        delete(attrs).where(attrs.c.trial_id.in_(ids), attrs.c.key.in_(RESULT_ATTR_KEYS))
    )
    return len(ids)


def write_intermediate(
    session: Session,
    optuna_trial_id: int,
    points: dict[int, float],
    *,
    number: int | None = None,
    url: str = "",
) -> bool:
    """Writes (or overwrites) intermediate values of an Optuna trial in the caller's transaction.

    An upsert, so that a retry after a lost reply, which cannot know whether its first try
    committed, writes the same rows again instead of failing on Optuna's (trial_id, step) key.
    Skipped (False) when the Optuna trial (of grid `number`, when given) no longer exists: a
    deleted mirror must not fail the worker's write; completion or sync_optuna mirrors it again.
    On PostgreSQL the trial's row is locked FOR KEY SHARE, so a concurrent delete waits for us.
    """
    if not points:
        return True
    from optuna.storages._rdb import models
    from sqlalchemy import select

    trials = models.TrialModel.__table__
    where = [trials.c.trial_id == optuna_trial_id]
    if number is not None:
        where.append(trials.c.number == number)
    found = session.execute(
        select(trials.c.trial_id).where(*where).with_for_update(read=True, key_share=True)
    ).scalar_one_or_none()
    if found is None:
        _trial_missing(url, optuna_trial_id)
        return False
    _upsert_intermediate(session, optuna_trial_id, points)
    return True


def write_intermediates(
    session: Session, items: Sequence[tuple[int, int | None, dict[int, float]]], *, url: str = ""
) -> set[int]:
    """write_intermediate for many Optuna trials (the members of a pack) in two statements
    instead of two per trial: one FOR KEY SHARE read of the trials (in id order, one lock order
    for every multi-trial write), one upsert of every point. `items` are (optuna trial id, grid
    number or None, points); returns the ids written (a missing trial is skipped, logged once).
    """
    from optuna.storages._rdb import models
    from sqlalchemy import select

    wanted = {trial_id: (number, points) for trial_id, number, points in items if points}
    if not wanted:
        return set()
    trials = models.TrialModel.__table__
    found = session.execute(
        select(trials.c.trial_id, trials.c.number)
        .where(trials.c.trial_id.in_(sorted(wanted)))
        .order_by(trials.c.trial_id)
        .with_for_update(read=True, key_share=True)
    ).all()
    numbers = {int(row.trial_id): int(row.number) for row in found}
    written = set()
    for trial_id, (number, _) in wanted.items():
        if trial_id in numbers and (number is None or numbers[trial_id] == number):
            written.add(trial_id)
        else:
            _trial_missing(url, trial_id)
    _upsert_points(session, [(trial_id, wanted[trial_id][1]) for trial_id in sorted(written)])
    return written


def _dialect_upsert(session: Session) -> Any:
    """The dialect's INSERT with ON CONFLICT (PostgreSQL, SQLite); None on other backends."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as upsert
    else:
        return None
    return upsert


def _upsert_intermediate(session: Session, optuna_trial_id: int, points: dict[int, float]) -> None:
    _upsert_points(session, [(optuna_trial_id, points)])


def _upsert_points(session: Session, trials: Sequence[tuple[int, dict[int, float]]]) -> None:
    """Upserts the intermediate values of each (Optuna trial id, points)."""
    from optuna.storages._rdb import models

    model = models.TrialIntermediateValueModel
    rows = []
    for optuna_trial_id, points in trials:
        for step, point in sorted(points.items()):
            stored, kind = model.intermediate_value_to_stored_repr(point)
            rows.append(
                {
                    "trial_id": optuna_trial_id,
                    "step": int(step),
                    "intermediate_value": stored,
                    "intermediate_value_type": kind,
                }
            )
    _upsert_rows(
        session,
        model.__table__,
        rows,
        ("trial_id", "step"),
        ("intermediate_value", "intermediate_value_type"),
    )


def _write_result(
    session: Session,
    handle: StudyHandle,
    optuna_trial_id: int,
    trial: FinishedTrial,
    written_steps: set[int],
) -> None:
    _write_results(session, handle, [(optuna_trial_id, trial, written_steps)])


def _write_results(
    session: Session,
    handle: StudyHandle,
    items: Sequence[tuple[int, FinishedTrial, set[int]]],
) -> None:
    """Each (Optuna trial id, finished trial, steps already written)'s value, intermediate values
    not yet written and user attributes, as one upsert per table for all of them (a pack's
    members: three statements, not three per member).

    Upserts: writing a trial's result twice (sync_optuna after a recreated mirror, a value or
    attribute an Optuna client set) overwrites instead of failing on Optuna's unique keys."""
    from optuna.storages._rdb import models

    values = []
    for optuna_trial_id, trial, _ in items:
        value = trial.value() if trial.state != "cancelled" else None
        if value is not None:
            stored, kind = models.TrialValueModel.value_to_stored_repr(value)
            values.append(
                {"trial_id": optuna_trial_id, "objective": 0, "value": stored, "value_type": kind}
            )
    _upsert_rows(
        session,
        models.TrialValueModel.__table__,
        values,
        ("trial_id", "objective"),
        ("value", "value_type"),
    )
    _upsert_points(
        session,
        [
            (optuna_trial_id, {s: v for s, v in trial.intermediate.items() if s not in written})
            for optuna_trial_id, trial, written in items
        ],
    )
    _upsert_trial_attrs(
        session,
        [
            (optuna_trial_id, trial.user_attrs(handle.distributions))
            for optuna_trial_id, trial, _ in items
        ],
    )


def _upsert_rows(
    session: Session,
    table: Any,
    rows: list[dict[str, Any]],
    keys: tuple[str, ...],
    updated: tuple[str, ...],
) -> None:
    """Inserts `rows` into `table`, overwriting the `updated` columns of any row whose `keys`
    exist already: the dialect's ON CONFLICT where it has one (PostgreSQL, SQLite), else a
    delete of those keys and an insert."""
    from sqlalchemy import and_, delete, insert

    if not rows:
        return
    upsert = _dialect_upsert(session)
    if upsert is None:
        for row in rows:
            session.execute(delete(table).where(and_(*(table.c[key] == row[key] for key in keys))))
        session.execute(insert(table), rows)
        return
    # One statement, compiled once (cached) and run as an executemany: SQLAlchemy batches the
    # rows into multi-row VALUES itself where the driver allows (insertmanyvalues).
    statement = upsert(table)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[table.c[key] for key in keys],
            set_={column: statement.excluded[column] for column in updated},
        ),
        rows,
    )


def _upsert_trial_attrs(session: Session, trials: Sequence[tuple[int, dict[str, Any]]]) -> None:
    """Writes (or overwrites) the user attributes of each (Optuna trial id, attributes) in the
    caller's transaction, in one upsert."""
    from optuna.storages._rdb import models

    rows = [
        {"trial_id": optuna_trial_id, "key": key, "value_json": json.dumps(attr)}
        for optuna_trial_id, values in trials
        for key, attr in values.items()
    ]
    _upsert_rows(
        session,
        models.TrialUserAttributeModel.__table__,
        rows,
        ("trial_id", "key"),
        ("value_json",),
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
    _write_result(session, handle, optuna_trial_id, trial, set())
    return optuna_trial_id


def finish_trial(
    session: Session,
    handle: StudyHandle,
    optuna_trial_id: int | None,
    trial: FinishedTrial,
    *,
    written_steps: set[int] | None = None,
) -> int | None:
    """Gives the trial's Optuna trial its final state (COMPLETE, FAIL, or PRUNED when
    cancelled), value, the intermediate values not in `written_steps`, and user attributes,
    inside the caller's transaction; inserts the whole trial when it has none, or its old one
    was deleted. Returns its id; None when the Optuna study itself is gone (nothing written:
    the trial stays pending for sync_optuna, which recreates the study)."""
    return finish_trials(session, handle, [(optuna_trial_id, trial, written_steps or set())])[0]


def finish_trials(
    session: Session,
    handle: StudyHandle,
    items: Sequence[tuple[int | None, FinishedTrial, set[int]]],
) -> list[int | None]:
    """finish_trial for many trials of one study (a pack's members) in a few statements rather
    than six per trial: the study checked once, the trials' rows read and locked in one
    statement (id order: one lock order for every multi-trial write), their states in one
    executemany, then one upsert per table (_write_results). `items` are (Optuna trial id or
    None, finished trial, steps already written); returns each one's Optuna trial id, in order
    (all None when the study is gone)."""
    from optuna.storages._rdb import models
    from sqlalchemy import bindparam, select, update

    if not items:
        return []
    if not study_alive(session, handle):
        return [None] * len(items)
    trials = models.TrialModel.__table__
    known = sorted({optuna_trial_id for optuna_trial_id, _, _ in items if optuna_trial_id})
    numbers: dict[int, int] = {}
    if known:
        found = session.execute(
            select(trials.c.trial_id, trials.c.number)
            .where(trials.c.trial_id.in_(known), trials.c.study_id == handle.optuna_study_id)
            .order_by(trials.c.trial_id)
            .with_for_update(key_share=True)  # FOR NO KEY UPDATE: what the UPDATE would take
        ).all()
        numbers = {int(row.trial_id): int(row.number) for row in found}
    ids: list[int | None] = []
    states: list[dict[str, Any]] = []
    results: list[tuple[int, FinishedTrial, set[int]]] = []
    for optuna_trial_id, trial, written in items:
        # Still that study's trial of that number: a deleted trial's id may be reused.
        if optuna_trial_id is not None and numbers.get(optuna_trial_id) == trial.number:
            states.append(
                {
                    "t_id": optuna_trial_id,
                    "t_state": _optuna_state(trial),
                    "t_complete": _utc_naive(trial.finished_at),
                }
            )
            results.append((optuna_trial_id, trial, written))
            ids.append(optuna_trial_id)
            continue
        if optuna_trial_id is not None:  # its row is gone (deleted by hand): write it again
            _trial_missing(handle.url, optuna_trial_id)
        ids.append(insert_finished_trial(session, handle, trial))
    if states:
        session.execute(
            update(trials)
            .where(trials.c.trial_id == bindparam("t_id"))
            .values(state=bindparam("t_state"), datetime_complete=bindparam("t_complete")),
            states,
        )
    _write_results(session, handle, results)
    return ids


def record_trial(db: Database, study_id: int, trial: FinishedTrial) -> int:
    """Writes one finished trial through Optuna's public storage API (its own transaction).

    The fallback for databases whose Optuna schema we do not write directly.
    """
    from optuna.trial import FrozenTrial

    handle = study_handle(db, study_id)
    value = trial.value()
    optuna_params, _ = split_params(trial.params, handle.distributions)
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
        params=optuna_params,
        distributions={k: handle.distributions[k] for k in optuna_params},
        user_attrs=trial.user_attrs(handle.distributions),
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
        reused_from=row.reused_from,
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
    is cancelled (its handed-back trials, WAITING in Optuna, become PRUNED), after a crash in
    the fallback path, or when someone deleted a study's Optuna mirror: a full pass (no
    `trial_ids`) first recreates every missing mirror, which marks its finished trials for this
    pass. Each is written in one transaction with its row locked, so two workers syncing at once
    never write it twice.
    """
    from datetime import timedelta

    from sqlalchemy import and_, select, text, update

    from studies.db.models import OPTUNA_PENDING_SQL, TrialRow, utcnow

    pending_clause = text(OPTUNA_PENDING_SQL)
    if trial_ids is None and direct_writes(db.url):
        _recreate_missing_mirrors(db)
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
        if not direct:
            written += _sync_through_storage(db, study_handle(db, study_id), trial_id)
            continue
        # A second try when the first found the mirror gone: study_handle then recreates it.
        for _ in range(2):
            outcome = _sync_trial(db, study_handle(db, study_id), trial_id)
            if outcome is not None:
                written += outcome
                break
    return written


def _sync_trial(db: Database, handle: StudyHandle, trial_id: int) -> int | None:
    """Mirrors one pending trial in its own transaction; how many Optuna trials it wrote, or
    None when the Optuna study is gone (the trial stays pending)."""
    from sqlalchemy import select, text, update

    from studies.db.models import OPTUNA_PENDING_SQL, TrialRow

    with db.session() as session:
        # Still pending once locked: not mirrored meanwhile by another worker, nor queued again
        # by a retry (studies.db.retry), whose trial must not be written FAIL.
        row = session.execute(
            select(TrialRow)
            .where(TrialRow.id == trial_id, text(OPTUNA_PENDING_SQL))
            .with_for_update()
        ).scalar_one_or_none()
        if row is None:
            return 0  # another worker mirrored it meanwhile, or it was queued again
        optuna_trial_id = row.optuna_trial_id
        wrote = 0
        if row.state != "cancelled" or optuna_trial_id is not None:
            optuna_trial_id = finish_trial(
                session, handle, optuna_trial_id, finished_trial_from_row(row)
            )
            if optuna_trial_id is None:
                return None
            wrote = 1
        session.execute(
            update(TrialRow)
            .where(TrialRow.id == trial_id)
            .values(optuna_trial_id=optuna_trial_id, optuna_final=True),
            execution_options={"synchronize_session": False},
        )
    return wrote


def _recreate_missing_mirrors(db: Database) -> None:
    """Recreates the Optuna study of each of our studies that has none (deleted by someone):
    one indexed lookup per study by Optuna's unique study name."""
    from optuna.storages._rdb import models
    from sqlalchemy import exists, select

    from studies.db.models import StudyRow

    studies = models.StudyModel.__table__
    with db.session(readonly=True) as session:
        missing = list(
            session.execute(
                select(StudyRow.id).where(
                    StudyRow.optuna_study_name.is_not(None),
                    ~exists().where(studies.c.study_name == StudyRow.optuna_study_name),
                )
            ).scalars()
        )
    for study_id in missing:
        with _lock:
            _handles.pop((db.url, study_id), None)
        study_handle(db, study_id)


def _sync_through_storage(db: Database, handle: StudyHandle, trial_id: int) -> int:
    from sqlalchemy import select, update

    from studies.db.models import TERMINAL_STATES, TrialRow

    with db.session(readonly=True) as session:
        row = session.execute(select(TrialRow).where(TrialRow.id == trial_id)).scalar_one()
    if row.state not in TERMINAL_STATES:
        return 0  # queued again by a retry since it was found pending
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

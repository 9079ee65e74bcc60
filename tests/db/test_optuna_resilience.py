"""The Optuna mirror never takes a worker down: deleting it (optuna.delete_study, one click in
optuna-dashboard) mid-run fails no call and counts no attempt; sync_optuna brings it back whole.
An Optuna client's study.ask() on a mirrored study never steals or duplicates a grid number."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from studies.db import Database, create_study, get_study
from studies.db.optuna_bridge import READ_ONLY_ATTR, get_storage, sync_optuna
from studies.db.queue import (
    ClaimedTrial,
    WorkerInfo,
    claim_next_trial,
    complete_trial,
    fail_attempt,
    record_evaluation,
    release_lease,
)
from studies.spec import StudySpec
from studies.trial import EvalPoint, run_trial
from tests.db.util import migrated, noop_spec
from tests.workers.procs import WorkerProcesses, trial_rows, wait_for

WORKER = WorkerInfo(host="resilience-host", pid=os.getpid(), device="cpu")


@pytest.fixture
def worker_processes(tmp_path) -> Any:  # type: ignore[no-untyped-def]
    """Real worker subprocesses, killed when the test ends whatever happened."""
    processes = WorkerProcesses(tmp_path)
    try:
        yield processes
    finally:
        processes.kill_all()


def _delete_mirror(db: Database, study_id: int) -> None:
    # What optuna-dashboard's "delete study" does (through a storage that waits on SQLite locks).
    # On PostgreSQL Optuna's delete silently rolls back when a worker wrote a row of the study
    # meanwhile (its ORM cascade misses the new row: an IntegrityError it ignores); a person
    # clicks again, so does this until the study is gone.
    view = get_study(db, study_id)
    assert view is not None
    storage = get_storage(db.url)
    for _ in range(100):
        try:
            optuna.delete_study(study_name=view.optuna_study_name, storage=storage)
            storage.get_study_id_from_name(view.optuna_study_name)
        except KeyError:
            return  # gone
        time.sleep(0.02)
    raise AssertionError("the Optuna study could not be deleted")


def _delete_mirror_under_load(db: Database, study_id: int) -> None:
    """What optuna.delete_study does, made sure to succeed while a worker writes: the study's
    rows are locked FOR UPDATE first (on PostgreSQL Optuna's own delete keeps rolling back while
    a worker adds rows its ORM cascade did not load), then every row of the study is deleted."""
    from optuna.storages._rdb import models
    from sqlalchemy import delete, select

    view = get_study(db, study_id)
    assert view is not None
    studies = models.StudyModel.__table__
    trials = models.TrialModel.__table__
    with get_storage(db.url).engine.begin() as connection:
        optuna_id = connection.execute(
            select(studies.c.study_id)
            .where(studies.c.study_name == view.optuna_study_name)
            .with_for_update()
        ).scalar_one()
        trial_ids = select(trials.c.trial_id).where(trials.c.study_id == optuna_id)
        connection.execute(trial_ids.with_for_update())
        for table in reversed(models.BaseModel.metadata.sorted_tables):
            if "trial_id" in table.c and table is not trials:
                connection.execute(delete(table).where(table.c.trial_id.in_(trial_ids)))
        for table in reversed(models.BaseModel.metadata.sorted_tables):
            if "study_id" in table.c and table is not studies:
                connection.execute(delete(table).where(table.c.study_id == optuna_id))
        connection.execute(delete(studies).where(studies.c.study_id == optuna_id))


def _optuna_trials(db: Database, study_id: int) -> list[optuna.trial.FrozenTrial]:
    view = get_study(db, study_id)
    assert view is not None
    return optuna.load_study(study_name=view.optuna_study_name, storage=db.url).trials


def _point(step: int, loss: float) -> EvalPoint:
    return EvalPoint(step=step, epoch=step / 10, val_loss=loss, train_loss=loss, accuracy=None)


def _run(db: Database, claim: ClaimedTrial) -> None:
    result = run_trial(claim.config, "cpu", lambda p: not record_evaluation(db, claim, p))
    assert complete_trial(db, claim, result)


def _assert_mirrored_whole(db: Database, study_id: int) -> None:
    """Every finished trial is in the Optuna study exactly once, as grid number k, COMPLETE."""
    rows = trial_rows(db, study_id)
    assert [r.state for r in rows] == ["completed"] * len(rows)
    trials = _optuna_trials(db, study_id)
    assert sorted(t.number for t in trials) == [r.number for r in rows]
    assert sorted(t.user_attrs["adamod_lab_trial_id"] for t in trials) == [r.id for r in rows]
    by_id = {t._trial_id: t for t in trials}
    for row in rows:
        frozen = by_id[row.optuna_trial_id]
        assert frozen.state == TrialState.COMPLETE and frozen.number == row.number
        assert frozen.value == pytest.approx(row.value)
        assert frozen.intermediate_values == {
            p["step"]: p["val_loss"] for p in row.curve if p["val_loss"] is not None
        }
    assert all(r.optuna_final for r in rows)


def test_deleted_mirror_fails_no_call_and_counts_no_attempt(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = migrated(database_url)
    view = create_study(db, noop_spec(n_lr=2, seeds=2))  # 8 trials
    _run(db, claim_next_trial(db, WORKER, lease_seconds=30))  # finished before any deletion

    # Deleted between claim and complete, and between evaluations.
    claim = claim_next_trial(db, WORKER, lease_seconds=30)
    assert record_evaluation(db, claim, _point(1, 0.9))
    caplog.set_level(logging.WARNING, logger="studies.db.optuna")
    _delete_mirror(db, view.id)
    assert record_evaluation(db, claim, _point(2, 0.8))
    assert record_evaluation(db, claim, _point(3, 0.7))
    _run(db, claim)

    # Deleted while a trial is held: the hand-back and the failed attempt succeed too.
    sync_optuna(db, older_than_s=0)  # the repair pass recreates it
    held = claim_next_trial(db, WORKER, lease_seconds=30)
    assert held.optuna_trial_id is not None  # live again
    _delete_mirror(db, view.id)
    assert release_lease(db, held)
    sync_optuna(db, older_than_s=0)
    again = claim_next_trial(db, WORKER, lease_seconds=30)
    assert again.trial_id == held.trial_id and again.attempt == 1  # the hand-back did not count
    _delete_mirror(db, view.id)
    assert fail_attempt(db, again, "boom", max_attempts=3) == "queued"

    while (claim := claim_next_trial(db, WORKER, lease_seconds=30)) is not None:
        _run(db, claim)
    rows = trial_rows(db, view.id)
    assert [r.state for r in rows] == ["completed"] * view.n_trials
    # Only the deliberate failure counted: a deleted mirror is never an attempt.
    assert sorted(r.attempts for r in rows) == [1] * (view.n_trials - 1) + [2]
    assert get_study(db, view.id).status == "completed"

    assert sync_optuna(db, older_than_s=0) > 0  # the trials finished before the deletions
    _assert_mirrored_whole(db, view.id)
    assert sync_optuna(db, older_than_s=0) == 0  # nothing left: never written twice
    # Logged once per deletion, not once per call.
    gone = [r for r in caplog.records if "is gone (deleted?): its writes" in r.getMessage()]
    assert 1 <= len(gone) <= 3


def test_sync_recreates_a_mirror_deleted_after_the_study_finished(database_url: str) -> None:
    db = migrated(database_url)
    view = create_study(db, noop_spec(n_lr=1, seeds=2))
    while (claim := claim_next_trial(db, WORKER, lease_seconds=30)) is not None:
        _run(db, claim)
    _delete_mirror(db, view.id)
    assert sync_optuna(db, older_than_s=0) == view.n_trials
    _assert_mirrored_whole(db, view.id)
    study = optuna.load_study(study_name=view.optuna_study_name, storage=db.url)
    assert study.user_attrs["read_only"] is True  # recreated with its attributes
    assert study.user_attrs["name"] == "noop study"
    assert study.metric_names == ["capped validation loss"]


def test_mirror_is_marked_read_only_for_optuna_clients(database_url: str) -> None:
    db = migrated(database_url)
    view = create_study(db, noop_spec(n_lr=1, seeds=1))
    study = optuna.load_study(study_name=view.optuna_study_name, storage=db.url)
    attrs = study.user_attrs
    assert (
        attrs[READ_ONLY_ATTR]
        == f"read-only mirror of adamod-lab study {view.id}: do not add trials"
    )
    assert attrs["read_only"] is True and attrs["managed_by"] == "adamod-lab"
    assert attrs["adamod_lab_study_id"] == view.id


def test_ask_from_an_optuna_client_never_takes_a_grid_number(database_url: str) -> None:
    db = migrated(database_url)
    view = create_study(db, noop_spec(n_lr=1, seeds=2))  # 4 trials
    first = claim_next_trial(db, WORKER, lease_seconds=30)
    assert first.number == 0
    client = optuna.load_study(study_name=view.optuna_study_name, storage=db.url)
    asked = client.ask()  # Optuna numbers it by counting: 1, grid trial 1's number
    assert asked.number == 1
    _run(db, first)
    while (claim := claim_next_trial(db, WORKER, lease_seconds=30)) is not None:
        _run(db, claim)
    client.tell(asked, 123.0)  # the client's own trial still works
    late = client.ask()  # every grid trial is in the study now: no collision possible
    client.tell(late, 456.0)

    trials = _optuna_trials(db, view.id)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) == view.n_trials + 2  # unique
    ours = [t for t in trials if "adamod_lab_trial_id" in t.user_attrs]
    assert sorted(t.number for t in ours) == list(range(view.n_trials))
    foreign = {t._trial_id: t for t in trials if "adamod_lab_trial_id" not in t.user_attrs}
    assert foreign[asked._trial_id].number >= view.n_trials  # moved past the grid
    assert foreign[asked._trial_id].value == 123.0
    assert foreign[late._trial_id].number >= view.n_trials
    storage = get_storage(db.url)
    for row in trial_rows(db, view.id):  # Optuna's lookup by number finds exactly ours
        found = storage.get_trial_id_from_study_id_trial_number(client._study_id, row.number)
        assert found == row.optuna_trial_id


def _long_quadratic_spec() -> StudySpec:
    """24 quadratic trials, each long enough (and reporting often enough) to be mid-run."""
    return StudySpec.model_validate(
        {
            "name": "quadratic resilience",
            "workload": "quadratic",
            "workload_config": {"dim": 4, "steps_per_epoch": 300, "eval_every": 10},
            "optimizers": ["adam", "adamod"],
            "lr": {"values": [0.1, 0.03, 0.01]},
            "seeds": 4,
            "budget": {"steps": 300},
        }
    )


def test_worker_process_survives_deleting_the_mirror(
    database_url: str, worker_processes: WorkerProcesses, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker runs in a temporary directory: let it import this checkout's packages.
    root = str(Path(__file__).resolve().parents[2])
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )
    db = migrated(database_url)
    view = create_study(db, _long_quadratic_spec())
    process = worker_processes.start(
        database_url,
        "--exit-when-idle",
        "--poll-interval",
        "0.2",
        "--report-interval",
        "0",
        "--pack-size",
        "1",
    )

    def completed() -> int:
        return sum(r.state == "completed" for r in trial_rows(db, view.id))

    wait_for(
        lambda: completed() >= 2 or process.poll() is not None,
        timeout=120,
        what="two trials to complete",
    )
    assert process.poll() is None, worker_processes.log(process)
    done_at_first_delete = completed()
    _delete_mirror_under_load(db, view.id)
    wait_for(
        lambda: completed() >= done_at_first_delete + 2 or process.poll() is not None,
        timeout=120,
        what="more trials after the deletion",
    )
    if process.poll() is None:
        _delete_mirror_under_load(db, view.id)  # again, while running on the recreated mirror
    assert process.wait(timeout=180) == 0, worker_processes.log(process)
    log = worker_processes.log(process)
    assert "Traceback" not in log, log
    assert done_at_first_delete < view.n_trials  # the deletion really was mid-run

    rows = trial_rows(db, view.id)
    assert all(r.attempts == 1 for r in rows)  # each completed exactly once, none retried
    sync_optuna(db, older_than_s=0)
    _assert_mirrored_whole(db, view.id)

"""studies.db.retry: failed and cancelled trials queued again as new, in one transaction, with
their Optuna trials reopened; everything else left as it was. On SQLite and PostgreSQL."""

from __future__ import annotations

import os

import optuna
from optuna.trial import TrialState
from sqlalchemy import select

from studies.db import cancel_study, create_study, get_study, retry_study
from studies.db.models import TrialRow
from studies.db.optuna_bridge import RESULT_ATTR_KEYS, FinishedTrial, sync_optuna
from studies.db.queue import (
    WorkerInfo,
    claim_next_trial,
    complete_trial,
    fail_attempt,
    record_evaluation,
    release_lease,
    renew_lease,
)
from studies.trial import EvalPoint, run_trial
from tests.db.util import migrated, noop_spec

WORKER = WorkerInfo(host="test-host", pid=os.getpid(), device="cpu")
# Every column a retry resets, with the value of a trial that has never run.
FRESH = {
    "state": "queued",
    "attempts": 0,
    "error": None,
    "lease_token": None,
    "lease_expires_at": None,
    "worker_host": None,
    "worker_pid": None,
    "curve": None,
    "result": None,
    "loss": None,
    "started_at": None,
    "finished_at": None,
    "optuna_final": False,
}


def _rows(db, study_id: int) -> dict[int, dict]:  # type: ignore[no-untyped-def]
    with db.session(readonly=True) as session:
        rows = session.execute(select(TrialRow).where(TrialRow.study_id == study_id)).scalars()
        return {
            row.number: {c.name: getattr(row, c.name) for c in TrialRow.__table__.columns}
            for row in rows
        }


def _optuna(db, view) -> dict[int, optuna.trial.FrozenTrial]:  # type: ignore[no-untyped-def]
    trials = optuna.load_study(study_name=view.optuna_study_name, storage=db.url).trials
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), numbers  # one Optuna trial per grid point
    return {t.number: t for t in trials}


def _point(step: int, loss: float) -> EvalPoint:
    return EvalPoint(step=step, epoch=step / 10, val_loss=loss, train_loss=loss, accuracy=None)


def _run_and_complete(db, claim) -> None:  # type: ignore[no-untyped-def]
    result = run_trial(claim.config, "cpu", lambda p: not record_evaluation(db, claim, p))
    assert complete_trial(db, claim, result)


def test_retry_requeues_failed_and_cancelled_trials_and_nothing_else(database_url: str) -> None:
    db = migrated(database_url)
    view = create_study(db, noop_spec(n_lr=3, seeds=1))  # 6 trials, claimed in grid order
    done = claim_next_trial(db, WORKER)
    _run_and_complete(db, done)
    failed = claim_next_trial(db, WORKER)
    assert record_evaluation(db, failed, _point(1, 0.5))
    assert fail_attempt(db, failed, "boom", max_attempts=1) == "failed"
    pruned = claim_next_trial(db, WORKER)
    assert record_evaluation(db, pruned, _point(1, 0.5))
    running = claim_next_trial(db, WORKER)
    cancel_study(db, view.id)  # the last 2 trials (queued) are cancelled at once
    assert release_lease(db, pruned, keep_curve=True)  # a worker's answer to cancellation
    before = _rows(db, view.id)
    assert [before[n]["state"] for n in range(6)] == [
        "completed",
        "failed",
        "cancelled",
        "running",
        "cancelled",
        "cancelled",
    ]
    mirrored = _optuna(db, view)
    assert mirrored[failed.number].state == TrialState.FAIL
    assert mirrored[pruned.number].state == TrialState.PRUNED

    outcome = retry_study(db, view.id)
    assert outcome is not None and outcome.requeued == 4
    assert outcome.study.status == "running"  # resumed: no longer cancelled
    assert outcome.study.progress["queued"] == 4 and outcome.study.progress["running"] == 1
    assert outcome.study.finished_at is None
    after = _rows(db, view.id)
    for number in (1, 2, 4, 5):
        assert {k: after[number][k] for k in FRESH} == FRESH, number
        # Same grid point, same Optuna trial (none for those cancelled before they ran).
        for kept in ("id", "config", "params", "optuna_trial_id"):
            assert after[number][kept] == before[number][kept]
    assert after[0] == before[0]  # completed: untouched
    assert after[3] == before[3]  # running: untouched, its lease still held
    assert renew_lease(db, running)  # and no longer told to stop

    reopened = _optuna(db, view)
    assert set(reopened) == {0, 1, 2, 3}  # the never-run cancelled ones have no Optuna trial
    for number in (failed.number, pruned.number):
        trial = reopened[number]
        assert trial.state == TrialState.WAITING, number
        assert trial._trial_id == mirrored[number]._trial_id
        assert trial.value is None and trial.intermediate_values == {}
        assert "error" not in trial.user_attrs and "state" not in trial.user_attrs
        assert trial.user_attrs["seed"] == 0  # the grid's attributes stay
        assert trial.params == mirrored[number].params
    assert reopened[0].state == TrialState.COMPLETE and reopened[3].state == TrialState.RUNNING
    assert sync_optuna(db, older_than_s=0) == 0  # the repair pass leaves queued trials alone
    assert _optuna(db, view)[failed.number].state == TrialState.WAITING

    # Nothing left to retry: a no-op that answers with the study as it is.
    after = _rows(db, view.id)  # the renewal moved the running trial's lease
    again = retry_study(db, view.id)
    assert again is not None and again.requeued == 0
    assert again.study == get_study(db, view.id)
    assert _rows(db, view.id) == after

    _run_and_complete(db, running)
    while (claim := claim_next_trial(db, WORKER)) is not None:
        _run_and_complete(db, claim)
    final = _rows(db, view.id)
    assert [final[n]["state"] for n in range(6)] == ["completed"] * 6
    assert [final[n]["attempts"] for n in range(6)] == [1] * 6
    assert all(final[n]["error"] is None for n in range(6))
    study = get_study(db, view.id)
    assert study is not None and study.status == "completed" and study.finished_at is not None
    trials = _optuna(db, view)
    assert sorted(trials) == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in trials.values())
    assert all(t.user_attrs["adamod_lab_trial_id"] == final[n]["id"] for n, t in trials.items())
    assert all("error" not in t.user_attrs for t in trials.values())
    assert trials[failed.number]._trial_id == mirrored[failed.number]._trial_id
    assert sync_optuna(db, older_than_s=0) == 0


def test_retry_of_unknown_or_untroubled_study(database_url: str) -> None:
    db = migrated(database_url)
    assert retry_study(db, 12345) is None
    view = create_study(db, noop_spec(n_lr=1, seeds=1))
    before = _rows(db, view.id)
    outcome = retry_study(db, view.id)
    assert outcome is not None and outcome.requeued == 0 and outcome.study == view
    assert _rows(db, view.id) == before


def test_retry_without_a_live_optuna_mirror(database_url: str) -> None:
    db = migrated(database_url)
    view = create_study(db, noop_spec(n_lr=1, seeds=1, optimizers=["adam"]))
    claim = claim_next_trial(db, WORKER)
    assert fail_attempt(db, claim, "boom", max_attempts=1) == "failed"
    optuna.delete_study(study_name=view.optuna_study_name, storage=db.url)
    outcome = retry_study(db, view.id)  # the mirror is gone: ours is retried all the same
    assert outcome is not None and outcome.requeued == 1
    rerun = claim_next_trial(db, WORKER)  # the claim finds no Optuna study: completion makes it
    assert rerun is not None and rerun.trial_id == claim.trial_id
    _run_and_complete(db, rerun)
    sync_optuna(db, older_than_s=0)
    (trial,) = _optuna(db, view).values()
    assert trial.state == TrialState.COMPLETE and trial.number == 0


def test_reopened_trials_lose_every_result_attribute() -> None:
    # reopen_trials deletes RESULT_ATTR_KEYS: every attribute a result writes must be among them.
    trial = FinishedTrial(
        trial_id=1,
        number=0,
        params={"lr": 0.1, "seed": 0},
        state="failed",
        loss=1.0,
        loss0=2.0,
        accuracy=0.5,
        intermediate={},
        worker={"host": "h", "pid": 1, "device": "cpu"},
        attempts=3,
        started_at=None,
        finished_at=None,
        error="boom",
        reused_from=7,
    )
    assert set(trial.user_attrs()) <= set(RESULT_ATTR_KEYS)

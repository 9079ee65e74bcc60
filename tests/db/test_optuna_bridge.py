"""Every finished trial is in the Optuna study of the same database, with the right content."""

from __future__ import annotations

import os
import time

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from studies.db import cancel_study, create_study, list_trials
from studies.db.optuna_bridge import sync_optuna
from studies.db.queue import (
    WorkerInfo,
    claim_next_trial,
    complete_trial,
    fail_attempt,
    record_evaluation,
    release_lease,
    requeue_expired,
)
from studies.trial import EvalPoint, run_trial
from tests.db.util import migrated, noop_spec

WORKER = WorkerInfo(host="bridge-host", pid=os.getpid(), device="cpu")


def test_finished_trials_mirrored_in_optuna(database_url: str) -> None:
    db = migrated(database_url)
    spec = noop_spec(
        n_lr=2,
        seeds=1,
        optimizers=["adam", "adamod"],
        workload_config={"steps_per_epoch": 3, "eval_every": 1, "diverge_at_step": 50},
    )
    view = create_study(db, spec)
    diverging = create_study(
        db,
        noop_spec(
            n_lr=1,
            seeds=1,
            optimizers=["sgd"],
            workload_config={"steps_per_epoch": 3, "eval_every": 1, "diverge_at_step": 2},
        ),
    )
    results = {}
    while (claim := claim_next_trial(db, WORKER, lease_seconds=30)) is not None:
        result = run_trial(claim.config, "cpu", lambda p, c=claim: not record_evaluation(db, c, p))
        assert complete_trial(db, claim, result)
        results[claim.trial_id] = result

    study = optuna.load_study(study_name=view.optuna_study_name, storage=db.url)
    assert len(study.trials) == view.n_trials == 4
    by_id = {t.user_attrs["adamod_lab_trial_id"]: t for t in study.trials}
    for trial in list_trials(db, view.id):
        frozen = by_id[trial.id]
        result = results[trial.id]
        assert frozen.state == TrialState.COMPLETE
        # The axes that vary (optimizer, lr); β3 is one value (0.999) and only AdaMod's.
        assert frozen.params == {k: trial.params[k] for k in ("optimizer", "lr")}
        assert frozen.user_attrs["seed"] == trial.params["seed"]
        assert frozen.value == pytest.approx(min(result.loss, result.loss0))
        assert frozen.intermediate_values == {p.step: p.val_loss for p in result.curve}
        assert frozen.user_attrs["state"] == "completed"
        worker = {k: frozen.user_attrs[f"worker_{k}"] for k in ("host", "pid", "device")}
        assert worker == {"host": "bridge-host", "pid": os.getpid(), "device": "cpu"}
        assert isinstance(frozen.distributions["lr"], FloatDistribution)
        assert frozen.distributions["lr"].log
        assert isinstance(frozen.distributions["optimizer"], CategoricalDistribution)
    assert study.best_value == pytest.approx(min(t.value for t in list_trials(db, view.id)))

    diverged = optuna.load_study(study_name=diverging.optuna_study_name, storage=db.url).trials
    assert len(diverged) == 1
    assert diverged[0].user_attrs["state"] == "diverged"
    assert diverged[0].value == pytest.approx(diverged[0].user_attrs["loss0"])  # capped at loss0


def test_trial_failed_by_lease_expiry_reaches_optuna(database_url: str) -> None:
    db = migrated(database_url)
    view = create_study(db, noop_spec(n_lr=1, seeds=1, optimizers=["adam"]))
    claim_next_trial(db, WORKER, lease_seconds=0.05)
    time.sleep(0.2)
    assert requeue_expired(db, max_attempts=1) == 1  # failed, and mirrored as such
    assert sync_optuna(db, older_than_s=0) == 0  # nothing left to mirror: never written twice
    trials = optuna.load_study(study_name=view.optuna_study_name, storage=db.url).trials
    assert [t.state for t in trials] == [TrialState.FAIL]
    assert trials[0].user_attrs["state"] == "failed"
    assert "lease expired" in trials[0].user_attrs["error"]


def _optuna_trials(db, view) -> list[optuna.trial.FrozenTrial]:  # type: ignore[no-untyped-def]
    return optuna.load_study(study_name=view.optuna_study_name, storage=db.url).trials


def _point(step: int, loss: float) -> EvalPoint:
    return EvalPoint(step=step, epoch=step / 10, val_loss=loss, train_loss=loss, accuracy=None)


def test_running_trial_is_live_in_optuna_and_reruns_reuse_it(database_url: str) -> None:
    db = migrated(database_url)
    view = create_study(db, noop_spec(n_lr=1, seeds=1, optimizers=["adam"]))
    claim = claim_next_trial(db, WORKER, lease_seconds=30)
    (running,) = _optuna_trials(db, view)
    assert running.state == TrialState.RUNNING and running.number == 0
    assert running._trial_id == claim.optuna_trial_id
    assert running.params == {}  # one lr, one optimizer: nothing varies
    assert running.user_attrs["seed"] == 0 and running.user_attrs["lr"] == claim.params["lr"]
    assert running.datetime_start is not None and running.intermediate_values == {}

    assert record_evaluation(db, claim, _point(1, 0.9))
    assert record_evaluation(db, claim, _point(2, 0.8))
    assert record_evaluation(db, claim, _point(2, 0.8))  # a retry of the same point: no error
    assert _optuna_trials(db, view)[0].intermediate_values == {1: 0.9, 2: 0.8}

    assert release_lease(db, claim)  # handed back: WAITING until it runs again
    assert [t.state for t in _optuna_trials(db, view)] == [TrialState.WAITING]
    assert not record_evaluation(db, claim, _point(3, 0.7))  # no lease: Optuna untouched too
    assert _optuna_trials(db, view)[0].intermediate_values == {1: 0.9, 2: 0.8}

    again = claim_next_trial(db, WORKER, lease_seconds=30)  # the re-run: same Optuna trial
    assert again.trial_id == claim.trial_id and again.optuna_trial_id == claim.optuna_trial_id
    (rerun,) = _optuna_trials(db, view)
    assert rerun.state == TrialState.RUNNING and rerun.intermediate_values == {}
    assert fail_attempt(db, again, "boom", max_attempts=3) == "queued"
    assert [t.state for t in _optuna_trials(db, view)] == [TrialState.WAITING]

    last = claim_next_trial(db, WORKER, lease_seconds=30)
    result = run_trial(last.config, "cpu", lambda p: not record_evaluation(db, last, p))
    assert complete_trial(db, last, result)
    (done,) = _optuna_trials(db, view)
    assert done.state == TrialState.COMPLETE and done.number == 0
    assert done._trial_id == claim.optuna_trial_id
    assert done.intermediate_values == {p.step: p.val_loss for p in result.curve}
    assert done.user_attrs["attempts"] == 2  # the hand-back did not count
    assert sync_optuna(db, older_than_s=0) == 0  # nothing left to repair


def test_cancelled_running_trial_is_pruned_in_optuna(database_url: str) -> None:
    db = migrated(database_url)
    view = create_study(db, noop_spec(n_lr=1, seeds=1))  # 2 trials
    claim = claim_next_trial(db, WORKER, lease_seconds=30)
    assert record_evaluation(db, claim, _point(1, 0.5))
    handed = claim_next_trial(db, WORKER, lease_seconds=30)
    assert release_lease(db, handed)  # queued again, WAITING in Optuna
    cancel_study(db, view.id)
    assert not record_evaluation(db, claim, _point(2, 0.4))
    assert release_lease(db, claim, keep_curve=True)  # the worker's answer to cancellation
    by_number = {t.number: t for t in _optuna_trials(db, view)}
    assert by_number[claim.number].state == TrialState.PRUNED
    assert by_number[claim.number].intermediate_values == {1: 0.5}
    assert by_number[claim.number].user_attrs["state"] == "cancelled"
    assert by_number[handed.number].state == TrialState.WAITING
    assert sync_optuna(db, older_than_s=0) == 1  # the handed-back one: cancelled, never re-run
    by_number = {t.number: t for t in _optuna_trials(db, view)}
    assert [by_number[n].state for n in sorted(by_number)] == [TrialState.PRUNED] * 2
    assert sync_optuna(db, older_than_s=0) == 0

"""Every finished trial is in the Optuna study of the same database, with the right content."""

from __future__ import annotations

import os
import time

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from studies.db import create_study, list_trials
from studies.db.optuna_bridge import sync_optuna
from studies.db.queue import (
    WorkerInfo,
    claim_next_trial,
    complete_trial,
    record_evaluation,
    requeue_expired,
)
from studies.trial import run_trial
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
        assert frozen.params == {k: trial.params[k] for k in frozen.params}
        assert frozen.value == pytest.approx(min(result.loss, result.loss0))
        assert frozen.intermediate_values == {p.step: p.val_loss for p in result.curve}
        assert frozen.user_attrs["state"] == "completed"
        assert frozen.user_attrs["worker"] == {
            "host": "bridge-host",
            "pid": os.getpid(),
            "device": "cpu",
        }
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

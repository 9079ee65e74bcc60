"""The trial queue on SQLite and PostgreSQL: claim order and atomicity, leases, completion."""

from __future__ import annotations

import math
import os
import threading
import time

import pytest
from sqlalchemy import select

from studies.db import cancel_study, create_study, get_study, list_trials
from studies.db.models import TrialRow
from studies.db.queue import (
    ClaimedTrial,
    WorkerInfo,
    claim_next_trial,
    complete_and_claim_next,
    complete_trial,
    fail_attempt,
    queue_counts,
    record_evaluation,
    release_lease,
    renew_lease,
    requeue_expired,
)
from studies.trial import EvalPoint, run_trial
from tests.db.util import make_study, migrated, noop_spec

WORKER = WorkerInfo(host="test-host", pid=os.getpid(), device="cpu")


def _trial(db, trial_id: int) -> TrialRow:  # type: ignore[no-untyped-def]
    with db.session(readonly=True) as session:
        return session.execute(select(TrialRow).where(TrialRow.id == trial_id)).scalar_one()


def _run(db, claim: ClaimedTrial):  # type: ignore[no-untyped-def]
    return run_trial(claim.config, "cpu", report=lambda p: not record_evaluation(db, claim, p))


def test_priority_then_fifo_across_studies(database_url: str) -> None:
    db = migrated(database_url)
    low = make_study(db, n_lr=1, seeds=1)  # 2 trials, priority 0
    high = create_study(db, noop_spec(n_lr=1, seeds=1, priority=5))
    later_low = make_study(db, n_lr=1, seeds=1)
    order = []
    while (claim := claim_next_trial(db, WORKER, lease_seconds=30)) is not None:
        order.append((claim.study_id, claim.number))
    assert order == [
        (high.id, 0),
        (high.id, 1),
        (low.id, 0),
        (low.id, 1),
        (later_low.id, 0),
        (later_low.id, 1),
    ]


def test_claim_is_atomic_under_concurrency(database_url: str) -> None:
    db = migrated(database_url)
    study = make_study(db, n_lr=5, seeds=4)  # 40 trials
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer() -> None:
        while (claim := claim_next_trial(db, WORKER, lease_seconds=30)) is not None:
            with lock:
                claimed.append(claim.trial_id)

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed) == len(set(claimed)) == study.n_trials
    trials = list_trials(db, study.id)
    assert all(t.state == "running" and t.attempts == 1 for t in trials)
    assert {t.worker["host"] for t in trials} == {"test-host"}


def test_complete_records_result_once(database_url: str) -> None:
    db = migrated(database_url)
    study = make_study(db, n_lr=1, seeds=1)
    claim = claim_next_trial(db, WORKER, lease_seconds=30)
    assert claim is not None
    result = _run(db, claim)
    assert result.state == "completed"
    assert complete_trial(db, claim, result)
    assert complete_trial(db, claim, result)  # a retry with the same lease is harmless
    stolen = ClaimedTrial(**{**claim.__dict__, "lease_token": "0" * 32})
    assert not complete_trial(db, stolen, result)
    row = _trial(db, claim.trial_id)
    assert row.state == "completed" and row.attempts == 1
    assert row.loss == pytest.approx(result.loss) and row.loss0 == pytest.approx(result.loss0)
    assert [p["step"] for p in row.curve] == [p.step for p in result.curve]
    assert row.worker_host == "test-host" and row.worker_pid == os.getpid()
    view = get_study(db, study.id)
    assert view.status == "running" and view.progress["completed"] == 1
    assert view.started_at is not None


def test_expired_lease_is_requeued_and_old_holder_cannot_complete(database_url: str) -> None:
    db = migrated(database_url)
    make_study(db, n_lr=1, seeds=1)
    first = claim_next_trial(db, WORKER, lease_seconds=0.2)
    result = _run(db, first)
    assert requeue_expired(db) == 0  # lease still valid
    time.sleep(0.5)
    assert requeue_expired(db) == 1
    row = _trial(db, first.trial_id)
    assert row.state == "queued" and row.attempts == 1 and "lease expired" in row.error
    # The first holder lost its lease: it can neither renew, report, nor complete.
    assert not renew_lease(db, first)
    point = EvalPoint(step=99, epoch=1.0, val_loss=1.0, train_loss=None, accuracy=None)
    assert not record_evaluation(db, first, point)
    assert not complete_trial(db, first, result)
    second = claim_next_trial(db, WORKER, lease_seconds=30)
    assert second.trial_id == first.trial_id and second.attempt == 2
    assert complete_trial(db, second, _run(db, second))
    row = _trial(db, first.trial_id)
    assert row.state == "completed" and row.attempts == 2 and row.error is None


def test_expired_leases_fail_after_max_attempts(database_url: str) -> None:
    db = migrated(database_url)
    make_study(db, n_lr=1, seeds=1)
    for attempt in (1, 2):
        claim = claim_next_trial(db, WORKER, lease_seconds=0.05)
        time.sleep(0.2)
        assert requeue_expired(db, max_attempts=2) >= 1
        assert _trial(db, claim.trial_id).state == ("queued" if attempt == 1 else "failed")
    with pytest.raises(ValueError, match="max_attempts"):
        requeue_expired(db, max_attempts=0)


def test_fail_attempt_requeues_then_fails(database_url: str) -> None:
    db = migrated(database_url)
    make_study(db, n_lr=1, seeds=1)
    claim = claim_next_trial(db, WORKER, lease_seconds=30)
    assert fail_attempt(db, claim, "RuntimeError: boom", max_attempts=2) == "queued"
    again = claim_next_trial(db, WORKER, lease_seconds=30)
    assert again.trial_id == claim.trial_id
    assert fail_attempt(db, again, "RuntimeError: boom twice", max_attempts=2) == "failed"
    row = _trial(db, claim.trial_id)
    assert row.state == "failed" and row.error == "RuntimeError: boom twice"
    assert row.finished_at is not None
    assert fail_attempt(db, again, "late", max_attempts=2) is None  # no lease any more


def test_release_does_not_count_an_attempt(database_url: str) -> None:
    db = migrated(database_url)
    make_study(db, n_lr=1, seeds=1)
    claim = claim_next_trial(db, WORKER, lease_seconds=30)
    assert release_lease(db, claim)
    row = _trial(db, claim.trial_id)
    assert row.state == "queued" and row.attempts == 0
    assert not release_lease(db, claim)


def test_cancel_stops_running_and_queued_trials(database_url: str) -> None:
    db = migrated(database_url)
    study = make_study(db, n_lr=2, seeds=2)
    running = claim_next_trial(db, WORKER, lease_seconds=30)
    point = EvalPoint(step=1, epoch=0.5, val_loss=0.5, train_loss=math.nan, accuracy=None)
    assert record_evaluation(db, running, point)
    assert _trial(db, running.trial_id).curve[0]["train_loss"] is None  # NaN stored as null
    cancel_study(db, study.id)
    assert claim_next_trial(db, WORKER, lease_seconds=30) is None
    assert not record_evaluation(db, running, point)
    assert not renew_lease(db, running)
    assert release_lease(db, running, keep_curve=True)
    row = _trial(db, running.trial_id)
    assert row.state == "cancelled" and len(row.curve) == 1
    view = get_study(db, study.id)
    assert view.status == "cancelled" and view.progress["cancelled"] == study.n_trials
    assert queue_counts(db) == {"queued": 0, "running": 0}


def test_bad_arguments_name_the_argument(database_url: str) -> None:
    db = migrated(database_url)
    make_study(db, n_lr=1, seeds=1)
    for bad in (0, -1, math.inf, "10"):
        with pytest.raises(ValueError, match="lease_seconds"):
            claim_next_trial(db, WORKER, lease_seconds=bad)  # type: ignore[arg-type]
    assert queue_counts(db) == {"queued": 2, "running": 0}


def test_complete_and_claim_next_in_one_transaction(database_url: str) -> None:
    db = migrated(database_url)
    make_study(db, n_lr=1, seeds=1)  # 2 trials
    first = claim_next_trial(db, WORKER, lease_seconds=30)
    stored, second = complete_and_claim_next(db, first, _run(db, first), WORKER, lease_seconds=30)
    assert stored and second is not None and second.trial_id != first.trial_id
    assert _trial(db, first.trial_id).state == "completed"
    assert _trial(db, second.trial_id).state == "running"
    stored, third = complete_and_claim_next(db, second, _run(db, second), WORKER)
    assert stored and third is None  # queue empty
    lost = ClaimedTrial(**{**first.__dict__, "lease_token": "f" * 32})
    assert complete_and_claim_next(db, lost, _run(db, first), WORKER) == (False, None)

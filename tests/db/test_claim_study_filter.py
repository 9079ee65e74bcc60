"""The optional study filter on a claim (`python -m workers --study ID`), on SQLite and PostgreSQL:
claim_next_trial, complete_and_claim_next, claim_next_pack and queue_counts see one study only."""

from __future__ import annotations

import os

from studies.db import cancel_study, create_study
from studies.db.packs import claim_next_pack
from studies.db.queue import (
    WorkerInfo,
    claim_next_trial,
    complete_and_claim_next,
    queue_counts,
    record_evaluation,
)
from studies.trial import run_trial
from tests.db.util import make_study, migrated, noop_spec

WORKER = WorkerInfo(host="test-host", pid=os.getpid(), device="cpu")


def test_claim_takes_only_the_given_study(database_url: str) -> None:
    db = migrated(database_url)
    first = make_study(db, n_lr=1, seeds=1)  # 2 trials
    # Higher priority: an unfiltered claim would take this study's trials first.
    second = create_study(db, noop_spec(n_lr=1, seeds=1, priority=5))
    claimed = []
    while (claim := claim_next_trial(db, WORKER, lease_seconds=30, study_id=first.id)) is not None:
        claimed.append(claim)
    assert [(c.study_id, c.number) for c in claimed] == [(first.id, 0), (first.id, 1)]
    assert queue_counts(db, study_id=first.id) == {"queued": 0, "running": 2}
    assert queue_counts(db, study_id=second.id) == {"queued": 2, "running": 0}
    assert queue_counts(db) == {"queued": 2, "running": 2}
    unfiltered = claim_next_trial(db, WORKER, lease_seconds=30)
    assert unfiltered is not None and unfiltered.study_id == second.id


def test_unknown_or_cancelled_study_claims_nothing(database_url: str) -> None:
    db = migrated(database_url)
    study = make_study(db, n_lr=1, seeds=1)
    assert claim_next_trial(db, WORKER, lease_seconds=30, study_id=study.id + 100) is None
    assert queue_counts(db, study_id=study.id + 100) == {"queued": 0, "running": 0}
    cancel_study(db, study.id)
    assert claim_next_trial(db, WORKER, lease_seconds=30, study_id=study.id) is None
    assert queue_counts(db, study_id=study.id) == {"queued": 0, "running": 0}


def test_next_claim_on_completion_stays_in_the_study(database_url: str) -> None:
    db = migrated(database_url)
    study = make_study(db, n_lr=1, seeds=1)
    other = create_study(db, noop_spec(n_lr=1, seeds=1, priority=5))
    claim = claim_next_trial(db, WORKER, lease_seconds=30, study_id=study.id)
    seen = []
    while claim is not None:
        seen.append(claim.study_id)
        result = run_trial(
            claim.config, "cpu", report=lambda p, c=claim: not record_evaluation(db, c, p)
        )
        stored, claim = complete_and_claim_next(
            db, claim, result, WORKER, lease_seconds=30, study_id=study.id
        )
        assert stored
    assert seen == [study.id, study.id]
    assert queue_counts(db, study_id=study.id) == {"queued": 0, "running": 0}
    assert queue_counts(db, study_id=other.id) == {"queued": 2, "running": 0}


def test_claim_next_pack_takes_only_the_given_study(database_url: str) -> None:
    db = migrated(database_url)
    study = make_study(db, n_lr=2, seeds=2)  # 8 trials, 4 per optimizer
    create_study(db, noop_spec(n_lr=2, seeds=2, priority=5))
    pack = claim_next_pack(db, WORKER, pack_size=8, lease_seconds=30, study_id=study.id)
    assert pack and {c.study_id for c in pack} == {study.id}
    assert claim_next_pack(db, WORKER, pack_size=8, lease_seconds=30, study_id=999) == []

"""A hand-back or a failure racing a retry on PostgreSQL decides on the study's committed flag.

The retry (like a cancel) changes the study's `cancelled` flag under the study row's lock. A
worker handing back, or failing, a trial of that study at the same moment must wait for it and
read the flag the retry commits: a trial handed back while its cancelled study is being retried
is queued again, not `cancelled` in a study that no longer is."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import select, text

from studies.db import cancel_study, create_study
from studies.db.models import TrialRow
from studies.db.queue import ClaimedTrial, WorkerInfo, claim_next_trial, fail_attempt, release_lease
from tests.db.util import migrated, noop_spec

WORKER = WorkerInfo(host="h", pid=1, device="cpu")


@pytest.mark.parametrize(
    "settle",
    [
        lambda db, claim: release_lease(db, claim),
        lambda db, claim: fail_attempt(db, claim, "boom", max_attempts=3),
    ],
    ids=["hand back", "failed attempt"],
)
def test_a_trial_settled_during_a_retry_reads_the_flag_the_retry_commits(
    postgres_url: str, settle: Callable[[object, ClaimedTrial], object]
) -> None:
    db = migrated(postgres_url)
    view = create_study(db, noop_spec(n_lr=1, seeds=1, optimizers=["adam"]))
    claim = claim_next_trial(db, WORKER)
    assert claim is not None
    cancel_study(db, view.id)  # the running trial stays running until its worker settles it

    retry = db.engine.connect()  # a retry in flight: the study row locked, the flag changed
    transaction = retry.begin()
    retry.execute(
        text("SELECT id FROM adamod_lab_studies WHERE id = :id FOR UPDATE"), {"id": view.id}
    )
    retry.execute(
        text("UPDATE adamod_lab_studies SET cancelled = false WHERE id = :id"), {"id": view.id}
    )
    done = threading.Event()
    worker = threading.Thread(target=lambda: (settle(db, claim), done.set()))
    worker.start()
    time.sleep(0.5)
    assert not done.is_set()  # it waits for the retry's lock instead of reading the old flag
    transaction.commit()
    retry.close()
    worker.join(timeout=10)
    assert done.is_set()
    with db.session(readonly=True) as session:
        state = session.execute(select(TrialRow.state).where(TrialRow.id == claim.trial_id))
        assert state.scalar_one() == "queued"

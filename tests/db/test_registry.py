"""The worker registry and the end of cancelled studies' expired leases, on both backends.

Leases really expire here (a claim with a lease of a fraction of a second, then a wait), and a
frozen worker is simulated on PostgreSQL by a second connection holding a trial's row lock.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from studies.db import cancel_study, get_study
from studies.db.queue import WorkerInfo, claim_next_trial
from studies.db.registry import (
    beat,
    end_cancelled_expired,
    live_worker_count,
    live_workers,
    mark_exited,
    prune_workers,
    register_worker,
)
from tests.db.util import make_study, migrated, row_locked
from tests.workers.procs import trial_rows, wait_for
from workers.heartbeat import Heartbeat

WORKER = WorkerInfo(host="registry-test", pid=0, device="cpu")


def test_register_beat_and_live(database_url: str) -> None:
    db = migrated(database_url)
    first = register_worker(db, host="h1", pid=11, device="cpu", pack_size=None)
    second = register_worker(db, host="h2", pid=22, device="cuda:0", pack_size=8)
    assert first.worker_id != second.worker_id
    assert beat(db, first.worker_id, [7, 3])
    views = {v.id: v for v in live_workers(db, 30)}
    assert set(views) == {first.worker_id, second.worker_id}
    assert views[first.worker_id].current_trial_ids == [3, 7]
    assert (views[second.worker_id].device, views[second.worker_id].pack_size) == ("cuda:0", 8)
    assert views[first.worker_id].last_beat_at >= views[first.worker_id].started_at
    assert beat(db, second.worker_id, [], state="stopping")
    assert {v.id: v.state for v in live_workers(db, 30)}[second.worker_id] == "stopping"
    assert live_worker_count(db, 30) == 2
    with pytest.raises(ValueError, match="worker state"):
        beat(db, first.worker_id, state="sleeping")


def test_stale_workers_are_lost_then_pruned(database_url: str) -> None:
    db = migrated(database_url)
    quiet = register_worker(db, host="h", pid=1, device="cpu")
    gone = register_worker(db, host="h", pid=2, device="cpu")
    assert mark_exited(db, gone.worker_id)
    assert not beat(db, gone.worker_id)  # an exited worker does not come back by beating
    time.sleep(0.6)
    fresh = register_worker(db, host="h", pid=3, device="cpu")
    assert [v.id for v in live_workers(db, 0.5)] == [fresh.worker_id]
    assert live_worker_count(db, 0.5) == 1
    everyone = {v.id: v.state for v in live_workers(db, 0.5, include_all=True)}
    assert everyone == {
        quiet.worker_id: "lost",
        gone.worker_id: "exited",
        fresh.worker_id: "running",
    }
    assert prune_workers(db, 0.5) == 2
    assert [v.id for v in live_workers(db, 0.5, include_all=True)] == [fresh.worker_id]
    assert not beat(db, quiet.worker_id)  # pruned: the heartbeat registers it again
    with pytest.raises(ValueError, match="stale_after_s"):
        live_workers(db, 0)


def _expired_claims(db: Any, n: int) -> list[Any]:
    claims = [claim_next_trial(db, WORKER, lease_seconds=0.3) for _ in range(n)]
    assert all(c is not None for c in claims)
    time.sleep(0.8)
    return claims


def test_end_cancelled_expired_ends_only_cancelled_studies(database_url: str) -> None:
    db = migrated(database_url)
    cancelled = make_study(db, n_lr=1, seeds=1)  # 2 trials
    kept = make_study(db, n_lr=1, seeds=1)
    claims = _expired_claims(db, 3)  # both of `cancelled`, then one of `kept`
    assert {c.study_id for c in claims[:2]} == {cancelled.id}
    assert claims[2].study_id == kept.id
    assert cancel_study(db, cancelled.id).progress["running"] == 2
    assert end_cancelled_expired(db) == 2
    rows = trial_rows(db, cancelled.id)
    assert {r.state for r in rows} == {"cancelled"}
    assert all(r.lease_expires_at is None and r.finished_at is not None for r in rows)
    assert all(r.attempts == 1 and "cancelled" in (r.error or "") for r in rows)
    after = get_study(db, cancelled.id)
    assert after.status == "cancelled" and after.progress["running"] == 0
    assert after.finished_at is not None
    # The other study's expired lease is requeue_expired's business, not this sweep's.
    other = {r.id: r.state for r in trial_rows(db, kept.id)}
    assert other[claims[2].trial_id] == "running"
    assert end_cancelled_expired(db) == 0


def test_end_cancelled_expired_leaves_live_leases(database_url: str) -> None:
    db = migrated(database_url)
    study = make_study(db, n_lr=1, seeds=1)
    claim = claim_next_trial(db, WORKER, lease_seconds=60)
    assert claim is not None
    cancel_study(db, study.id)
    assert end_cancelled_expired(db) == 0  # its worker stops it at its next evaluation
    states = {r.id: r.state for r in trial_rows(db, study.id)}
    assert states[claim.trial_id] == "running"


def test_end_cancelled_expired_skips_locked_rows(postgres_url: str) -> None:
    db = migrated(postgres_url)
    study = make_study(db, n_lr=1, seeds=1)
    first, second = _expired_claims(db, 2)
    cancel_study(db, study.id)
    with row_locked(postgres_url, first.trial_id):
        started = time.monotonic()
        assert end_cancelled_expired(db) == 1  # without SKIP LOCKED: waits for the lock
        assert time.monotonic() - started < 2.0
        states = {r.id: r.state for r in trial_rows(db, study.id)}
        assert states == {first.trial_id: "running", second.trial_id: "cancelled"}
    assert end_cancelled_expired(db) == 1  # ended next time, once the lock is gone
    assert get_study(db, study.id).progress["running"] == 0


def test_heartbeat_beats_the_registry_and_ends_cancelled_leases(database_url: str) -> None:
    db = migrated(database_url)
    identity = register_worker(db, host="hb", pid=5, device="cpu")
    study = make_study(db, n_lr=1, seeds=1)
    held = claim_next_trial(db, WORKER, lease_seconds=30)
    orphan = claim_next_trial(db, WORKER, lease_seconds=0.3)  # its worker "died"
    assert held is not None and orphan is not None
    stopping = threading.Event()

    def view() -> Any:
        return next(v for v in live_workers(db, 30) if v.id == identity.worker_id)

    with Heartbeat(
        db, interval_s=0.2, registration=identity, stopping=stopping, cancel_sweep_s=0.2
    ) as heartbeat:
        heartbeat.track(held)
        wait_for(lambda: view().current_trial_ids == [held.trial_id], 10, "the held trial")
        stopping.set()
        wait_for(lambda: view().state == "stopping", 10, "state stopping")
        cancel_study(db, study.id)
        wait_for(
            lambda: (
                {r.id: r.state for r in trial_rows(db, study.id)}[orphan.trial_id] == "cancelled"
            ),
            10,
            "the orphan's expired lease ended",
        )
        heartbeat.track(None)
        wait_for(lambda: view().current_trial_ids == [], 10, "idle beats")
        prune_workers(db, 0.001)  # pruned while "frozen": the next beat registers it again
        wait_for(lambda: live_worker_count(db, 30) == 1, 10, "registered again")
    # Without a registration the heartbeat only renews leases, as before.
    with Heartbeat(db, interval_s=0.2) as plain:
        plain.track(held)
        time.sleep(0.5)

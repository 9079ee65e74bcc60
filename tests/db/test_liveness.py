"""Liveness of the queue: session timeouts, a sweep that skips locked rows, cancelled studies end.

A process frozen inside a transaction (SIGSTOP, a hung thread) is simulated by a separate
connection that locks a trial's row and idles in its transaction: to every other session the two
look the same.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update

from service.processes import spawn, worker_command
from studies.db import Database, cancel_study, create_study, get_study
from studies.db.engine import postgres_session_options
from studies.db.models import TrialRow
from studies.db.queue import WorkerInfo, claim_next_trial, requeue_expired
from tests.db.util import make_study, migrated, noop_spec, row_locked
from tests.workers.procs import trial_rows, wait_for
from workers.retry import is_transient, with_retries

WORKER = WorkerInfo(host="liveness-test", pid=0, device="cpu")
ROOT = Path(__file__).resolve().parents[2]


class Workers:
    """Real `python -m workers` processes run from the project root, each logging to a file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, url: str, *args: str) -> subprocess.Popen[bytes]:
        """Starts one CPU worker on `url` with a short lease (fast sweeps) and `args`."""
        log = open(self.directory / f"worker-{len(self.processes)}.log", "wb")  # noqa: SIM115
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",
            "CUDA_VISIBLE_DEVICES": "",
        }
        command = worker_command(
            url, "cpu", "--lease-seconds", "2", "--poll-interval", "0.2", *args
        )
        process = spawn(command, env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()  # the child has its own copy
        self.processes.append(process)
        return process

    def logs(self) -> str:
        """The end of every worker's log, for failure messages."""
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.directory.glob("worker-*.log"))
        )

    def kill_all(self) -> None:
        """Kills whatever is still running (test cleanup)."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def _expire(db: Database, trial_id: int) -> None:
    with db.session() as session:
        session.execute(
            update(TrialRow)
            .where(TrialRow.id == trial_id)
            .values(lease_expires_at=text("now() - interval '1 minute'"))
        )


def _settings(db: Database) -> dict[str, str]:
    with db.engine.connect() as connection:
        return {
            name: connection.execute(text(f"SHOW {name}")).scalar_one()
            for name in ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout")
        }


# -- session timeouts ---------------------------------------------------------------------------


def test_every_postgres_connection_has_session_timeouts(postgres_url: str) -> None:
    db = migrated(postgres_url)  # migrate lifts the limits for itself, then puts them back
    assert _settings(db) == {
        "lock_timeout": "5s",
        "statement_timeout": "1min",
        "idle_in_transaction_session_timeout": "1min",
    }
    with db.session() as session:  # pooled connections too, after migrate's RESET
        assert session.execute(text("SHOW lock_timeout")).scalar_one() == "5s"
    db.dispose()
    custom = Database(
        postgres_url, lock_timeout_s=0.25, statement_timeout_s=None, idle_in_transaction_timeout_s=0
    )
    assert _settings(custom) == {
        "lock_timeout": "250ms",
        "statement_timeout": "0",
        "idle_in_transaction_session_timeout": "0",
    }
    custom.dispose()


@pytest.mark.parametrize("bad", [-1.0, "5", True, float("nan")])
def test_invalid_timeouts_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="lock_timeout_s"):
        postgres_session_options(bad, 1.0, 1.0)


def test_sqlite_ignores_the_postgres_timeouts(sqlite_url: str) -> None:
    db = migrated(sqlite_url)
    make_study(db, n_lr=1, seeds=1)
    assert claim_next_trial(db, WORKER, lease_seconds=30) is not None


def test_a_lock_timeout_is_transient_and_retried(postgres_url: str) -> None:
    db = migrated(postgres_url)
    make_study(db, n_lr=1, seeds=1)
    fast = Database(postgres_url, lock_timeout_s=0.2)
    claim = claim_next_trial(fast, WORKER, lease_seconds=30)
    assert claim is not None

    def touch() -> None:
        with fast.session() as session:
            session.execute(
                update(TrialRow).where(TrialRow.id == claim.trial_id).values(worker_pid=4242)
            )

    with row_locked(postgres_url, claim.trial_id) as holder:
        with pytest.raises(Exception) as caught:
            touch()
        assert is_transient(caught.value), caught.value
        assert "lock timeout" in str(caught.value)
        # The holder lets go while with_retries backs off: the call then goes through.
        threading.Timer(1.0, holder.rollback).start()
        started = time.monotonic()
        with_retries(touch, what="touch", give_up_after_s=20, first_delay_s=0.2)
        assert time.monotonic() - started < 10
    touched = next(t for t in trial_rows(db, claim.study_id) if t.id == claim.trial_id)
    assert touched.worker_pid == 4242
    fast.dispose()


# -- the sweep skips locked rows ----------------------------------------------------------------


def test_sweep_skips_rows_locked_by_a_frozen_transaction(postgres_url: str) -> None:
    db = migrated(postgres_url)
    study = make_study(db, n_lr=1, seeds=1)
    first = claim_next_trial(db, WORKER, lease_seconds=30)
    second = claim_next_trial(db, WORKER, lease_seconds=30)
    assert first is not None and second is not None
    _expire(db, first.trial_id)
    _expire(db, second.trial_id)
    with row_locked(postgres_url, first.trial_id):
        started = time.monotonic()
        assert requeue_expired(db) == 1  # the unlocked one; without SKIP LOCKED: a 5 s wait
        assert time.monotonic() - started < 2.0
        states = {t.id: t.state for t in trial_rows(db, study.id)}
        assert states == {first.trial_id: "running", second.trial_id: "queued"}
    assert requeue_expired(db) == 1  # swept next time, once the lock is gone
    assert {t.state for t in trial_rows(db, study.id)} == {"queued"}


def test_workers_keep_going_while_a_frozen_transaction_holds_a_running_trial(
    postgres_url: str, tmp_path: Path
) -> None:
    db = migrated(postgres_url)
    study = make_study(db, n_lr=2, seeds=2)  # 8 trials
    frozen = claim_next_trial(db, WORKER, lease_seconds=1)
    assert frozen is not None
    workers = Workers(tmp_path)
    try:
        with row_locked(postgres_url, frozen.trial_id):
            time.sleep(1.2)  # its lease has expired, but nobody can touch the row
            for _ in range(2):
                workers.start(postgres_url, "--pack-size", "1")

            def others_done() -> bool:
                assert all(p.poll() is None for p in workers.processes), workers.logs()
                rows = trial_rows(db, study.id)
                return all(t.state == "completed" for t in rows if t.id != frozen.trial_id)

            wait_for(others_done, 120, "the other workers to complete every other trial")
            assert next(t for t in trial_rows(db, study.id) if t.id == frozen.trial_id).state == (
                "running"
            )
            started = time.monotonic()
            requeue_expired(db)
            assert time.monotonic() - started < 2.0
        # The freeze ends: a live worker's sweep requeues the trial and a worker completes it.
        wait_for(
            lambda: all(t.state == "completed" for t in trial_rows(db, study.id)),
            60,
            "the frozen trial to be swept and completed",
        )
        rows = trial_rows(db, study.id)
        assert next(t for t in rows if t.id == frozen.trial_id).attempts == 2
        for process in workers.processes:
            process.send_signal(signal.SIGTERM)
        assert [process.wait(timeout=60) for process in workers.processes] == [0, 0]
    except BaseException:
        print(workers.logs())
        raise
    finally:
        workers.kill_all()


# -- a cancelled study always finishes ----------------------------------------------------------


def test_cancel_and_sigkill_leaves_no_trial_running(database_url: str, tmp_path: Path) -> None:
    db = migrated(database_url)
    slow = noop_spec(
        n_lr=1,
        seeds=1,
        optimizers=["adam"],
        workload_config={"steps_per_epoch": 2000, "sleep_s": 0.05, "eval_every": 1},
        budget={"steps": 2000},
    )
    study = create_study(db, slow)
    workers = Workers(tmp_path)
    try:
        doomed = workers.start(database_url)
        wait_for(
            lambda: [t for t in trial_rows(db, study.id) if t.state == "running"],
            60,
            "the worker to start the trial",
        )
        survivor = workers.start(database_url)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
        cancel_study(db, study.id)
        wait_for(
            lambda: not [t for t in trial_rows(db, study.id) if t.state in ("running", "queued")],
            60,
            "the live worker's sweep to end the dead worker's lease",
        )
        assert [t.state for t in trial_rows(db, study.id)] == ["cancelled"]
        view = get_study(db, study.id)
        assert view is not None and view.status == "cancelled"
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=60) == 0
    except BaseException:
        print(workers.logs())
        raise
    finally:
        workers.kill_all()


def test_lock_deadlock_and_serialization_errors_count_as_transient() -> None:
    from sqlalchemy.exc import DBAPIError, ProgrammingError

    class _Orig(Exception):
        def __init__(self, sqlstate: str) -> None:
            super().__init__(sqlstate)
            self.sqlstate = sqlstate

    for state in ("55P03", "40P01", "40001"):
        assert is_transient(DBAPIError("UPDATE ...", {}, _Orig(state)))
    assert not is_transient(ProgrammingError("SELECT ...", {}, _Orig("42601")))  # a syntax error

"""workers.wakeup: an idle worker on a SQLite file claims as soon as the file is written to,
not a poll interval later; other databases keep the plain poll."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from studies.db import create_study
from tests.db.util import migrated, noop_spec
from tests.workers.procs import WorkerProcesses, trial_rows, wait_for
from workers.wakeup import IdleWait, sqlite_file


def test_sqlite_file_of_each_kind_of_url(tmp_path: Path) -> None:
    assert sqlite_file(f"sqlite:///{tmp_path}/a.db") == tmp_path / "a.db"
    assert sqlite_file("sqlite:///relative.db") == Path("relative.db")
    assert sqlite_file("sqlite://") is None  # in memory
    assert sqlite_file("sqlite:///:memory:") is None
    assert sqlite_file("postgresql+psycopg://postgres@127.0.0.1:5432/test") is None
    assert sqlite_file("not a url") is None


def _wait_in_thread(wait: IdleWait, timeout: float) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run() -> None:
        started = time.monotonic()
        woke = wait.wait(timeout)
        outcome.extend([woke, time.monotonic() - started])

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_a_commit_to_the_sqlite_file_ends_the_wait(sqlite_url: str) -> None:
    migrated(sqlite_url)
    engine = create_engine(sqlite_url)
    with engine.begin() as connection:
        connection.execute(text("PRAGMA journal_mode=WAL"))
    wait = IdleWait(sqlite_url, threading.Event())
    thread, outcome = _wait_in_thread(wait, timeout=60.0)
    time.sleep(0.3)
    assert outcome == []  # still waiting: nothing was written
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE poke (x INTEGER)"))
        connection.execute(text("INSERT INTO poke VALUES (1)"))
    thread.join(timeout=20)
    engine.dispose()
    woke, waited = outcome
    assert woke is True
    assert waited < 30  # woken by the write, not by the 60-s timeout


def test_without_a_write_the_wait_lasts_its_timeout(sqlite_url: str) -> None:
    migrated(sqlite_url)
    started = time.monotonic()
    assert IdleWait(sqlite_url, threading.Event()).wait(0.3) is False
    assert time.monotonic() - started >= 0.3


def test_stop_ends_the_wait_on_any_database(sqlite_url: str) -> None:
    for url in (sqlite_url, "postgresql+psycopg://postgres@127.0.0.1:5432/test"):
        stop = threading.Event()
        thread, outcome = _wait_in_thread(IdleWait(url, stop), timeout=60.0)
        stop.set()
        thread.join(timeout=20)
        assert outcome[0] is True


@pytest.mark.timeout(120)
def test_an_idle_worker_claims_a_new_study_long_before_its_poll_interval(
    sqlite_url: str, worker_processes: WorkerProcesses
) -> None:
    """--poll-interval 60: the worker has found the queue empty and waits; a study submitted
    then is claimed (and, being no-op trials, finished) within seconds."""
    db = migrated(sqlite_url)
    process = worker_processes.start(sqlite_url, "--poll-interval", "60", "--pack-size", "1")
    wait_for(
        lambda: "on cpu" in worker_processes.log(process), timeout=60, what="the worker's start"
    )
    time.sleep(3.0)  # its first claim found nothing: it is in its idle wait now
    view = create_study(db, noop_spec(n_lr=1, seeds=1))
    submitted = time.monotonic()
    wait_for(
        lambda: all(r.state == "completed" for r in trial_rows(db, view.id)),
        timeout=40,
        what="the trial to be claimed and completed",
    )
    assert time.monotonic() - submitted < 40 < 60
    assert process.poll() is None, worker_processes.log(process)

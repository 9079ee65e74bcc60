"""Trial isolation: training runs in the worker's trainer child, which the worker kills and
replaces on a timeout, on a cancel its trial never answers, and after a crash. Real worker
processes on both backends; the faults come from the noop workload's hang_at_step and
crash_at_step, or a SIGKILL from outside."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from studies.db import cancel_study, create_study, get_study
from studies.reuse import reuse_key
from studies.spec import StudySpec, expand_grid
from tests.db.util import migrated, noop_spec
from tests.e2e.procfs import alive, children
from tests.workers.procs import WorkerProcesses, trial_rows, wait_for
from workers.__main__ import main as worker_main

ONE_TRIAL = {"n_lr": 1, "seeds": 1, "optimizers": ["adam"]}


def _trainer_of(worker_pid: int) -> int:
    """The pid of a worker's trainer child, once it has one (multiprocessing's resource
    tracker is a child too: the trainer is the one spawn_main runs)."""

    def trainers() -> list[int]:
        found = []
        for pid in children(worker_pid):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in command:
                found.append(pid)
        return found

    found = wait_for(trainers, timeout=30, what="the trainer child")
    assert isinstance(found, list) and len(found) == 1, found
    return found[0]


def test_a_hung_trial_times_out_and_the_worker_takes_the_next(
    database_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(database_url)
    hung = create_study(
        db,
        noop_spec(
            **ONE_TRIAL,
            workload_config={"steps_per_epoch": 5, "eval_every": 1, "hang_at_step": 3},
            budget={"steps": 5, "max_seconds": 2.0},
        ),
    )
    after = create_study(db, noop_spec(**ONE_TRIAL))
    started = time.monotonic()
    process = worker_processes.start(
        database_url, "--exit-when-idle", "--poll-interval", "0.2", "--max-attempts", "3"
    )
    assert process.wait(timeout=90) == 0, worker_processes.log(process)
    (timed_out,) = trial_rows(db, hung.id)
    assert timed_out.state == "failed", worker_processes.log(process)
    assert timed_out.attempts == 1  # not retried, though three attempts were allowed
    assert "timed out after" in timed_out.error and "budget.max_seconds" in timed_out.error
    assert get_study(db, hung.id).status == "failed"
    (next_trial,) = trial_rows(db, after.id)
    assert next_trial.state == "completed"  # the replacement trainer trained it
    assert time.monotonic() - started < 60


def test_trial_timeout_flag_and_its_validation(
    sqlite_url: str, worker_processes: WorkerProcesses, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad in ("0", "-1", "nan", "inf"):
        with pytest.raises(SystemExit) as exited:
            worker_main(["--database-url", sqlite_url, "--trial-timeout", bad])
        assert exited.value.code == 2 and "--trial-timeout" in capsys.readouterr().err
    db = migrated(sqlite_url)
    view = create_study(
        db,
        noop_spec(
            **ONE_TRIAL,
            workload_config={"steps_per_epoch": 4, "hang_at_step": 1},
            budget={"steps": 4, "max_seconds": 3600.0},  # the smaller limit holds
        ),
    )
    process = worker_processes.start(
        sqlite_url, "--exit-when-idle", "--poll-interval", "0.2", "--trial-timeout", "1.5"
    )
    assert process.wait(timeout=60) == 0, worker_processes.log(process)
    (row,) = trial_rows(db, view.id)
    assert row.state == "failed" and row.attempts == 1
    assert "limit 1.5 s: --trial-timeout" in row.error


def test_a_cancelled_hung_trial_stops_within_a_heartbeat(
    database_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(database_url)
    view = create_study(
        db,
        noop_spec(
            **ONE_TRIAL,
            workload_config={"steps_per_epoch": 10, "eval_every": 1, "hang_at_step": 3},
        ),
    )
    process = worker_processes.start(
        database_url, "--exit-when-idle", "--poll-interval", "0.2", "--lease-seconds", "3"
    )
    wait_for(
        lambda: (rows := trial_rows(db, view.id))[0].state == "running" and rows[0].curve,
        timeout=60,
        what="the trial to start reporting",
    )
    trainer = _trainer_of(process.pid)
    cancelled_at = time.monotonic()
    cancel_study(db, view.id)
    # The heartbeat beats every 1 s (lease / 3); one beat to notice, LOST_GRACE_S to kill.
    wait_for(lambda: not alive(trainer), timeout=10, what="the hung trainer to be killed")
    assert time.monotonic() - cancelled_at < 5
    assert process.wait(timeout=30) == 0, worker_processes.log(process)
    (row,) = trial_rows(db, view.id)
    assert row.state == "cancelled" and row.curve  # its curve so far is kept
    assert get_study(db, view.id).status == "cancelled"


def test_a_crashing_trainer_costs_an_attempt_with_its_cause(
    database_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(database_url)
    crashing = create_study(
        db,
        noop_spec(**ONE_TRIAL, workload_config={"steps_per_epoch": 4, "crash_at_step": 2}),
    )
    after = create_study(db, noop_spec(**ONE_TRIAL))
    process = worker_processes.start(
        database_url, "--exit-when-idle", "--poll-interval", "0.2", "--max-attempts", "2"
    )
    assert process.wait(timeout=120) == 0, worker_processes.log(process)
    (row,) = trial_rows(db, crashing.id)
    assert row.state == "failed" and row.attempts == 2  # each crash was one attempt
    assert "TrainerDied: trainer process killed by SIGSEGV" in row.error
    (next_trial,) = trial_rows(db, after.id)
    assert next_trial.state == "completed"  # the worker outlived its trainers


def test_a_trainer_killed_from_outside_is_replaced_and_its_trial_rerun(
    sqlite_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(sqlite_url)
    view = create_study(
        db,
        noop_spec(
            **ONE_TRIAL,
            workload_config={"steps_per_epoch": 30, "sleep_s": 0.1, "eval_every": 1},
        ),
    )
    process = worker_processes.start(sqlite_url, "--exit-when-idle", "--poll-interval", "0.2")
    wait_for(
        lambda: (rows := trial_rows(db, view.id))[0].state == "running" and rows[0].curve,
        timeout=60,
        what="the trial to start reporting",
    )
    first = _trainer_of(process.pid)
    os.kill(first, signal.SIGKILL)  # as the kernel's OOM killer would
    assert process.wait(timeout=90) == 0, worker_processes.log(process)
    (row,) = trial_rows(db, view.id)
    assert row.state == "completed" and row.attempts == 2  # the kill was one attempt
    assert len(row.curve) == 30  # the rerun trained it whole
    log = worker_processes.log(process)
    assert "trainer process killed by SIGKILL" in log and "trainer restarted" in log


def test_a_sigkilled_worker_leaves_no_trainer_behind(
    sqlite_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(sqlite_url)
    create_study(
        db,
        noop_spec(**ONE_TRIAL, workload_config={"steps_per_epoch": 4, "hang_at_step": 1}),
    )
    process = worker_processes.start(sqlite_url, "--poll-interval", "0.2")
    trainer = _trainer_of(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    wait_for(lambda: not alive(trainer), timeout=10, what="the orphaned trainer to die")


def test_sigterm_to_the_process_group_hands_the_trial_back(
    sqlite_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(sqlite_url)
    view = create_study(
        db,
        noop_spec(
            **ONE_TRIAL,
            workload_config={"steps_per_epoch": 300, "sleep_s": 0.1, "eval_every": 1},
        ),
    )
    process = worker_processes.start(sqlite_url, "--lease-seconds", "30")
    wait_for(
        lambda: (rows := trial_rows(db, view.id))[0].state == "running" and rows[0].curve,
        timeout=60,
        what="the trial to start reporting",
    )
    trainer = _trainer_of(process.pid)
    os.kill(trainer, signal.SIGTERM)  # a group-wide SIGTERM reaches the trainer too...
    process.send_signal(signal.SIGTERM)  # ...and the worker
    assert process.wait(timeout=20) == 0, worker_processes.log(process)
    (row,) = trial_rows(db, view.id)
    assert row.state == "queued" and row.attempts == 0  # a stop, not a crash: no attempt


def test_budget_max_seconds_is_a_strict_positive_number_outside_the_reuse_key() -> None:
    base = noop_spec(**ONE_TRIAL).model_dump(mode="json")
    for bad in (True, "3", 0, -1.0, float("inf"), 1e12):
        data = {**base, "budget": {"steps": 2, "max_seconds": bad}}
        with pytest.raises(ValidationError) as raised:
            StudySpec.model_validate(data)
        assert "max_seconds" in str(raised.value), bad
    limited = StudySpec.model_validate({**base, "budget": {"steps": 2, "max_seconds": 5}})
    unlimited = StudySpec.model_validate({**base, "budget": {"steps": 2}})
    (a,), (b,) = expand_grid(limited), expand_grid(unlimited)
    assert a.budget.max_seconds == 5.0 and a.key() != b.key()
    assert reuse_key(a, device="cpu") == reuse_key(b, device="cpu")

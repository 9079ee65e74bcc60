"""One real worker process: runs a study, records who it is, retries failures, stops cleanly."""

from __future__ import annotations

import signal
import socket

import optuna
import pytest
from optuna.trial import TrialState

from studies.db import cancel_study, create_study, get_study
from tests.db.util import migrated, noop_spec
from tests.workers.procs import WorkerProcesses, trial_rows, wait_for
from workers.__main__ import main as worker_main


def test_worker_runs_a_study_to_completion(
    database_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(database_url)
    view = create_study(db, noop_spec(n_lr=2, seeds=2))
    process = worker_processes.start(database_url, "--exit-when-idle", "--poll-interval", "0.2")
    assert process.wait(timeout=120) == 0, worker_processes.log(process)
    # what benchmarks/packs.py waits on before it submits a study
    assert "trainer ready (imports and warm-up: " in worker_processes.log(process)
    rows = trial_rows(db, view.id)
    assert [r.state for r in rows] == ["completed"] * view.n_trials
    assert all(r.attempts == 1 for r in rows)
    assert {(r.worker_host, r.worker_pid, r.worker_device) for r in rows} == {
        (socket.gethostname(), process.pid, "cpu")
    }
    assert all(r.optuna_trial_id is not None for r in rows)  # marked after the Optuna write
    assert get_study(db, view.id).status == "completed"
    trials = optuna.load_study(study_name=view.optuna_study_name, storage=db.url).trials
    assert sorted(t.user_attrs["adamod_lab_trial_id"] for t in trials) == [r.id for r in rows]


def test_failing_trial_is_retried_then_failed(
    sqlite_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(sqlite_url)
    spec = noop_spec(
        n_lr=1,
        seeds=1,
        optimizers=["adam"],
        workload_config={"steps_per_epoch": 3, "fail_at_step": 2},
    )
    view = create_study(db, spec)
    process = worker_processes.start(
        sqlite_url, "--exit-when-idle", "--max-attempts", "2", "--poll-interval", "0.2"
    )
    assert process.wait(timeout=120) == 0, worker_processes.log(process)
    (row,) = trial_rows(db, view.id)
    assert row.state == "failed" and row.attempts == 2
    assert "RuntimeError: noop workload: failing on purpose at step 2" in row.error
    assert get_study(db, view.id).status == "failed"
    (trial,) = optuna.load_study(study_name=view.optuna_study_name, storage=db.url).trials
    assert trial.state == TrialState.FAIL and "failing on purpose" in trial.user_attrs["error"]


def test_sigterm_hands_the_trial_back(sqlite_url: str, worker_processes: WorkerProcesses) -> None:
    db = migrated(sqlite_url)
    spec = noop_spec(
        n_lr=1,
        seeds=1,
        optimizers=["adam"],
        workload_config={"steps_per_epoch": 300, "sleep_s": 0.1, "eval_every": 1},
    )
    view = create_study(db, spec)
    process = worker_processes.start(sqlite_url, "--lease-seconds", "30")
    wait_for(
        lambda: (rows := trial_rows(db, view.id))[0].state == "running" and rows[0].curve,
        timeout=60,
        what="the trial to start reporting",
    )
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0, worker_processes.log(process)
    (row,) = trial_rows(db, view.id)
    assert row.state == "queued" and row.attempts == 0  # handed back, no attempt counted
    assert "handed back: True" in worker_processes.log(process)


def test_bad_arguments_exit_2_naming_the_flag(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'x.db'}"
    for args, flag in (
        (["--device", "tpu"], "--device"),
        (["--lease-seconds", "0"], "--lease-seconds"),
        (["--max-trials", "0"], "--max-trials"),
        (["--poll-interval", "nan"], "--poll-interval"),
        (["--database-url", "mysql://x/y"], "database url"),
    ):
        with pytest.raises(SystemExit) as exited:
            worker_main(["--database-url", url, *args])
        assert exited.value.code == 2, args
        assert flag in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()  # nothing was created


def test_cancel_stops_the_running_trial(sqlite_url: str, worker_processes: WorkerProcesses) -> None:
    db = migrated(sqlite_url)
    spec = noop_spec(
        n_lr=1,
        seeds=1,
        optimizers=["adam"],
        workload_config={"steps_per_epoch": 600, "sleep_s": 0.05, "eval_every": 2},
    )
    view = create_study(db, spec)  # one 30-second trial
    process = worker_processes.start(sqlite_url, "--exit-when-idle", "--poll-interval", "0.2")
    wait_for(
        lambda: (rows := trial_rows(db, view.id))[0].state == "running" and rows[0].curve,
        timeout=60,
        what="the trial to start reporting",
    )
    cancel_study(db, view.id)
    assert process.wait(timeout=20) == 0, worker_processes.log(process)  # long before 30 s
    (row,) = trial_rows(db, view.id)
    assert row.state == "cancelled" and 0 < len(row.curve) < 300  # stopped part-way, curve kept
    assert get_study(db, view.id).status == "cancelled"


def test_running_trial_reports_to_optuna_live(
    database_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(database_url)
    spec = noop_spec(
        n_lr=1,
        seeds=1,
        optimizers=["adam"],
        workload_config={"steps_per_epoch": 16, "sleep_s": 0.15, "eval_every": 1},
    )
    view = create_study(db, spec)  # one trial of about 2.4 s, 16 evaluations

    def live() -> optuna.trial.FrozenTrial | None:
        trials = optuna.load_study(study_name=view.optuna_study_name, storage=db.url).trials
        running = [t for t in trials if t.state == TrialState.RUNNING]
        return running[0] if running and len(running[0].intermediate_values) >= 3 else None

    process = worker_processes.start(
        database_url, "--exit-when-idle", "--poll-interval", "0.2", "--report-interval", "0"
    )
    seen = wait_for(live, timeout=60, what="intermediate values of the running trial in Optuna")
    assert trial_rows(db, view.id)[0].state == "running"  # seen before it finished
    assert process.wait(timeout=60) == 0, worker_processes.log(process)
    (row,) = trial_rows(db, view.id)
    (done,) = optuna.load_study(study_name=view.optuna_study_name, storage=db.url).trials
    assert row.state == "completed" and done.state == TrialState.COMPLETE
    assert done._trial_id == seen._trial_id == row.optuna_trial_id and done.number == 0
    assert len(row.curve) == 16
    assert done.intermediate_values == {p["step"]: p["val_loss"] for p in row.curve}
    assert seen.intermediate_values.items() <= done.intermediate_values.items()

"""Many workers on PostgreSQL: exactly-once execution, killed workers, cancellation, lost
connections. Real processes, a throw-away database per test."""

from __future__ import annotations

import signal
import time

import optuna
import psycopg
from optuna.trial import TrialState

from studies.db import cancel_study, create_study, get_study
from studies.spec import StudySpec
from tests.db.util import migrated, noop_spec
from tests.workers.procs import WorkerProcesses, trial_rows, wait_for


def _optuna_trial_ids(db, view) -> list[int]:  # type: ignore[no-untyped-def]
    trials = optuna.load_study(study_name=view.optuna_study_name, storage=db.url).trials
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in trials)
    return sorted(t.user_attrs["adamod_lab_trial_id"] for t in trials)


def test_eight_workers_run_each_trial_exactly_once(
    postgres_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(postgres_url)
    spec = StudySpec.model_validate(
        {
            "name": "300 quadratic trials",
            "workload": "quadratic",
            "workload_config": {"dim": 4, "steps_per_epoch": 4, "eval_every": 2},
            "optimizers": ["adam", "adamod"],
            "lr": {"min": 1e-3, "max": 1.0, "points": 15},
            "seeds": 10,
            "budget": {"steps": 4},
        }
    )
    view = create_study(db, spec)
    assert view.n_trials == 300
    for _ in range(8):
        worker_processes.start(postgres_url, "--exit-when-idle", "--poll-interval", "0.2")
    codes = worker_processes.wait_all(timeout=180)
    assert codes == [0] * 8, [worker_processes.log(p) for p in worker_processes.processes]
    rows = trial_rows(db, view.id)
    assert [r.state for r in rows] == ["completed"] * 300
    assert [r.attempts for r in rows] == [1] * 300  # nobody ran a trial twice
    assert len({r.worker_pid for r in rows}) > 1  # the work was shared
    assert _optuna_trial_ids(db, view) == [r.id for r in rows]  # each in Optuna exactly once


def test_killed_worker_trial_runs_again_elsewhere(
    postgres_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(postgres_url)
    slow = {"steps_per_epoch": 8, "sleep_s": 0.15, "eval_every": 1}  # about 1.2 s per trial
    view = create_study(db, noop_spec(n_lr=2, seeds=2, workload_config=slow))
    # One trial at a time: the test follows one killed trial (a pack would requeue several).
    args = ("--exit-when-idle", "--lease-seconds", "2", "--poll-interval", "0.2")
    args += ("--pack-size", "1")
    victim = worker_processes.start(postgres_url, *args)
    running = wait_for(
        lambda: [r for r in trial_rows(db, view.id) if r.state == "running" and r.curve],
        timeout=60,
        what="the first worker to be mid-trial",
    )
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    killed_trial = running[0].id
    live_optuna_id = running[0].optuna_trial_id  # created RUNNING by the claim
    assert live_optuna_id is not None
    survivor = worker_processes.start(postgres_url, *args)
    assert survivor.wait(timeout=120) == 0, worker_processes.log(survivor)
    rows = {r.id: r for r in trial_rows(db, view.id)}
    assert all(r.state == "completed" for r in rows.values())
    again = rows[killed_trial]
    assert again.attempts == 2 and again.worker_pid == survivor.pid
    assert "requeued 1 trial" in worker_processes.log(survivor)
    assert get_study(db, view.id).status == "completed"
    assert _optuna_trial_ids(db, view) == sorted(rows)
    # The re-run reused the killed attempt's Optuna trial: one per grid point, the re-run's curve.
    trials = optuna.load_study(study_name=view.optuna_study_name, storage=db.url).trials
    assert sorted(t.number for t in trials) == sorted(r.number for r in rows.values())
    (rerun,) = [t for t in trials if t.user_attrs["adamod_lab_trial_id"] == killed_trial]
    assert rerun._trial_id == live_optuna_id == again.optuna_trial_id
    assert rerun.number == again.number and rerun.user_attrs["attempts"] == 2
    assert rerun.intermediate_values == {p["step"]: p["val_loss"] for p in again.curve}


def test_cancel_mid_study_starts_no_queued_trial(
    postgres_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(postgres_url)
    slow = {"steps_per_epoch": 4, "sleep_s": 0.1, "eval_every": 1}
    view = create_study(db, noop_spec(n_lr=5, seeds=3, workload_config=slow))  # 30 trials
    # One trial at a time: a pack would start every trial before the cancel.
    for _ in range(2):
        worker_processes.start(
            postgres_url, "--exit-when-idle", "--poll-interval", "0.2", "--pack-size", "1"
        )
    wait_for(
        lambda: sum(r.state == "completed" for r in trial_rows(db, view.id)) >= 3,
        timeout=90,
        what="a few trials to complete",
    )
    cancelled = cancel_study(db, view.id)
    assert cancelled.status == "cancelled"
    assert worker_processes.wait_all(timeout=60) == [0, 0]
    rows = trial_rows(db, view.id)
    with db.session(readonly=True) as session:
        from studies.db.models import StudyRow

        cancelled_at = session.get(StudyRow, view.id).cancelled_at
    started_after = [r.id for r in rows if r.claimed_at is not None and r.claimed_at > cancelled_at]
    assert started_after == []
    assert {r.state for r in rows} <= {"completed", "cancelled"}
    # Trials that had not started when the study was cancelled never run. (How many completed
    # before the cancel depends on the machine's speed, so it is not pinned.)
    never_started = [r for r in rows if r.claimed_at is None]
    assert never_started, "the study finished before it was cancelled: nothing was tested"
    assert all(r.state == "cancelled" for r in never_started)
    assert get_study(db, view.id).progress["queued"] == 0


def test_worker_survives_lost_database_connections(
    postgres_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(postgres_url)
    slow = {"steps_per_epoch": 4, "sleep_s": 0.1, "eval_every": 1}
    view = create_study(db, noop_spec(n_lr=3, seeds=2, workload_config=slow))  # 12 trials
    worker = worker_processes.start(postgres_url, "--exit-when-idle", "--poll-interval", "0.2")
    wait_for(
        lambda: any(r.state == "completed" for r in trial_rows(db, view.id)),
        timeout=60,
        what="the first trial to complete",
    )
    database = postgres_url.rsplit("/", 1)[1]
    admin_url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    terminated = 0
    for _ in range(4):  # what a server restart does to every client: connections cut
        with psycopg.connect(admin_url, autocommit=True) as admin:
            terminated += len(
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (database,),
                ).fetchall()
            )
        time.sleep(0.7)
    assert terminated > 0
    assert worker.wait(timeout=120) == 0, worker_processes.log(worker)
    rows = trial_rows(db, view.id)
    assert [r.state for r in rows] == ["completed"] * view.n_trials
    assert _optuna_trial_ids(db, view) == [r.id for r in rows]

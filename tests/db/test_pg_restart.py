"""A PostgreSQL restart (`pg_ctl restart -m fast`) in the middle of a study run by two real
workers: the workers ride it out and every trial completes exactly once.

The server is a private cluster of the test's own (tests/pg_cluster.py), since the shared test
server must never be restarted under other tests."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator

import optuna
import pytest
from optuna.trial import TrialState

from studies.db import create_study, get_study
from tests.db.util import migrated, noop_spec
from tests.pg_cluster import private_postgres_cluster
from tests.workers.procs import WorkerProcesses, trial_rows, wait_for

pytestmark = pytest.mark.slow

N_TRIALS = 30  # adam and adamod at 5 lrs, 3 seeds
# About 0.6 s per trial: the study takes some 10 s with two workers.
SLOW = {"steps_per_epoch": 6, "sleep_s": 0.1, "eval_every": 2}


@pytest.fixture
def worker_processes(tmp_path) -> Iterator[WorkerProcesses]:  # type: ignore[no-untyped-def]
    """Real worker subprocesses, killed when the test ends whatever happened."""
    processes = WorkerProcesses(tmp_path)
    try:
        yield processes
    finally:
        processes.kill_all()


def test_workers_ride_out_a_server_restart_and_run_each_trial_once(
    worker_processes: WorkerProcesses,
) -> None:
    with private_postgres_cluster() as cluster:
        db = migrated(cluster.url)
        view = create_study(db, noop_spec(n_lr=5, seeds=3, workload_config=SLOW))
        assert view.n_trials == N_TRIALS
        args = (
            "--exit-when-idle",
            "--pack-size",
            "1",  # one trial a transaction chain: many writes for the restart to cut into
            "--poll-interval",
            "0.2",
            "--report-interval",
            "0",  # every evaluation written: the restart lands inside a trial
            "--lease-seconds",
            "20",  # far longer than the restart: no lease may expire meanwhile
            "--retry-timeout",
            "90",
        )
        for _ in range(2):
            worker_processes.start(cluster.url, *args)

        def progress() -> dict[str, int]:
            study = get_study(db, view.id)
            assert study is not None
            return study.progress

        wait_for(lambda: progress()["completed"] >= 4, timeout=120, what="4 completed trials")
        db.dispose()  # our own pooled connections would only die with the restart
        restarted_at = time.monotonic()
        cluster.restart("fast")
        restart_s = time.monotonic() - restarted_at
        completed_before = progress()["completed"]
        assert completed_before < N_TRIALS, "the study ended before the restart: make it slower"

        codes = worker_processes.wait_all(timeout=180)
        logs = [worker_processes.log(p) for p in worker_processes.processes]
        assert codes == [0, 0], "\n---\n".join(log[-4000:] for log in logs)
        rows = trial_rows(db, view.id)
        assert [r.state for r in rows] == ["completed"] * N_TRIALS
        assert all(r.error is None for r in rows)
        # Each trial trained and stored once: one completion in all the workers' logs, no result
        # dropped for a lost lease, and a claim count that matches its attempts.
        text = "\n".join(logs)
        completions = Counter(int(m) for m in re.findall(r"trial (\d+) completed in", text))
        claims = Counter(int(m) for m in re.findall(r"trial (\d+) \(study \d+, attempt", text))
        assert completions == Counter({r.id: 1 for r in rows}), completions
        assert "result dropped" not in text
        for row in rows:
            # A claim whose reply the restart cut off is counted but never seen by a worker;
            # its lease expires and it is claimed again (attempts 2). Nothing else re-runs.
            assert 1 <= row.attempts <= 2, (row.id, row.attempts)
            assert claims[row.id] in (row.attempts, row.attempts - 1), (row.id, claims[row.id])
        assert sum(r.attempts for r in rows) <= N_TRIALS + 2
        assert len({r.worker_pid for r in rows}) == 2  # both workers survived and worked
        # The restart really happened, and cut the workers' open connections.
        server_log = cluster.log_text()
        assert "received fast shutdown request" in server_log
        assert "terminating connection due to administrator command" in server_log
        trials = optuna.load_study(study_name=view.optuna_study_name, storage=cluster.url).trials
        assert sorted(t.number for t in trials) == list(range(N_TRIALS))
        assert all(t.state == TrialState.COMPLETE for t in trials)
        assert sorted(t.user_attrs["adamod_lab_trial_id"] for t in trials) == [r.id for r in rows]
        db.dispose()
        assert restart_s < 30

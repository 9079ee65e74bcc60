"""A worker SIGSTOPped inside a transaction on PostgreSQL does not stop the others' progress.

Real processes: the victim is stopped and continued at random moments until PostgreSQL shows one
of its sessions idle inside a transaction that has written (so it holds row locks); the other
workers must keep completing trials while it stays frozen past lock_timeout, and once it is
continued the study completes with every trial exactly once."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from sqlalchemy import text

from studies.db import create_study
from tests.db.util import migrated, noop_spec
from tests.workers.procs import WorkerProcesses, trial_rows, wait_for

FROZEN_S = 7.0  # past the workers' 5 s lock_timeout: anything waiting on the victim gave up


def _local_ports(pid: int) -> set[int]:
    """The local TCP ports of `pid`'s sockets (its database connections among them)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _holds_row_locks(db_engine, ports: set[int]) -> bool:  # type: ignore[no-untyped-def]
    """True when one of these client ports' sessions idles inside a transaction that wrote."""
    if not ports:
        return False
    with db_engine.connect() as connection:
        found = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE client_port = ANY(:ports) "
                "AND state = 'idle in transaction' AND backend_xid IS NOT NULL"
            ),
            {"ports": sorted(ports)},
        ).scalar_one()
    return bool(found)


def _completed(db, study_id: int) -> int:  # type: ignore[no-untyped-def]
    return sum(r.state == "completed" for r in trial_rows(db, study_id))


def test_a_worker_frozen_inside_a_transaction_does_not_stop_the_others(
    postgres_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(postgres_url)
    # 2 optimizers x 15 lr x 10 seeds = 300 trials of 5 steps of 20 ms, every evaluation written.
    spec = noop_spec(
        n_lr=15,
        seeds=10,
        workload_config={"steps_per_epoch": 5, "eval_every": 1, "sleep_s": 0.02},
    )
    view = create_study(db, spec)
    common = ["--exit-when-idle", "--poll-interval", "0.2", "--pack-size", "1"]
    victim = worker_processes.start(postgres_url, *common, "--report-interval", "0")
    others = [worker_processes.start(postgres_url, *common) for _ in range(2)]
    wait_for(lambda: _completed(db, view.id) >= 10, timeout=120, what="the workers to get going")

    rng = random.Random(0)
    frozen = False
    for _ in range(400):
        os.kill(victim.pid, signal.SIGSTOP)
        time.sleep(0.02)
        if _holds_row_locks(db.engine, _local_ports(victim.pid)):
            frozen = True
            break
        os.kill(victim.pid, signal.SIGCONT)
        time.sleep(rng.uniform(0.0, 0.05))
    assert frozen, "never caught the victim inside a transaction"
    try:
        before = _completed(db, view.id)
        time.sleep(FROZEN_S)
        during = _completed(db, view.id) - before
        still_frozen = _holds_row_locks(db.engine, _local_ports(victim.pid))
    finally:
        os.kill(victim.pid, signal.SIGCONT)
    assert still_frozen  # it really held its transaction open all along
    # Two workers at ~0.15 s a trial: dozens in FROZEN_S; a stall would give ~0.
    assert during >= 10, f"only {during} trials completed while one worker was frozen"

    for process in (victim, *others):
        assert process.wait(timeout=180) == 0, worker_processes.log(process)
    rows = trial_rows(db, view.id)
    assert [r.state for r in rows] == ["completed"] * len(rows)
    logs = "".join(worker_processes.log(p) for p in (victim, *others))
    for row in rows:  # completed exactly once: one completion line per trial in all the logs
        assert logs.count(f"trial {row.id} completed in") == 1, row.id

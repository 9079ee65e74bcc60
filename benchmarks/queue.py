"""Queue throughput: trials per second through the durable queue with the `noop` workload.

For each backend (SQLite file, PostgreSQL) and 1, 2, 4 worker processes, on a fresh database:
submit N noop trials (one evaluation each), start `python -m workers --exit-when-idle`, and read
the timings back from the trial rows. Start-up (imports, first trial) is excluded: the rate counts
trials finished after every worker has finished its first one. Per-trial overhead is the time a
worker spends per trial outside run_trial (claim, evaluation write, completion with its Optuna
trial). Every trial must be completed exactly once and be in the Optuna study; the run fails
otherwise.

Baseline, measured in the same run on the same kind of database: Optuna's own path in one process
(`enqueue_trial` for every grid point, then `ask` / `report` per evaluation / `tell`), training the
same noop trials.

    .venv/bin/python benchmarks/queue.py [--trials 400] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# This file is named like the standard library's `queue` (which torch imports): keep its folder
# off the import path, and put the project root there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
ROOT = _HERE.parent
sys.path.insert(0, str(ROOT))

POSTGRES_ADMIN_URL = os.environ.get(
    "ADAMOD_LAB_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
NOOP_CONFIG = {"steps_per_epoch": 1}


@contextmanager
def fresh_database(backend: str) -> Iterator[str]:
    """A throw-away database URL, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            yield f"sqlite:///{directory}/bench.db"
        return
    import psycopg

    name = f"adamod_lab_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def noop_spec(n_trials: int):  # type: ignore[no-untyped-def]
    """A noop study of exactly n_trials trials (2 optimizers × n/2 seeds)."""
    from studies.spec import StudySpec

    return StudySpec.model_validate(
        {
            "name": "queue benchmark",
            "workload": "noop",
            "workload_config": NOOP_CONFIG,
            "optimizers": ["adam", "adamod"],
            "lr": {"values": [0.01]},
            "seeds": n_trials // 2,
        },
        context={"max_trials": n_trials},
    )


def run_queue(backend: str, n_workers: int, n_trials: int) -> dict[str, float]:
    """Trials/s and per-trial overhead through our queue with n_workers processes."""
    import optuna
    from sqlalchemy import select

    from studies.db import Database, create_study
    from studies.db.models import TrialRow

    with fresh_database(backend) as url:
        db = Database(url)
        db.migrate()
        view = create_study(db, noop_spec(n_trials))
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        started = time.perf_counter()
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "workers",
                    "--database-url",
                    url,
                    "--device",
                    "cpu",
                    "--exit-when-idle",
                    "--poll-interval",
                    "0.1",
                    "--log-level",
                    "WARNING",
                ],
                env=env,
            )
            for _ in range(n_workers)
        ]
        codes = [w.wait(timeout=1800) for w in workers]
        wall = time.perf_counter() - started
        if codes != [0] * n_workers:
            raise SystemExit(f"workers failed: exit codes {codes}")
        with db.session(readonly=True) as session:
            rows = session.execute(
                select(
                    TrialRow.state,
                    TrialRow.attempts,
                    TrialRow.worker_pid,
                    TrialRow.finished_at,
                    TrialRow.duration_s,
                ).where(TrialRow.study_id == view.id)
            ).all()
        n_optuna = len(optuna.load_study(study_name=view.optuna_study_name, storage=url).trials)
        db.dispose()
    if sorted({r.state for r in rows}) != ["completed"] or any(r.attempts != 1 for r in rows):
        raise SystemExit("not every trial completed exactly once")
    if n_optuna != n_trials:
        raise SystemExit(f"{n_optuna} trials in the Optuna study, expected {n_trials}")
    first_done: dict[int, float] = {}
    for r in sorted(rows, key=lambda r: r.finished_at):
        first_done.setdefault(r.worker_pid, r.finished_at.timestamp())
    t0 = max(first_done.values())  # every worker is warm from here on
    finished = sorted(r.finished_at.timestamp() for r in rows if r.finished_at.timestamp() > t0)
    rate = len(finished) / (finished[-1] - t0) if len(finished) > 1 else float("nan")
    per_trial = n_workers / rate
    train = statistics.mean(r.duration_s for r in rows if r.finished_at.timestamp() > t0)
    return {
        "rate": rate,
        "overhead_ms": 1000 * (per_trial - train),
        "train_ms": 1000 * train,
        "wall_s": wall,
        "optuna_trials": n_optuna,
        "workers_used": len(first_done),
    }


def run_optuna_baseline(backend: str, n_trials: int) -> dict[str, float]:
    """Optuna's own queue in one process: enqueue_trial for each grid point, then ask/tell."""
    import optuna

    from studies.db.optuna_bridge import distributions_for_spec
    from studies.spec import expand_grid
    from studies.trial import run_trial

    spec = noop_spec(n_trials)
    configs = expand_grid(spec)
    distributions = distributions_for_spec(spec.model_dump(mode="json"))
    with fresh_database(backend) as url:
        storage = optuna.storages.RDBStorage(url)
        study = optuna.create_study(study_name="baseline", storage=storage)
        t = time.perf_counter()
        for config in configs:
            study.enqueue_trial(config.params())
        enqueue_s = time.perf_counter() - t
        run_trial(configs[0])  # warm up torch, as the workers' first trial is excluded too
        t = time.perf_counter()
        train = 0.0
        for config in configs:  # enqueued trials come out of ask() in order
            trial = study.ask(distributions)
            result = run_trial(
                config, "cpu", report=lambda p, tr=trial: tr.report(p.val_loss, p.step)
            )
            train += result.duration_s
            study.tell(trial, min(result.loss, result.loss0))
        elapsed = time.perf_counter() - t
        assert len(study.trials) == n_trials
        storage.engine.dispose()
    return {
        "rate": n_trials / elapsed,
        "overhead_ms": 1000 * (elapsed - train) / n_trials,
        "enqueue_per_s": n_trials / enqueue_s,
    }


def main() -> None:
    """Runs the benchmark and prints the table."""
    import optuna

    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    worker_counts = [int(n) for n in args.workers.split(",")]
    print(f"noop trials: {args.trials} per run; CPU cores: {os.cpu_count()}")
    header = (
        f"{'backend':<11} {'path':<26} {'trials/s':>9} {'overhead ms':>12} "
        f"{'vs baseline':>12} {'in Optuna':>10}"
    )
    print(header)
    print("-" * len(header))
    for backend in args.backends.split(","):
        base = run_optuna_baseline(backend, args.trials)
        print(
            f"{backend:<11} {'optuna enqueue+ask/tell':<26} {base['rate']:>9.1f} "
            f"{base['overhead_ms']:>12.1f} {1.0:>11.2f}x {args.trials:>10}",
            flush=True,
        )
        for n in worker_counts:
            ours = run_queue(backend, n, args.trials)
            print(
                f"{backend:<11} {f'adamod-lab queue, {n} worker' + ('s' if n > 1 else ''):<26} "
                f"{ours['rate']:>9.1f} {ours['overhead_ms']:>12.1f} "
                f"{ours['rate'] / base['rate']:>11.2f}x {ours['optuna_trials']:>10}",
                flush=True,
            )


if __name__ == "__main__":
    main()

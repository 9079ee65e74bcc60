"""Benchmark: the web UI's study page and its polling path for a 2,000-trial running study.

Run: .venv/bin/python benchmarks/ui_study_page.py [--database-url URL] [--repeats 5]
Fills a fresh database (a temporary SQLite file by default) with one study of 2,000 trials, half
of them finished with synthetic losses, 50-point curves and bound telemetry, the rest queued, and
starts a real uvicorn server. Prints the median wall time of: GET /healthz (baseline), the study
page, its tables fragment with the report cached, and one polling cycle after a progress change
(one more trial finished, then what the page's script fetches: GET /studies/{id}/report and
GET /ui/studies/{id}/tables).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

# Run as a script, this folder is sys.path[0], and its queue.py would shadow the standard
# library's `queue` (which torch imports): use the repository root instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from sqlalchemy import update

from service.processes import running_server
from studies.db import Database, create_study
from studies.db.models import TrialRow
from studies.spec import StudySpec

SPEC = {
    "name": "benchmark ui 2000",
    "workload": "quadratic",
    "optimizers": ["adam", "adamod"],
    "lr": {"min": 1e-5, "max": 1.0, "points": 25},
    # (1 unbounded + 9 beta3 of AdaMod) x 25 lrs x 8 seeds = 2000 trials
    "beta3": [0.0, 0.5, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999],
    "seeds": 8,
    "budget": {"steps": 1000},
}
CURVE_POINTS = 50


def _finished(row: dict, rng: random.Random) -> dict:
    lr = row["params"]["lr"]
    diverged = lr > 0.3 and rng.random() < 0.5
    loss = 0.1 + 0.2 * (math.log10(lr) + 3) ** 2 / 9 + rng.random() * 0.05
    curve = [
        {
            "step": 20 * (i + 1),
            "epoch": None,
            "val_loss": loss + (1 - loss) * math.exp(-i / 8),
            "train_loss": loss + (1 - loss) * math.exp(-i / 7),
            "accuracy": None,
        }
        for i in range(CURVE_POINTS)
    ]
    series = [rng.random() for _ in range(CURVE_POINTS)]
    return {
        "state": "diverged" if diverged else "completed",
        "loss": None if diverged else loss,
        "value": 1.0 if diverged else min(loss, 1.0),
        "loss0": 1.0,
        "curve": curve,
        "bound_stats": {"summary": {"bound_half_release_step": 100}, "lower": series,
                        "upper": series, "clipped_fraction": series},
        "result": {"pack_size": 1, "steps": 1000},
        "attempts": 1,
        "worker_host": "bench",
        "worker_pid": 1,
        "worker_device": "cpu",
        "duration_s": 1.5,
    }


def fill(database_url: str) -> tuple[int, list[int]]:
    """Creates the study, finishes half its trials; returns its id and the queued trial ids."""
    db = Database(database_url)
    db.migrate()
    view = create_study(db, StudySpec.model_validate(SPEC))
    rng = random.Random(0)
    queued: list[int] = []
    with db.session() as session:
        rows = list(
            session.execute(
                TrialRow.__table__.select().where(TrialRow.study_id == view.id)
            ).mappings()
        )
        for i, row in enumerate(rows):
            if i % 2:
                queued.append(row["id"])
                continue
            session.execute(
                update(TrialRow).where(TrialRow.id == row["id"]).values(**_finished(row, rng))
            )
    db.dispose()
    print(f"study {view.id}: {view.n_trials} trials, {len(queued)} queued")
    return view.id, queued


def finish_one(database_url: str, trial_id: int) -> None:
    """Finishes one queued trial, as a worker would: the study's progress moves."""
    db = Database(database_url)
    with db.session() as session:
        row = session.execute(
            TrialRow.__table__.select().where(TrialRow.id == trial_id)
        ).mappings().one()
        session.execute(
            update(TrialRow)
            .where(TrialRow.id == trial_id)
            .values(**_finished(row, random.Random(trial_id)))
        )
    db.dispose()


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    """Runs the benchmark and prints one line per measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        database_url = args.database_url or f"sqlite:///{tmp}/bench.db"
        study_id, queued = fill(database_url)
        with running_server(database_url) as url, httpx.Client(base_url=url, timeout=120) as c:

            def get(path: str) -> httpx.Response:
                response = c.get(path)
                response.raise_for_status()
                return response

            page, tables = f"/ui/studies/{study_id}", f"/ui/studies/{study_id}/tables"
            get(page)  # the report of this progress is built and cached
            baseline = median_time(lambda: get("/healthz"), args.repeats)
            rows = [
                ("GET /healthz (baseline)", baseline),
                ("GET study page, report cached", median_time(lambda: get(page), args.repeats)),
                ("GET tables, report cached", median_time(lambda: get(tables), args.repeats)),
            ]
            report_times, table_times = [], []
            for trial_id in queued[: args.repeats]:
                finish_one(database_url, trial_id)
                get(f"/studies/{study_id}")  # the poll that sees the change
                report_times.append(median_time(lambda: get(f"/studies/{study_id}/report"), 1))
                table_times.append(median_time(lambda: get(tables), 1))
            cycle = [r + t for r, t in zip(report_times, table_times, strict=True)]
            rows += [
                ("poll after a change: GET /report", statistics.median(report_times)),
                ("poll after a change: GET tables", statistics.median(table_times)),
                ("poll after a change: both", statistics.median(cycle)),
            ]
            size = len(get(tables).content)
            for label, seconds in rows:
                print(f"{label:36s} {seconds * 1000:9.1f} ms   {seconds / baseline:8.1f}x baseline")
            print(f"tables fragment: {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

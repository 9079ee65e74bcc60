"""Benchmark: GET /studies/{id}/report for a 5,000-trial study through a live server.

Run: .venv/bin/python benchmarks/service_report.py [--database-url URL] [--repeats 7]
Fills a fresh database (a temporary SQLite file by default) with one finished study of 5,000
trials (synthetic losses written straight into the trial rows), starts a real uvicorn server, and
prints the median wall time of: GET /healthz (baseline: one HTTP round trip with a database query),
the first GET /report (loads the rows and builds the report), the cached GET /report, each figure,
and GET /trials, with each time's ratio to the baseline, all measured in this run.
Target: the report of a 5,000-trial study well under a second.
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
    "name": "benchmark 5000",
    "workload": "quadratic",
    "optimizers": ["adam", "adamw", "sgd", "adamod", "diffmod"],
    "lr": {"min": 1e-5, "max": 1.0, "points": 25},
    # (3 unbounded + 2 bounded x 11 beta3) x 25 lrs x 2 warmups x 4 seeds = 5000 trials
    "beta3": [0.0, 0.5, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99995, 0.99999],
    "warmup_steps": [0, 100],
    "seeds": 4,
    "budget": {"steps": 100},
}


def fill(database_url: str) -> int:
    """Creates the study and marks every trial finished with a synthetic loss; returns its id."""
    db = Database(database_url)
    db.migrate()
    view = create_study(db, StudySpec.model_validate(SPEC))
    rng = random.Random(0)
    with db.session() as session:
        rows = session.execute(
            TrialRow.__table__.select().where(TrialRow.study_id == view.id)
        ).mappings()
        updates = []
        for row in rows:
            lr = row["params"]["lr"]
            diverged = lr > 0.3 and rng.random() < 0.5
            loss = 0.1 + 0.2 * (math.log10(lr) + 3) ** 2 / 9 + rng.random() * 0.05
            updates.append(
                {
                    "row_id": row["id"],
                    "state": "diverged" if diverged else "completed",
                    "loss": None if diverged else loss,
                    "value": 1.0 if diverged else min(loss, 1.0),
                    "loss0": 1.0,
                }
            )
        for item in updates:
            session.execute(
                update(TrialRow)
                .where(TrialRow.id == item.pop("row_id"))
                .values(**item, attempts=1)
            )
    db.dispose()
    print(f"study {view.id}: {view.n_trials} trials")
    return view.id


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    """Runs the benchmark and prints one line per request."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        database_url = args.database_url or f"sqlite:///{tmp}/bench.db"
        study_id = fill(database_url)
        with running_server(database_url) as url, httpx.Client(base_url=url, timeout=120) as c:

            def get(path: str) -> Callable[[], object]:
                def call() -> object:
                    response = c.get(path)
                    response.raise_for_status()
                    return response

                return call

            base = f"/studies/{study_id}"
            baseline = median_time(get("/healthz"), args.repeats)
            first = median_time(get(f"{base}/report"), 1)
            cached = median_time(get(f"{base}/report"), args.repeats)
            rows = [("GET /healthz (baseline)", baseline), ("GET /report, first", first),
                    ("GET /report, cached", cached)]
            for name in ("lr_curves", "beta3_surface", "warmup", "budget"):
                rows.append((f"GET /plots/{name}.png, first", median_time(
                    get(f"{base}/plots/{name}.png"), 1)))
            rows.append(("GET /report.html, first", median_time(get(f"{base}/report.html"), 1)))
            rows.append(("GET /trials (5000 rows)", median_time(get(f"{base}/trials"), 3)))
            for label, seconds in rows:
                print(f"{label:34s} {seconds * 1000:9.1f} ms   {seconds / baseline:8.1f}x baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())

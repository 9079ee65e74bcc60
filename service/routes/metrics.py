"""GET /metrics: Prometheus text format.

Request counts come from this process (service.metrics_middleware); everything about trials and
workers is read from the database at scrape time by a custom collector, so the numbers are right
across API restarts and agree between API replicas: trials per state (the queue depth), trials
finished as completed, diverged or failed, a histogram of the stored durations of finished
trials (buckets built in SQL at scrape time), and the live workers of the registry. When the
database cannot be read the scrape still answers, with `adamod_lab_database_up 0`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from service.deps import ReaderDep
from service.metrics_middleware import MetricsMiddleware, app_metrics
from studies.db import Database
from studies.db.registry import DEFAULT_STALE_AFTER_S, live_worker_count
from studies.db.stats import trial_durations, trial_state_counts

# MetricsMiddleware is re-exported so that the app takes the route and its middleware together.
__all__ = ["DURATION_BUCKETS_S", "DatabaseCollector", "MetricsMiddleware", "router"]

log = logging.getLogger("adamod_lab.service")
DURATION_BUCKETS_S = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
FINISHED = ("completed", "diverged", "failed")

router = APIRouter(tags=["metrics"])
_register_lock = threading.Lock()  # two first scrapes at once must not register it twice


class DatabaseCollector(Collector):
    """Reads the trial and worker metrics from the database each time the registry collects."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def describe(self) -> list[Any]:
        return []  # no reads at registration; the families appear at collect time

    def collect(self) -> Iterator[Any]:
        try:
            counts = trial_state_counts(self.db)
            durations = trial_durations(self.db, DURATION_BUCKETS_S)
            workers = live_worker_count(self.db, DEFAULT_STALE_AFTER_S)
        except Exception as exc:  # a scrape must answer even when the database does not
            log.warning("metrics: database read failed: %s", exc)
            yield GaugeMetricFamily("adamod_lab_database_up", "1 when the database answered.", 0)
            return
        yield GaugeMetricFamily("adamod_lab_database_up", "1 when the database answered.", 1)
        depth = GaugeMetricFamily(
            "adamod_lab_trials", "Trials in each state (the queue depth).", labels=["state"]
        )
        for state, n in counts.items():
            depth.add_metric([state], n)
        yield depth
        finished = CounterMetricFamily(
            "adamod_lab_trials_finished",
            "Trials finished, by final state (from the stored rows).",
            labels=["state"],
        )
        for state in FINISHED:
            finished.add_metric([state], counts[state])
        yield finished
        buckets = [
            (_le(bound), float(n))
            for bound, n in zip(durations.bounds, durations.cumulative, strict=True)
        ]
        buckets.append(("+Inf", float(durations.count)))
        yield HistogramMetricFamily(
            "adamod_lab_trial_duration_seconds",
            "Stored training time of completed and diverged trials.",
            buckets=buckets,
            sum_value=durations.total_s,
        )
        yield GaugeMetricFamily(
            "adamod_lab_live_workers",
            f"Workers whose last heartbeat is younger than {DEFAULT_STALE_AFTER_S:g} s.",
            workers,
        )


def _le(bound: float) -> str:
    return f"{float(bound):g}" if float(bound) != int(bound) else f"{float(bound):.1f}"


def _exposition(request: Request) -> bytes:
    metrics = app_metrics(request.app)
    with _register_lock:
        if not getattr(request.app.state, "metrics_db_collector", False):
            metrics.registry.register(DatabaseCollector(request.app.state.db))
            request.app.state.metrics_db_collector = True
    return generate_latest(metrics.registry)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."}},
)
async def read_metrics(request: Request, reader: ReaderDep) -> Response:
    """Request counts by route template and status, trials per state, finished trials, the
    trial duration histogram and the live workers, in Prometheus text format."""
    body = await run_in_threadpool(_exposition, request)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)

"""ASGI middleware counting requests by route template and status, for GET /metrics.

Labels use the matched route's template (`/studies/{study_id}`), never the raw path, so a client
cannot grow the label set without bound; a request no route matched is `<unmatched>`. Each app
has its own CollectorRegistry (tests build many apps in one process; the global registry would
refuse the second set of metrics).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AppMetrics", "MetricsMiddleware", "app_metrics"]

UNMATCHED = "<unmatched>"
# Methods are labelled as they are; anything else a client invents is "other".
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class AppMetrics:
    """One app's registry and the request metrics the middleware records into it."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram


def app_metrics(app: Any) -> AppMetrics:
    """The app's metrics, created on first use and kept on `app.state`."""
    metrics = getattr(app.state, "metrics", None)
    if metrics is None:
        registry = CollectorRegistry(auto_describe=True)
        metrics = AppMetrics(
            registry=registry,
            requests=Counter(
                "adamod_lab_http_requests",
                "HTTP requests answered, by method, route template and status.",
                ("method", "route", "status"),
                registry=registry,
            ),
            latency=Histogram(
                "adamod_lab_http_request_duration_seconds",
                "Time to answer HTTP requests, by route template.",
                ("route",),
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
        )
        app.state.metrics = metrics
    return metrics


def route_template(scope: Scope) -> str:
    """The template of the route that handled the request (set by the router), or UNMATCHED."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


class MetricsMiddleware:
    """Counts every HTTP request once it is answered (a request that raised counts as 500)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            metrics = app_metrics(scope["app"])
            route = route_template(scope)
            method = scope.get("method", "")
            method = method if method in _METHODS else "other"
            metrics.requests.labels(method, route, str(status[0])).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - started)

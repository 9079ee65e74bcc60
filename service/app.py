"""create_app(settings): the FastAPI application of the REST contract (ARCHITECTURE.md)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from service.errors import install_error_handlers
from service.middleware import BodySizeLimitMiddleware
from service.reportcache import ReportCache
from service.routes import compare, docs, health, metrics, reports, studies, ui, workers, workloads
from service.settings import Settings
from service.version import __version__
from studies.db import Database
from studies.spec import StudySpec
from studies.workloads.registry import list_workloads

log = logging.getLogger("adamod_lab.service")

DESCRIPTION = """
Submit a **study** (a grid of optimizer × learning rate × β3 × warmup × seed), let workers train
it, and read the **robustness report**: how sensitive AdaMod is, compared with Adam, to its
hyperparameters on your workload.

Mutating routes need `Authorization: Bearer <token>` when the server has `ADAMOD_LAB_API_TOKENS`.
"""


def open_database(settings: Settings) -> Database:
    """Opens and migrates the database, retrying with backoff until ``db_wait_seconds`` pass."""
    deadline = time.monotonic() + settings.db_wait_seconds
    delay = 0.2
    db = Database(settings.database_url)  # a malformed URL is a ValueError: no point retrying
    while True:
        try:
            db.migrate()
            return db
        except Exception as exc:
            # A database container that is still starting refuses connections for a while.
            if time.monotonic() + delay > deadline:
                raise RuntimeError(
                    f"database not ready after {settings.db_wait_seconds:.0f}s: {exc}"
                ) from exc
            log.warning("database not ready (%s); retrying in %.1fs", type(exc).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API server: routes, auth, body limit, error handlers; migrates the db at start-up."""
    settings = settings if settings is not None else Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = await run_in_threadpool(open_database, settings)
        # Every study submitted is validated against the workload registry, which imports its
        # built-ins and plugins on first use (about 60 ms on one core): now, not in the first
        # POST /studies, which workers are waiting on.
        await run_in_threadpool(list_workloads)
        try:
            yield
        finally:
            app.state.db.dispose()

    app = FastAPI(
        title="AdaMod Lab",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from local assets by service.routes.docs
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.report_cache = ReportCache(settings.report_cache_size)
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(metrics.MetricsMiddleware)
    install_error_handlers(app)
    for module in (studies, reports, compare, workloads, health, ui, docs, workers, metrics):
        app.include_router(module.router)
    _add_spec_schema(app)
    return app


def _add_spec_schema(app: FastAPI) -> None:
    # POST /studies reads its body by hand (see service.body), so FastAPI does not know the
    # StudySpec model; add it and everything it references to the OpenAPI components.
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            spec_schema = StudySpec.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(spec_schema.pop("$defs", {}))
            components["StudySpec"] = spec_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

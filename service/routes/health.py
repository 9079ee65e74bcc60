"""Liveness plus database reachability, for load balancers and compose health checks."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from service.deps import DbDep
from service.schemas import Health
from service.version import __version__
from studies.db import Database

router = APIRouter(tags=["health"])


def database_error(db: Database) -> str | None:
    """None when ``SELECT 1`` succeeds, else a short reason."""
    try:
        db.ping()
    except Exception as exc:  # any driver error means "not reachable" to a health check
        return f"unreachable: {type(exc).__name__}"
    return None


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "The database cannot be reached."}},
)
async def healthz(db: DbDep) -> Health | JSONResponse:
    """200 when the server is up and its database answers; 503 when the database does not."""
    error = await run_in_threadpool(database_error, db)
    if error is None:
        return Health(status="ok", database="ok", version=__version__)
    body = Health(status="unavailable", database=error, version=__version__)
    return JSONResponse(status_code=503, content=body.model_dump())

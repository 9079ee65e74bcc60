"""GET /workers: the registered worker processes (host, pid, device, trials held, last beat).

The API also ends the expired leases of cancelled studies (studies.db.registry
.end_cancelled_expired), so a cancelled study finishes even when every worker is gone: a
background task started by this router's lifespan does it every CANCEL_SWEEP_S, and GET /workers
does it too (at most once a second), so that a reader never sees a stale `running` trial there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from service.deps import DbDep, ReaderDep
from studies.db import Database
from studies.db.registry import (
    DEFAULT_STALE_AFTER_S,
    PRUNE_AFTER_S,
    end_cancelled_expired,
    live_workers,
    prune_workers,
)

__all__ = ["CANCEL_SWEEP_S", "WorkerOut", "router", "sweep_cancelled"]

log = logging.getLogger("adamod_lab.service")
CANCEL_SWEEP_S = 15.0
_MIN_SWEEP_GAP_S = 1.0


class WorkerOut(BaseModel):
    """One worker process as the registry knows it."""

    id: str = Field(description="A random token per worker process start.")
    host: str
    pid: int
    device: str = Field(examples=["cpu", "cuda:0"])
    pack_size: int | None = Field(description="The --pack-size option; null: auto.")
    state: Literal["running", "stopping", "exited", "lost"] = Field(
        description="lost: not exited, but no heartbeat for stale_after_s."
    )
    current_trial_ids: list[int] = Field(
        description="The trial it trains, or every member of its pack; empty while idle."
    )
    started_at: datetime
    last_beat_at: datetime
    exited_at: datetime | None


def _sweep(db: Database, *, prune: bool = False) -> int:
    ended = end_cancelled_expired(db)
    if ended:
        log.info("ended %d expired trial(s) of cancelled studies", ended)
    if prune:
        prune_workers(db, PRUNE_AFTER_S)
    return ended


async def sweep_cancelled(request_app: FastAPI, *, prune: bool = False) -> None:
    """Runs the cancelled-lease sweep in a thread, at most once per _MIN_SWEEP_GAP_S per app."""
    now = time.monotonic()
    if now - getattr(request_app.state, "last_cancel_sweep", -1e9) < _MIN_SWEEP_GAP_S:
        return
    request_app.state.last_cancel_sweep = now
    try:
        await run_in_threadpool(_sweep, request_app.state.db, prune=prune)
    except Exception as exc:  # the database is down or busy: the next sweep tries again
        log.warning("cancelled-lease sweep failed: %s", exc)


async def _sweep_forever(app: FastAPI) -> None:
    while True:
        await sweep_cancelled(app, prune=True)
        await asyncio.sleep(CANCEL_SWEEP_S)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Runs the periodic sweep while the app serves (after the app's own start-up opened the
    database: FastAPI enters an included router's lifespan inside the app's)."""
    task = asyncio.create_task(_sweep_forever(app), name="cancelled-lease-sweep")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


router = APIRouter(tags=["workers"], lifespan=lifespan)


@router.get("/workers", response_model=list[WorkerOut])
async def read_workers(
    request: Request,
    db: DbDep,
    reader: ReaderDep,
    include_all: Annotated[
        bool,
        Query(
            alias="all",
            description="Also list exited and lost workers (until pruned, 24 h after their "
            "last beat).",
        ),
    ] = False,
    stale_after_s: Annotated[
        float,
        Query(
            gt=0,
            le=PRUNE_AFTER_S,
            description="A worker whose last beat is older than this is lost (default: three "
            "heartbeats of the default 60 s lease).",
        ),
    ] = DEFAULT_STALE_AFTER_S,
) -> list[WorkerOut]:
    """The live workers, oldest first: host, pid, device, current trial or pack, last beat."""
    await sweep_cancelled(request.app)
    views = await run_in_threadpool(live_workers, db, stale_after_s, include_all=include_all)
    return [WorkerOut.model_validate(view, from_attributes=True) for view in views]

"""A study's robustness report: JSON, a self-contained HTML page, and PNG figures."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from service.deps import DbDep, ReaderDep, ReportCacheDep, StudyId
from service.reportcache import CachedReport, ReportCache
from service.views import not_found
from studies.db import Database, get_study
from studies.plots import PLOT_NAMES
from studies.report import Report

router = APIRouter(prefix="/studies", tags=["reports"])
_NOT_FOUND = {404: {"description": "No study with this id (or no figure with this name)."}}


def _entry(db: Database, cache: ReportCache, study_id: int) -> CachedReport:
    view = get_study(db, study_id)
    if view is None:
        raise not_found(study_id)
    return cache.get(db, view)


@router.get("/{study_id}/report", response_model=Report, responses=_NOT_FOUND)
async def read_report(
    study_id: StudyId, db: DbDep, cache: ReportCacheDep, reader: ReaderDep
) -> Response:
    """The robustness report; `"complete": false` while trials are still queued or running."""
    entry = await run_in_threadpool(_entry, db, cache, study_id)
    # The JSON is serialized once per study progress; returning it as-is skips re-validation.
    return Response(entry.json_bytes, media_type="application/json")


@router.get(
    "/{study_id}/report.html",
    response_class=HTMLResponse,
    responses={**_NOT_FOUND, 200: {"content": {"text/html": {}}}},
)
async def read_report_html(
    study_id: StudyId, db: DbDep, cache: ReportCacheDep, reader: ReaderDep
) -> HTMLResponse:
    """The same report for a person, every figure inline."""
    entry = await run_in_threadpool(_entry, db, cache, study_id)
    return HTMLResponse(await run_in_threadpool(cache.html, entry))


@router.get(
    "/{study_id}/plots/{name}.png",
    response_class=Response,
    responses={**_NOT_FOUND, 200: {"content": {"image/png": {}}, "description": "A PNG figure."}},
)
async def read_plot(
    study_id: StudyId, name: str, db: DbDep, cache: ReportCacheDep, reader: ReaderDep
) -> Response:
    """One figure of the report as PNG: lr_curves, beta3_surface, warmup or budget."""
    if name not in PLOT_NAMES:
        raise HTTPException(
            status_code=404,
            detail=f"unknown plot {name[:80]!r}; valid names: {', '.join(PLOT_NAMES)}",
        )
    entry = await run_in_threadpool(_entry, db, cache, study_id)
    png = await run_in_threadpool(cache.plot, entry, name)
    return Response(png, media_type="image/png")

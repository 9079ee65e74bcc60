"""Several studies compared (one per workload): JSON, a self-contained HTML page, the profiles PNG.

`GET /compare?studies=1,2,3`. The reports come from the app's report cache (built at most once
per study progress), so comparing finished studies again costs only the comparison itself. The
comparison itself (service.views.compare_studies) is shared with the web UI's compare page.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from service import views
from service.deps import DbDep, ReaderDep, ReportCacheDep
from service.views import CompareOut, parse_study_ids

router = APIRouter(tags=["compare"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Reads are protected (ADAMOD_LAB_PROTECT_READS) and no valid token."},
    404: {"description": "One of the ids names no study."},
    422: {
        "description": "`studies` is missing or not 2 to 50 distinct ids, or they share no "
        "configuration."
    },
}

# Required: FastAPI answers a missing parameter with its own 422 at ["query", "studies"].
StudiesQuery = Annotated[
    str,
    Query(
        description="2 to 50 distinct study ids, comma-separated, e.g. `1,2,3` (one study per "
        "workload, with the same optimizers).",
        examples=["1,2"],
    ),
]


@router.get("/compare", response_model=CompareOut, responses=_RESPONSES)
async def compare_studies(
    db: DbDep, cache: ReportCacheDep, reader: ReaderDep, studies: StudiesQuery
) -> CompareOut:
    """Several studies compared: per-workload table and two performance profiles."""
    ids = parse_study_ids(studies)
    return await run_in_threadpool(views.compare_studies, db, cache, ids)


@router.get(
    "/compare.html",
    response_class=HTMLResponse,
    responses={**_RESPONSES, 200: {"content": {"text/html": {}}}},
)
async def compare_studies_html(
    db: DbDep, cache: ReportCacheDep, reader: ReaderDep, studies: StudiesQuery
) -> HTMLResponse:
    """The same comparison for a person: studies, profiles figure inline, tables, definitions."""
    from studies.compare_render import render_compare_html

    ids = parse_study_ids(studies)
    comparison = await run_in_threadpool(views.compare_studies, db, cache, ids)
    title = f"Comparison of studies {', '.join(map(str, ids))}"
    return HTMLResponse(await run_in_threadpool(render_compare_html, comparison, title))


@router.get(
    "/compare/profiles.png",
    response_class=Response,
    responses={**_RESPONSES, 200: {"content": {"image/png": {}}, "description": "A PNG figure."}},
)
async def compare_profiles_png(
    db: DbDep, cache: ReportCacheDep, reader: ReaderDep, studies: StudiesQuery
) -> Response:
    """The two performance profiles (steps to target, lr sensitivity) as one PNG."""
    from studies.compare_render import render_profiles

    ids = parse_study_ids(studies)
    comparison = await run_in_threadpool(views.compare_studies, db, cache, ids)
    return Response(await run_in_threadpool(render_profiles, comparison), media_type="image/png")

"""Several studies compared (one per workload): JSON, a self-contained HTML page, the profiles PNG.

`GET /compare?studies=1,2,3`. The reports come from the app's report cache (built at most once
per study progress), so comparing finished studies again costs only the comparison itself.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from service.deps import MAX_ID, DbDep, ReaderDep, ReportCacheDep
from service.reportcache import ReportCache
from studies.compare import Comparison, compare_reports
from studies.db import Database, get_study

router = APIRouter(tags=["compare"])

MIN_STUDIES, MAX_STUDIES = 2, 50
# 50 ids of 10 digits, commas and some spaces: anything longer cannot be valid.
_MAX_QUERY_CHARS = 1000
_ID = re.compile(r"[0-9]{1,10}")

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


class CompareOut(Comparison):
    """The comparison, with the ids of the studies in the order they were given."""

    study_ids: list[int]


def _invalid(message: str, value: str | None = None) -> HTTPException:
    """A 422 in FastAPI's own shape, naming the `studies` query parameter."""
    item: dict[str, Any] = {"loc": ["query", "studies"], "msg": message, "type": "value_error"}
    if value is not None:
        item["input"] = value if len(value) <= 200 else value[:200] + "..."
    return HTTPException(status_code=status.HTTP_422_UNPROCESSABLE_ENTITY, detail=[item])


def parse_study_ids(raw: str) -> list[int]:
    """The ids of `?studies=`; an HTTPException 422 naming `studies` for anything else."""
    if len(raw) > _MAX_QUERY_CHARS:
        raise _invalid(f"studies is too long (more than {_MAX_QUERY_CHARS} characters)")
    parts = [p.strip() for p in raw.split(",")]
    if parts == [""]:
        raise _invalid("studies is empty: give 2 to 50 comma-separated study ids", raw)
    ids: list[int] = []
    for part in parts:
        if not _ID.fullmatch(part):
            shown = part if len(part) <= 40 else part[:40] + "..."
            raise _invalid(
                f"studies must be comma-separated positive integer ids; {shown!r} is not one", raw
            )
        value = int(part)
        if not 1 <= value <= MAX_ID:
            raise _invalid(f"studies: id {value} is out of range 1..{MAX_ID}", raw)
        if value in ids:
            raise _invalid(f"studies: id {value} is given twice; ids must be distinct", raw)
        ids.append(value)
    if not MIN_STUDIES <= len(ids) <= MAX_STUDIES:
        raise _invalid(
            f"studies must name {MIN_STUDIES} to {MAX_STUDIES} studies, got {len(ids)}", raw
        )
    return ids


def _compare(db: Database, cache: ReportCache, ids: list[int]) -> CompareOut:
    """Looks every study up (404 naming the unknown ones), then compares their cached reports."""
    views = [(i, get_study(db, i)) for i in ids]
    unknown = [i for i, view in views if view is None]
    if unknown:
        which = (
            f"study {unknown[0]} not found"
            if len(unknown) == 1
            else f"studies {', '.join(map(str, unknown))} not found"
        )
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=which)
    reports = []
    names = []
    for i, view in views:
        entry = cache.get(db, view)
        # The cached JSON is the report as clients see it (non-finite numbers already null).
        reports.append(json.loads(entry.json_bytes))
        names.append(f"#{i} {view.name}")
    try:
        comparison = compare_reports(reports, names)
    except ValueError as exc:
        raise _invalid(f"studies cannot be compared: {exc}") from exc
    return CompareOut(**comparison.model_dump(), study_ids=ids)


@router.get("/compare", response_model=CompareOut, responses=_RESPONSES)
async def compare_studies(
    db: DbDep, cache: ReportCacheDep, reader: ReaderDep, studies: StudiesQuery
) -> CompareOut:
    """Several studies compared: per-workload table and two performance profiles."""
    ids = parse_study_ids(studies)
    return await run_in_threadpool(_compare, db, cache, ids)


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
    comparison = await run_in_threadpool(_compare, db, cache, ids)
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
    comparison = await run_in_threadpool(_compare, db, cache, ids)
    return Response(await run_in_threadpool(render_profiles, comparison), media_type="image/png")

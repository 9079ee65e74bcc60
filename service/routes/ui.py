"""The web UI: study list (`/`), study page, compare page, rendered server-side from templates.

Pages are Jinja2 templates with autoescaping on, so a study name or an error message is text, never
markup. The tables are in the HTML (the pages work without JavaScript); JavaScript adds live
progress (polling the JSON API, stopping at a final status) and plotly.js charts, served from the
`plotly` package's own plotly.min.js under /ui/static/ (no CDN). The pages are readable exactly as
the JSON GET routes are (ReaderDep); the one mutating action, cancel, calls `DELETE /studies/{id}`
from the browser with the token the user entered, kept in sessionStorage.
"""

from __future__ import annotations

import json
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from service.deps import MAX_ID, DbDep, ReaderDep, ReportCacheDep
from service.errors import printable_text
from service.reportcache import ReportCache
from service.routes.compare import _compare, parse_study_ids
from service.schemas import STUDY_STATUSES
from studies.db import Database, get_study, list_studies, list_trials

router = APIRouter(include_in_schema=False)

FINAL_STATUSES = ("completed", "cancelled", "failed")
PAGE_SIZE = 100
_HERE = Path(__file__).resolve().parent.parent

# Autoescape every template, whatever its name: nothing from the database is ever markup.
_env = Environment(loader=FileSystemLoader(_HERE / "templates"), autoescape=True)
templates = Jinja2Templates(env=_env)


def _num(value: Any, digits: int = 3) -> str:
    if value is None or isinstance(value, bool):
        return "–"
    if isinstance(value, int | float):
        return f"{value:.{digits}g}"
    return str(value)


def _when(value: datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


_env.filters["num"] = _num
_env.filters["when"] = _when

# name -> (file, media type): the only files /ui/static serves, so no client path reaches disk.
_STATIC: dict[str, tuple[Path, str]] = {
    "plotly.min.js": (
        Path(str(files("plotly") / "package_data" / "plotly.min.js")),
        "text/javascript; charset=utf-8",
    ),
    "study.js": (_HERE / "static" / "study.js", "text/javascript; charset=utf-8"),
    "token.js": (_HERE / "static" / "token.js", "text/javascript; charset=utf-8"),
    "ui.css": (_HERE / "static" / "ui.css", "text/css; charset=utf-8"),
}


def _page(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    base = request.scope.get("root_path", "")
    return templates.TemplateResponse(
        request, name, {"base": base, **context}, status_code=status_code
    )


def error_page(request: Request, status_code: int, title: str, message: str) -> HTMLResponse:
    """An HTML error page (the JSON routes keep FastAPI's JSON errors)."""
    context = {"title": title, "message": message, "status_code": status_code}
    return _page(request, "error.html", context, status_code=status_code)


def _parse_id(raw: str) -> int | None:
    return int(raw) if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_ID else None


def _done(progress: dict[str, int]) -> int:
    return sum(int(progress.get(k, 0)) for k in ("completed", "diverged", "failed", "cancelled"))


@router.get("/", response_class=HTMLResponse)
def index(
    request: Request,
    db: DbDep,
    reader: ReaderDep,
    status: Annotated[str | None, Query(max_length=40)] = None,
    page: Annotated[str | None, Query(max_length=12)] = None,
) -> HTMLResponse:
    """Every study, newest first, optionally of one status; a form to compare several."""
    status = status or None  # the filter form sends "" for "all"
    if status is not None and status not in STUDY_STATUSES:
        return error_page(
            request, 422, "Unknown status", f"status must be one of {', '.join(STUDY_STATUSES)}"
        )
    number = 1 if not page else _parse_id(page)
    if number is None or number > MAX_ID // PAGE_SIZE:
        return error_page(request, 422, "Bad page", "page must be a positive integer")
    views = list_studies(db, status=status, limit=PAGE_SIZE + 1, offset=(number - 1) * PAGE_SIZE)
    rows = [
        {
            "view": v,
            "workload": v.spec.get("workload", "?"),
            "done": _done(v.progress),
            "total": int(v.progress.get("total", v.n_trials)),
        }
        for v in views[:PAGE_SIZE]
    ]
    context = {
        "title": "Studies",
        "rows": rows,
        "status": status,
        "statuses": STUDY_STATUSES,
        "page": number,
        "has_next": len(views) > PAGE_SIZE,
    }
    return _page(request, "index.html", context)


def _study_context(db: Database, cache: ReportCache, study_id: int) -> dict[str, Any] | None:
    """Everything the study page shows, read in one worker thread; None for an unknown study."""
    view = get_study(db, study_id)
    if view is None:
        return None
    entry = cache.get(db, view)
    report = json.loads(entry.json_bytes)  # as clients see it: non-finite numbers are null
    trials = list_trials(db, study_id) or []
    rows = [
        {
            "trial": t,
            # Rows stored before trial packs have no pack size: they were trained alone.
            "pack_size": (t.pack_size or 1) if t.state in ("completed", "diverged") else None,
            "worker": t.worker or {},
        }
        for t in trials
    ]
    return {
        "title": f"Study {view.id}: {view.name}",
        "study": view,
        "final": view.status in FINAL_STATUSES,
        "done": _done(view.progress),
        "total": int(view.progress.get("total", view.n_trials)),
        "report": report,
        "rows": rows,
    }


async def _study_or_404(
    request: Request, db: Database, cache: ReportCache, raw_id: str
) -> dict[str, Any] | HTMLResponse:
    study_id = _parse_id(raw_id)
    context = (
        None if study_id is None else await run_in_threadpool(_study_context, db, cache, study_id)
    )
    if context is None:
        return error_page(
            request, 404, "Study not found", f"There is no study {printable_text(raw_id[:40])!r}."
        )
    return context


@router.get("/ui/studies/{study_id}", response_class=HTMLResponse)
async def study_page(
    request: Request, study_id: str, db: DbDep, cache: ReportCacheDep, reader: ReaderDep
) -> HTMLResponse:
    """One study: progress, lr curves and surfaces, comparisons, the trial table."""
    context = await _study_or_404(request, db, cache, study_id)
    if isinstance(context, HTMLResponse):
        return context
    return _page(request, "study.html", context)


@router.get("/ui/studies/{study_id}/tables", response_class=HTMLResponse)
async def study_tables(
    request: Request, study_id: str, db: DbDep, cache: ReportCacheDep, reader: ReaderDep
) -> HTMLResponse:
    """The study page's tables alone: what its script swaps in when the progress moves."""
    context = await _study_or_404(request, db, cache, study_id)
    if isinstance(context, HTMLResponse):
        return context
    return _page(request, "study_tables.html", context)


@router.get("/ui/compare", response_class=HTMLResponse)
async def compare_page(
    request: Request,
    db: DbDep,
    cache: ReportCacheDep,
    reader: ReaderDep,
    studies: Annotated[list[str] | None, Query(max_length=1000)] = None,
) -> HTMLResponse:
    """Several studies compared (the JSON /compare's numbers); `studies=1,2` or repeated."""
    parts = [p.strip() for s in (studies or []) for p in s.split(",") if p.strip()]
    raw = ",".join(parts)
    context: dict[str, Any] = {"title": "Compare studies", "raw": raw, "comparison": None}
    if len(parts) == 1:  # the study page's "compare with…": ask for the others
        context.update(raw=raw + ", ", hint="Add at least one more study id to compare with.")
    elif parts:
        try:
            ids = parse_study_ids(raw)
            context["comparison"] = await run_in_threadpool(_compare, db, cache, ids)
        except HTTPException as exc:
            detail = exc.detail
            message = detail[0]["msg"] if isinstance(detail, list) else str(detail)
            return error_page(request, exc.status_code, "Cannot compare", message)
        context["ids"] = ",".join(map(str, ids))
    return _page(request, "compare.html", context)


@router.get("/ui/static/{name}")
def static_file(name: str) -> FileResponse:
    """plotly.min.js (from the plotly package), the UI's script and stylesheet; 404 otherwise."""
    found = _STATIC.get(name)
    if found is None:
        raise HTTPException(status_code=404, detail="no such static file")
    path, media_type = found
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "max-age=3600"})

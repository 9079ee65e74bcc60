"""The web UI: study list (`/`), study page, compare page, rendered server-side from templates.

Pages are Jinja2 templates with autoescaping on, so a study name or an error message is text, never
markup. The tables are in the HTML (the pages work without JavaScript); JavaScript adds live
progress (polling the JSON API, stopping at a final status) and plotly.js charts, served from the
`plotly` package's own plotly.min.js under /ui/static/ (no CDN). The pages are readable exactly as
the JSON GET routes are; when reads are protected (ADAMOD_LAB_PROTECT_READS), a page asked for
without a token answers a sign-in form (401, no JavaScript needed) that POSTs a token to
/ui/session, which sets a session cookie (service.ui_session) and sends the browser back. That
cookie is good for reads only: the one mutating action, cancel, calls `DELETE /studies/{id}` from
the browser with the bearer token the user entered, kept in sessionStorage.
"""

from __future__ import annotations

import json
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from service.deps import (
    MAX_ID,
    DbDep,
    OptionalReaderDep,
    ReportCacheDep,
    SettingsDep,
    token_matches,
)
from service.errors import printable_text
from service.reportcache import ReportCache
from service.schemas import STUDY_STATUSES
from service.settings import Settings
from service.ui_session import COOKIE_NAME, local_path, revoke, session_value
from service.ui_trials import trial_table
from service.views import compare_studies, parse_study_ids
from studies.db import Database, get_study, list_studies

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
    signed_in = COOKIE_NAME in request.cookies  # offer to sign out
    return templates.TemplateResponse(
        request, name, {"base": base, "signed_in": signed_in, **context}, status_code=status_code
    )


def error_page(request: Request, status_code: int, title: str, message: str) -> HTMLResponse:
    """An HTML error page (the JSON routes keep FastAPI's JSON errors)."""
    context = {"title": title, "message": message, "status_code": status_code}
    return _page(request, "error.html", context, status_code=status_code)


def sign_in_page(
    request: Request, next_path: str | None = None, error: str | None = None
) -> HTMLResponse:
    """401 with a form for a token (reads are protected and the request brought none valid)."""
    if next_path is None:
        query = request.url.query
        next_path = request.url.path + (f"?{query}" if query else "")
    base = request.scope.get("root_path", "")
    context = {"title": "Sign in", "next": local_path(next_path, f"{base}/"), "error": error}
    response = _page(request, "signin.html", context, status_code=401)
    response.headers["WWW-Authenticate"] = "Bearer"
    response.headers["Cache-Control"] = "no-store"
    return response


def _form_fields(body: bytes) -> dict[str, str]:
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
    except ValueError:  # more fields than any form of ours sends
        return {}
    return {name: values[0] for name, values in fields.items()}


@router.post("/ui/session", response_class=HTMLResponse)
async def sign_in(request: Request, settings: SettingsDep) -> Response:
    """The sign-in form's target: a valid token sets the session cookie, then 303 to `next`."""
    content_type = request.headers.get("content-type", "")
    body = await request.body()
    fields = (
        _form_fields(body) if content_type.startswith("application/x-www-form-urlencoded") else {}
    )
    base = request.scope.get("root_path", "")
    target = local_path(fields.get("next"), f"{base}/")
    token = fields.get("token", "").strip()  # as in ADAMOD_LAB_API_TOKENS: blanks around ignored
    if not (settings.protect_reads and settings.api_tokens):  # nothing to sign in to
        return RedirectResponse(target, status_code=303)
    if not token or not token_matches(token, settings.api_tokens):
        message = "That is not a valid token for this server." if token else "Enter a token."
        return sign_in_page(request, target, message)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        session_value(token),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def _signed_out(response: Response, request: Request, settings: Settings) -> Response:
    revoke(request.cookies.get(COOKIE_NAME), settings.api_tokens)
    response.delete_cookie(
        COOKIE_NAME,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.delete("/ui/session", status_code=204)
def delete_session(request: Request, settings: SettingsDep) -> Response:
    """Signs this browser out: the session cookie is cleared, and no longer valid anywhere."""
    return _signed_out(Response(status_code=204), request, settings)


@router.post("/ui/sign-out")
def sign_out(request: Request, settings: SettingsDep) -> Response:
    """The sign-out button (a form, no JavaScript): clears the cookie, then 303 to the list."""
    base = request.scope.get("root_path", "")
    return _signed_out(RedirectResponse(f"{base}/", status_code=303), request, settings)


def _parse_id(raw: str) -> int | None:
    return int(raw) if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_ID else None


def _done(progress: dict[str, int]) -> int:
    return sum(int(progress.get(k, 0)) for k in ("completed", "diverged", "failed", "cancelled"))


@router.get("/", response_class=HTMLResponse)
def index(
    request: Request,
    db: DbDep,
    reader: OptionalReaderDep,
    status: Annotated[str | None, Query(max_length=40)] = None,
    page: Annotated[str | None, Query(max_length=12)] = None,
) -> HTMLResponse:
    """Every study, newest first, optionally of one status; a form to compare several."""
    if reader is None:
        return sign_in_page(request)
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
    """Everything the study page shows, read in one worker thread; None for an unknown study.

    The report comes from the cache (built once per progress, whoever asks first: this page, its
    script's GET /report, or the fragment); the trial table is read without curves or telemetry.
    """
    view = get_study(db, study_id)
    if view is None:
        return None
    entry = cache.get(db, view)
    report = json.loads(entry.json_bytes)  # as clients see it: non-finite numbers are null
    rows = trial_table(db, study_id) or []
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
    request: Request, study_id: str, db: DbDep, cache: ReportCacheDep, reader: OptionalReaderDep
) -> HTMLResponse:
    """One study: progress, lr curves and surfaces, comparisons, the trial table."""
    if reader is None:
        return sign_in_page(request)
    context = await _study_or_404(request, db, cache, study_id)
    if isinstance(context, HTMLResponse):
        return context
    return _page(request, "study.html", context)


@router.get("/ui/studies/{study_id}/tables", response_class=HTMLResponse)
async def study_tables(
    request: Request, study_id: str, db: DbDep, cache: ReportCacheDep, reader: OptionalReaderDep
) -> HTMLResponse:
    """The study page's tables alone: what its script swaps in when the progress moves."""
    if reader is None:
        return sign_in_page(request)
    context = await _study_or_404(request, db, cache, study_id)
    if isinstance(context, HTMLResponse):
        return context
    return _page(request, "study_tables.html", context)


@router.get("/ui/compare", response_class=HTMLResponse)
async def compare_page(
    request: Request,
    db: DbDep,
    cache: ReportCacheDep,
    reader: OptionalReaderDep,
    studies: Annotated[list[str] | None, Query(max_length=1000)] = None,
) -> HTMLResponse:
    """Several studies compared (the JSON /compare's numbers); `studies=1,2` or repeated."""
    if reader is None:
        return sign_in_page(request)
    parts = [p.strip() for s in (studies or []) for p in s.split(",") if p.strip()]
    raw = ",".join(parts)
    context: dict[str, Any] = {"title": "Compare studies", "raw": raw, "comparison": None}
    if len(parts) == 1:  # the study page's "compare with…": ask for the others
        context.update(raw=raw + ", ", hint="Add at least one more study id to compare with.")
    elif parts:
        try:
            ids = parse_study_ids(raw)
            context["comparison"] = await run_in_threadpool(compare_studies, db, cache, ids)
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

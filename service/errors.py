"""Exception handlers: every client mistake becomes a JSON {"detail": ...} 4xx, never a 500."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

log = logging.getLogger("adamod_lab.service")


def json_safe(value: Any) -> Any:
    """Returns ``value`` with non-finite floats replaced by None, so strict JSON can encode it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


# How long a client should wait before retrying a write that found the SQLite database locked:
# another writer (a worker claiming trials, another POST) holds it for well under this.
LOCKED_RETRY_AFTER_SECONDS = 2
_LOCKED_MESSAGES = ("database is locked", "database table is locked", "database is busy")


def printable_text(value: str) -> str:
    """``value`` with lone surrogates written as escapes: every response is UTF-8, and a
    surrogate that a client sent as a JSON escape cannot be encoded in one."""
    if value.isascii():
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


MAX_ECHOED_CHARS = 200  # of a field name or a message echoed in an error


def _short(text: str) -> str:
    return text if len(text) <= MAX_ECHOED_CHARS else text[:MAX_ECHOED_CHARS] + "..."


def _loc_part(part: Any) -> Any:
    # A 1 MB key is named by its first characters, not echoed whole.
    return printable_text(_short(part)) if isinstance(part, str) else part


def _scalar_input(value: Any) -> Any:
    # Echo the offending value only when it is small and JSON-safe; a 1 MB list or a NaN stays out.
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if abs(value) < 10**18 else str(value)[:40] + "..."
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return printable_text(value if len(value) <= 200 else value[:200] + "...")
    return None


def _short_message(text: str) -> str:
    # Messages quote what they are about (an unknown key, "did you mean"): keep them readable.
    return text if len(text) <= 10 * MAX_ECHOED_CHARS else text[: 10 * MAX_ECHOED_CHARS] + "..."


def validation_details(errors: Sequence[Any], prefix: tuple[str | int, ...] = ()) -> list[dict]:
    """pydantic errors as FastAPI's 422 list: loc (field path), msg, type, and a small input."""
    details = []
    for error in errors:
        item: dict[str, Any] = {
            "loc": [_loc_part(part) for part in (*prefix, *error.get("loc", ()))],
            "msg": printable_text(_short_message(str(error.get("msg", "invalid value")))),
            "type": str(error.get("type", "value_error")),
        }
        if "input" in error:
            safe = _scalar_input(error["input"])
            if safe is not None:
                item["input"] = safe
        details.append(item)
    return details


async def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(status_code=422, content={"detail": validation_details(exc.errors())})


def is_database_locked(exc: BaseException) -> bool:
    """True for SQLite's "database is locked": a writer waited its busy timeout in vain."""
    return isinstance(exc, OperationalError) and any(
        message in str(exc.orig).lower() for message in _LOCKED_MESSAGES
    )


async def _operational_error(request: Request, exc: Exception) -> JSONResponse:
    # A locked SQLite database is load, not a bug: the client may retry the same request.
    if is_database_locked(exc):
        log.warning("database locked on %s %s; answered 503", request.method, request.url.path)
        return JSONResponse(
            status_code=503,
            content={"detail": "the database is busy with another write; retry shortly"},
            headers={"Retry-After": str(LOCKED_RETRY_AFTER_SECONDS)},
        )
    return await _unexpected_error(request, exc)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # A bug, not a client error: log it with the traceback and keep the body terse.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(status_code=500, content={"detail": "internal server error"})


def install_error_handlers(app: FastAPI) -> None:
    """Registers the handlers on ``app``."""
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(OperationalError, _operational_error)
    app.add_exception_handler(Exception, _unexpected_error)

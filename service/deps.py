"""FastAPI dependencies as Annotated aliases: the database, the settings, the caller (auth)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.reportcache import ReportCache
from service.settings import Settings
from service.ui_session import COOKIE_NAME, session_is_valid
from studies.db import Database

# Ids are 32-bit integers in every database we support; anything larger cannot name a study and
# would only reach the database as an out-of-range parameter.
MAX_ID = 2**31 - 1

_bearer = HTTPBearer(
    auto_error=False,
    description="One of the tokens in ADAMOD_LAB_API_TOKENS (only when that variable is set).",
)


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


def get_db(request: Request) -> Database:
    """The app's Database (engine and sessions), opened and migrated at start-up."""
    return request.app.state.db


def get_report_cache(request: Request) -> ReportCache:
    """The app's in-memory cache of robustness reports."""
    return request.app.state.report_cache


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
ReportCacheDep = Annotated[ReportCache, Depends(get_report_cache)]
StudyId = Annotated[int, Path(ge=1, le=MAX_ID, description="The study's id.")]


def token_matches(given: str, tokens: list[str]) -> bool:
    """True when ``given`` is one of ``tokens``, in time that does not depend on which is close."""
    # compare_digest on bytes: str arguments must be ASCII and a header may hold anything.
    given_bytes = given.encode("utf-8", "surrogateescape")
    matched = False
    for token in tokens:  # no early exit, so the time taken does not tell which token is close
        matched |= hmac.compare_digest(given_bytes, token.encode("utf-8"))
    return matched


def _unauthorized() -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="missing or invalid bearer token (Authorization: Bearer <token>)",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _check(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> str:
    if not settings.api_tokens:
        return "anonymous"
    if credentials is None or not token_matches(credentials.credentials, settings.api_tokens):
        raise _unauthorized()
    return "token"


def require_writer(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """Who is calling a mutating route; 401 without a valid token when tokens are configured."""
    return _check(settings, credentials)


def optional_reader(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    """Who is calling a read route; None when reads are protected and nothing valid came.

    A bearer token, or for GET and HEAD the web UI's session cookie (service.ui_session): never
    for a mutating route, which is what keeps the cookie from being a CSRF risk.
    """
    if not settings.protect_reads or not settings.api_tokens:
        return "anonymous"
    if credentials is not None and token_matches(credentials.credentials, settings.api_tokens):
        return "token"
    if request.method in ("GET", "HEAD") and session_is_valid(
        request.cookies.get(COOKIE_NAME), settings.api_tokens
    ):
        return "session"
    return None


def require_reader(caller: Annotated[str | None, Depends(optional_reader)]) -> str:
    """Who is calling a read route; checked only when ADAMOD_LAB_PROTECT_READS is true."""
    if caller is None:
        raise _unauthorized()
    return caller


CallerDep = Annotated[str, Depends(require_writer)]
ReaderDep = Annotated[str, Depends(require_reader)]
OptionalReaderDep = Annotated[str | None, Depends(optional_reader)]

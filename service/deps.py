"""FastAPI dependencies as Annotated aliases: the database, the settings, the caller (auth)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.reportcache import ReportCache
from service.settings import Settings
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


def _token_matches(given: str, tokens: list[str]) -> bool:
    # compare_digest on bytes: str arguments must be ASCII and a header may hold anything.
    given_bytes = given.encode("utf-8", "surrogateescape")
    matched = False
    for token in tokens:  # no early exit, so the time taken does not tell which token is close
        matched |= hmac.compare_digest(given_bytes, token.encode("utf-8"))
    return matched


def _check(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> str:
    if not settings.api_tokens:
        return "anonymous"
    if credentials is None or not _token_matches(credentials.credentials, settings.api_tokens):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid bearer token (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return "token"


def require_writer(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """Who is calling a mutating route; 401 without a valid token when tokens are configured."""
    return _check(settings, credentials)


def require_reader(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """Who is calling a read route; checked only when ADAMOD_LAB_PROTECT_READS is true."""
    if not settings.protect_reads:
        return "anonymous"
    return _check(settings, credentials)


CallerDep = Annotated[str, Depends(require_writer)]
ReaderDep = Annotated[str, Depends(require_reader)]

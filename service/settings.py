"""The service's configuration: one pydantic-settings object read from ADAMOD_LAB_* variables.

The two secrets can come from files instead (the `_FILE` convention of the official postgres
image, for Docker or Kubernetes secrets): ADAMOD_LAB_DATABASE_URL_FILE and
ADAMOD_LAB_API_TOKENS_FILE name a file holding the value (surrounding blanks and the final newline
ignored). Setting both a variable and its _FILE, or naming a file that cannot be read or is empty,
stops start-up with a SecretFileError that names the variable and the file.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./adamod_lab.db"


# Settings that may be read from the file named by the variable's name + "_FILE".
SECRET_FILE_FIELDS = ("database_url", "api_tokens")


class SecretFileError(Exception):
    """A NAME_FILE variable that cannot be used: unreadable or empty file, or NAME set as well.

    Not a ValueError, so that pydantic lets it through as it is (it is about the environment, not
    about one field's value) and start-up reports it in one line.
    """


def env_or_file(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of variable ``name``, or the contents of the file named by ``name``_FILE.

    None when neither is set (an empty NAME_FILE counts as unset). The same rule as
    studies.db.engine.database_url_from_env, without importing the database layer here.
    """
    environ = os.environ if environ is None else environ
    path = environ.get(f"{name}_FILE") or ""
    if not path:
        return environ.get(name)
    if environ.get(name):
        raise SecretFileError(f"both {name} and {name}_FILE are set: set only one of them")
    try:
        with open(path, encoding="utf-8") as handle:
            value = handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SecretFileError(f"{name}_FILE={path}: cannot read the file: {reason}") from None
    if not value:
        raise SecretFileError(f"{name}_FILE={path}: the file is empty")
    return value


def _default_database_url() -> str:
    # Same rule as studies.db.database_url_from_env, without importing the database layer here.
    return env_or_file("ADAMOD_LAB_DATABASE_URL") or DEFAULT_DATABASE_URL


class Settings(BaseSettings):
    """Everything the API server can be told, from the environment or as keyword arguments."""

    model_config = SettingsConfigDict(env_prefix="ADAMOD_LAB_", extra="ignore")

    database_url: str = Field(
        default_factory=_default_database_url,
        description="SQLAlchemy URL of the one database (SQLite file or PostgreSQL via psycopg).",
    )
    api_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        repr=False,
        description="Comma-separated bearer tokens; when set, mutating routes require one.",
    )
    protect_reads: bool = Field(
        default=False, description="Also require a token on read routes (when tokens are set)."
    )
    host: str = Field(default="127.0.0.1", description="Interface to bind; loopback by default.")
    port: int = Field(default=8000, ge=0, le=65535)
    max_trials: int = Field(default=5000, ge=1, description="Largest grid a study may have.")
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="Largest request body.")
    db_wait_seconds: float = Field(
        default=60.0, ge=0, description="How long start-up waits for the database to come up."
    )
    report_cache_size: int = Field(default=16, ge=0, description="Reports kept in memory.")
    allow_no_auth: bool = Field(
        default=False,
        description="Serve beyond loopback without tokens anyway (behind a proxy that checks).",
    )

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: Any) -> Any:
        # ADAMOD_LAB_X_FILE stands for ADAMOD_LAB_X; a value given as an argument (the command
        # line's --database-url) wins over the file, as it does over the variable.
        if not isinstance(data, dict):
            return data
        for field in SECRET_FILE_FIELDS:
            name = f"ADAMOD_LAB_{field.upper()}"
            if not os.environ.get(f"{name}_FILE"):
                continue
            if field in data and name not in os.environ:
                continue
            data = {**data, field: env_or_file(name)}
        return data

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        # A comma-separated string in the environment; blanks around commas are ignored. An
        # empty string means no tokens (auth off), as an unset variable does; a value that is
        # only blanks and commas is a mistake (a template left unfilled), and switching auth off
        # because of it would open every mutating route, so it is refused.
        if isinstance(value, str):
            if value == "":
                return []
            tokens = [token.strip() for token in value.split(",") if token.strip()]
            if not tokens:
                raise ValueError(
                    "holds only blanks and commas: give at least one token, or leave the "
                    "variable unset or empty to run without authentication"
                )
            return tokens
        return value

    @field_validator("database_url")
    @classmethod
    def _non_empty_url(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("database_url must not be empty")
        return value.strip()


def is_loopback(host: str) -> bool:
    """True when ``host`` is only reachable from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


def exposure_problem(settings: Settings) -> str | None:
    """Why the server must not start as configured: beyond loopback with no tokens; else None.

    Anyone who can reach such a server could submit and cancel studies; say how to fix it.
    """
    if settings.api_tokens or settings.allow_no_auth or is_loopback(settings.host):
        return None
    return (
        f"refusing to serve on {settings.host} without API tokens: anyone who can reach it "
        "could submit and cancel studies. Set ADAMOD_LAB_API_TOKENS (comma-separated bearer "
        "tokens), bind to 127.0.0.1, or pass --allow-no-auth (env ADAMOD_LAB_ALLOW_NO_AUTH=1) "
        "when something in front of it checks who calls"
    )

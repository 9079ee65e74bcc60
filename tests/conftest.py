"""Shared fixtures: real SQLite files and real, throw-away PostgreSQL databases.

Each PostgreSQL test gets a database of its own, created on the server at 127.0.0.1:5432 (user
postgres, trust auth) and dropped afterwards, so tests never see each other's rows. Where the server
is unreachable the PostgreSQL tests skip locally, but fail under CI (CI=true), which starts it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "ADAMOD_LAB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _admin_connection():  # type: ignore[no-untyped-def]
    import psycopg

    dsn = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(dsn, autocommit=True, connect_timeout=5)


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A SQLite database file in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'adamod_lab.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped when the test ends."""
    try:
        admin = _admin_connection()
    except Exception as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    name = f"adamod_lab_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with _admin_connection() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str:  # type: ignore[no-untyped-def]
    """Runs the test once on a SQLite file and once on a fresh PostgreSQL database."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return request.getfixturevalue(fixture)

"""Throw-away PostgreSQL databases for tests, on the server at 127.0.0.1:5432 (trust auth).

Where the server is unreachable, tests that need it skip locally but fail under CI (CI=true), whose
.ci/run starts the server first.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "ADAMOD_LAB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def admin_connection():  # type: ignore[no-untyped-def]
    """An autocommit psycopg connection to the admin database."""
    import psycopg

    dsn = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(dsn, autocommit=True, connect_timeout=5)


@contextmanager
def throwaway_postgres_database(prefix: str = "adamod_lab_test") -> Iterator[str]:
    """Creates a fresh database, yields its SQLAlchemy URL, and drops it (with its connections)."""
    try:
        admin = admin_connection()
    except Exception as exc:  # any connection failure means "no server"
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin_connection() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

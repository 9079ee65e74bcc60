"""Shared fixtures: real SQLite files and real, throw-away PostgreSQL databases.

Each PostgreSQL test gets a database of its own (see tests/databases.py), dropped afterwards, so
tests never see each other's rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.databases import throwaway_postgres_database


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A SQLite database file in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'adamod_lab.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped when the test ends."""
    with throwaway_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str:  # type: ignore[no-untyped-def]
    """Runs the test once on a SQLite file and once on a fresh PostgreSQL database."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return request.getfixturevalue(fixture)

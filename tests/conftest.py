"""Shared fixtures: real SQLite files and real, throw-away PostgreSQL databases.

Each PostgreSQL test gets a database of its own (see tests/databases.py), dropped afterwards, so
tests never see each other's rows.
"""

from __future__ import annotations

import os
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


@pytest.fixture(autouse=True)
def _lab_environment_is_left_as_found() -> Iterator[None]:
    """Fails the test that changes an ADAMOD_LAB_* variable of this process and leaves it so.

    Code run in-process (a Slurm task, a CLI entry point) may edit os.environ; a leak would
    otherwise surface as unrelated failures in whichever tests run later.
    """
    before = {k: v for k, v in os.environ.items() if k.startswith("ADAMOD_LAB_")}
    yield
    after = {k: v for k, v in os.environ.items() if k.startswith("ADAMOD_LAB_")}
    if after != before:
        changed = sorted(set(before.items()) ^ set(after.items()))
        os.environ.update(before)
        for name in set(after) - set(before):
            del os.environ[name]
        pytest.fail(f"the test left ADAMOD_LAB_* variables changed: {changed}")

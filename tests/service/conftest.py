"""Live API servers for the service tests: real uvicorn subprocesses on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import create_engine, inspect, text

from service.processes import running_server
from tests.databases import throwaway_postgres_database

TOKEN = "test-token-0123456789"
OTHER_TOKEN = "second-token"


@dataclass
class Api:
    """A running server: its base URL, its database URL, and an authenticated client."""

    url: str
    database_url: str
    client: httpx.Client


def row_counts(database_url: str) -> dict[str, int]:
    """Rows in every table of the database (ours and Optuna's): the 'unchanged' check."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return {
                table: int(connection.execute(text(f'SELECT COUNT(*) FROM "{table}"')).scalar())
                for table in inspect(connection).get_table_names()
            }
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def module_postgres_url() -> Iterator[str]:
    """A PostgreSQL database shared by one test module, dropped afterwards."""
    with throwaway_postgres_database("adamod_lab_svc") as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(request, tmp_path_factory) -> Iterator[Api]:  # type: ignore[no-untyped-def]
    """A server with two tokens and max_trials=60, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        database_url = f"sqlite:///{tmp_path_factory.mktemp('api') / 'lab.db'}"
    else:
        database_url = request.getfixturevalue("module_postgres_url")
    log = str(tmp_path_factory.mktemp("log") / "server.log")
    env = {
        "ADAMOD_LAB_API_TOKENS": f"{TOKEN}, {OTHER_TOKEN}",
        "ADAMOD_LAB_MAX_TRIALS": "60",
        "ADAMOD_LAB_MAX_BODY_BYTES": "20000",
    }
    with running_server(database_url, env=env, log_path=log) as url:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            yield Api(url=url, database_url=database_url, client=client)

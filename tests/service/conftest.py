"""Live API servers for the service tests: real uvicorn subprocesses on free loopback ports."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import create_engine, inspect, text

from service.processes import running_server

TOKEN = "test-token-0123456789"
OTHER_TOKEN = "second-token"
ADMIN_URL = os.environ.get(
    "ADAMOD_LAB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


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


def _admin():  # type: ignore[no-untyped-def]
    import psycopg

    dsn = ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(dsn, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="module")
def module_postgres_url() -> Iterator[str]:
    """A PostgreSQL database shared by one test module, dropped afterwards."""
    try:
        admin = _admin()
    except Exception as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {ADMIN_URL}: {exc}")
    name = f"adamod_lab_svc_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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

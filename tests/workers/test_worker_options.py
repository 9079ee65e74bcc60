"""WorkerOptions' defaults that depend on the database, and their checks."""

from __future__ import annotations

import pytest

from workers.__main__ import build_parser
from workers.worker import SERVER_POLL_S, SQLITE_POLL_S, WorkerOptions


def test_idle_poll_defaults_to_the_databases_and_a_given_one_holds() -> None:
    assert SQLITE_POLL_S < SERVER_POLL_S
    assert build_parser().parse_args([]).poll_interval is None
    assert WorkerOptions(database_url="sqlite:////tmp/lab.db").idle_poll_s == SQLITE_POLL_S
    server = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    assert WorkerOptions(database_url=server).idle_poll_s == SERVER_POLL_S
    assert WorkerOptions(database_url=server, poll_interval=0.05).idle_poll_s == 0.05
    assert WorkerOptions(database_url="sqlite:///x.db", poll_interval=0.0).idle_poll_s == 0.0


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_bad_poll_interval_names_the_flag(bad: float) -> None:
    with pytest.raises(ValueError, match="--poll-interval"):
        WorkerOptions(database_url="sqlite:///x.db", poll_interval=bad).validate()

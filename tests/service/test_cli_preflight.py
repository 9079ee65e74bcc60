"""What `serve` and `up` check before starting: exposure without tokens, the port, the database."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cli import main
from service.cli_preflight import database_problem, driver_message, port_problem
from service.settings import Settings, exposure_problem, is_loopback


@pytest.fixture
def listening() -> Iterator[tuple[str, int]]:
    """A real socket listening on a loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield "127.0.0.1", sock.getsockname()[1]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("lab.example", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_beyond_loopback_needs_tokens_or_an_explicit_opt_out() -> None:
    problem = exposure_problem(Settings(host="0.0.0.0", api_tokens=[]))
    assert problem is not None and "ADAMOD_LAB_API_TOKENS" in problem
    assert "--allow-no-auth" in problem
    assert exposure_problem(Settings(host="0.0.0.0", api_tokens=["t"])) is None
    assert exposure_problem(Settings(host="0.0.0.0", allow_no_auth=True)) is None
    assert exposure_problem(Settings(host="127.0.0.1")) is None


def test_serve_on_every_interface_without_tokens_refuses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ADAMOD_LAB_API_TOKENS", raising=False)
    monkeypatch.delenv("ADAMOD_LAB_ALLOW_NO_AUTH", raising=False)
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    with pytest.raises(SystemExit, match=r"refusing to serve on 0\.0\.0\.0 without API tokens"):
        main(["serve", "--host", "0.0.0.0", "--database-url", url])
    assert not (tmp_path / "lab.db").exists()  # refused before anything was opened


def test_serve_and_up_name_a_port_in_use(listening: tuple[str, int], tmp_path: Path) -> None:
    host, port = listening
    problem = port_problem(host, port)
    assert problem is not None and f"port {port} on {host} is already in use" in problem
    assert port_problem("0.0.0.0", port) is not None  # every interface includes loopback
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    with pytest.raises(SystemExit, match=f"port {port} on 127.0.0.1 is already in use"):
        main(["serve", "--port", str(port), "--database-url", url])


def test_a_free_port_is_free() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert port_problem("127.0.0.1", port) is None


def test_database_problem_quotes_postgresqls_own_words(postgres_url: str) -> None:
    assert database_problem(postgres_url) is None
    missing = postgres_url.rsplit("/", 1)[0] + "/adamod_lab_no_such_db"
    problem = database_problem(missing, wait_s=30)  # a refusal is reported at once, not retried
    assert problem is not None
    assert 'database "adamod_lab_no_such_db" does not exist' in problem
    # serve's way: a refusal is waited out too (the database may be created beside it), then
    # named; a short wait here, so the test measures the retrying, not the 30 s above.
    started = time.monotonic()
    waited = database_problem(missing, wait_s=1.0, wait_on_refusal=True)
    assert waited is not None and "does not exist" in waited
    assert time.monotonic() - started >= 0.5


def test_database_problem_on_sqlite(tmp_path: Path) -> None:
    assert database_problem(f"sqlite:///{tmp_path / 'ok.db'}") is None
    blocker = tmp_path / "file"
    blocker.write_text("")
    problem = database_problem(f"sqlite:///{blocker / 'sub' / 'lab.db'}")
    assert problem is not None and "cannot create the directory" in problem
    assert "unsupported backend 'mysql'" in str(database_problem("mysql://u@h/db"))


def test_serve_names_the_database_error(postgres_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ADAMOD_LAB_DB_WAIT_SECONDS", "0")
    missing = postgres_url.rsplit("/", 1)[0] + "/adamod_lab_no_such_db"
    with pytest.raises(SystemExit, match='database "adamod_lab_no_such_db" does not exist'):
        main(["serve", "--database-url", missing, "--port", "0"])


def test_driver_message_is_the_drivers_text_on_one_line() -> None:
    cause = ValueError("first line\n\tsecond   line")
    wrapper = RuntimeError("wrapped")
    wrapper.__cause__ = cause
    assert driver_message(wrapper) == "first line second line"

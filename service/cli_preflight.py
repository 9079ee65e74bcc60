"""Checks `up` and `serve` make before starting anything: is the port free, does the database open.

Without them a port held by another server looked like success (its /healthz answered while our
API failed to bind), and a database that cannot be opened showed only an exception's type name
while start-up retried for a minute.
"""

from __future__ import annotations

import errno
import re
import socket
import sys
import time

from sqlalchemy.engine import make_url


def port_problem(host: str, port: int) -> str | None:
    """Why an API could not listen on ``host``:``port`` now (taken, bad address); None if it can.

    Binds with SO_REUSEADDR, as uvicorn does, so a port left in TIME_WAIT counts as free while one
    that another process listens on (on this address or on every interface) does not.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve the host {host!r}: {exc.strerror}"
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return (
                        f"port {port} on {host} is already in use (another server, perhaps "
                        f"another `adamod-lab up`); stop it or choose another --port"
                    )
                if exc.errno == errno.EACCES:
                    return f"port {port} on {host} needs privileges; choose a port >= 1024"
                return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def driver_message(exc: BaseException) -> str:
    """The database driver's own words for ``exc`` on one line, without SQLAlchemy's wrapping."""
    original = getattr(exc, "orig", None) or exc.__cause__ or exc
    text = str(original) or type(original).__name__
    return re.sub(r"\s+", " ", text).strip()


def _permanent(message: str) -> bool:
    # The server answered and refused (no such database, bad password, no such role): waiting
    # cannot help. A refused or timed-out connection may be a server that is still starting.
    return "FATAL:" in message or "unable to open database file" in message


def safe_url(url: str) -> str:
    """``url`` with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "the configured database URL"


def database_problem(url: str, wait_s: float = 0.0, *, wait_on_refusal: bool = False) -> str | None:
    """Why ``url`` cannot be opened (one connection, SELECT 1), or None when it can.

    A connection that is refused is retried, with backoff, for up to ``wait_s`` seconds (a
    database container still starting); an answer that refuses us (no such database, wrong
    password) is reported at once, unless ``wait_on_refusal``: a server started beside its
    database (compose, Kubernetes) may ask before the database is created, so `serve` waits for
    that too, saying why on stderr each time the reason changes.
    """
    from sqlalchemy import text

    from studies.db import Database

    try:
        db = Database(url, pre_ping=False)
    except ValueError as exc:
        return str(exc)
    except OSError as exc:  # the SQLite file's directory cannot be created
        return f"cannot create the directory of {safe_url(url)}: {exc.strerror}"
    deadline = time.monotonic() + wait_s
    delay = 0.2
    last_message = ""
    try:
        while True:
            try:
                with db.engine.connect() as connection:
                    connection.execute(text("SELECT 1"))
                return None
            except Exception as exc:
                message = driver_message(exc)
                problem = f"cannot open the database {safe_url(url)}: {message}"
                if _permanent(message) and not wait_on_refusal:
                    return problem
                if time.monotonic() + delay > deadline:
                    return (
                        f"database not ready after {wait_s:.0f}s: {problem}" if wait_s else problem
                    )
                if message != last_message:
                    print(f"database not ready ({message}); retrying", file=sys.stderr)
                    last_message = message
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
    finally:
        db.dispose()

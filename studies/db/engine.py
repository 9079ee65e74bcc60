"""The database handle: one SQLAlchemy engine per URL, sessions, programmatic Alembic migrations.

SQLite is the embedded default (WAL, busy timeout, foreign keys, explicit BEGIN so that writers can
take the lock up front with BEGIN IMMEDIATE); PostgreSQL is reached through psycopg 3.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_S",
    "DEFAULT_LOCK_TIMEOUT_S",
    "DEFAULT_STATEMENT_TIMEOUT_S",
    "ENV_DATABASE_URL",
    "VERSION_TABLE",
    "Database",
    "database_url_from_env",
    "normalize_database_url",
]

ENV_DATABASE_URL = "ADAMOD_LAB_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///./adamod_lab.db"
# Optuna's RDBStorage keeps its own "alembic_version" table in the same database.
VERSION_TABLE = "adamod_lab_alembic_version"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# PostgreSQL session limits, so that one stuck process cannot stall the others: a lock wait ends
# after LOCK_TIMEOUT_S (and is retried), a runaway statement after STATEMENT_TIMEOUT_S, and a
# process frozen inside a transaction (SIGSTOP, a hung thread) loses it, and its row locks, after
# IDLE_IN_TRANSACTION_TIMEOUT_S.
DEFAULT_LOCK_TIMEOUT_S = 5.0
DEFAULT_STATEMENT_TIMEOUT_S = 60.0
DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_S = 60.0
# Any constant works; it only has to be the same for every process migrating the same database.
_MIGRATION_LOCK_KEY = 0x4144414D4F44


def database_url_from_env() -> str:
    """The database URL from ADAMOD_LAB_DATABASE_URL, or from the file that
    ADAMOD_LAB_DATABASE_URL_FILE names (a Docker secret), or a SQLite file in the working directory.

    The rule of service.settings.env_or_file (kept import-light there); raises ValueError naming
    the variable for an unreadable or empty file, or when both variables are set.
    """
    path = os.environ.get(f"{ENV_DATABASE_URL}_FILE") or ""
    if not path:
        return os.environ.get(ENV_DATABASE_URL) or DEFAULT_DATABASE_URL
    if os.environ.get(ENV_DATABASE_URL):
        raise ValueError(
            f"both {ENV_DATABASE_URL} and {ENV_DATABASE_URL}_FILE are set: set only one of them"
        )
    try:
        url = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(
            f"{ENV_DATABASE_URL}_FILE={path}: cannot read the file: {reason}"
        ) from None
    if not url:
        raise ValueError(f"{ENV_DATABASE_URL}_FILE={path}: the file is empty")
    return url


def normalize_database_url(url: str) -> str:
    """Maps `postgres://` and `postgresql://` to psycopg 3; raises ValueError for other backends."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("database url: must be a non-empty string")
    url = url.strip()
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ValueError(f"database url: cannot parse {url!r}: {exc}") from None
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise ValueError(
            f"database url: unsupported backend {parsed.drivername!r} "
            "(use sqlite:///FILE or postgresql://USER@HOST/DB)"
        )
    return url


_SESSION_TIMEOUTS = ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout")


def _milliseconds(name: str, seconds: float | None) -> int:
    """A timeout in whole milliseconds for a PostgreSQL setting; None or 0 means no limit (0)."""
    if seconds is None:
        return 0
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
        raise ValueError(f"{name}: must be a number of seconds >= 0 or None, got {seconds!r}")
    if not math.isfinite(seconds):
        return 0
    return max(1, round(seconds * 1000)) if seconds > 0 else 0


def postgres_session_options(
    lock_timeout_s: float | None,
    statement_timeout_s: float | None,
    idle_in_transaction_timeout_s: float | None,
) -> str:
    """The libpq `options` string that sets the session timeouts on every new connection."""
    settings = {
        "lock_timeout": _milliseconds("lock_timeout_s", lock_timeout_s),
        "statement_timeout": _milliseconds("statement_timeout_s", statement_timeout_s),
        "idle_in_transaction_session_timeout": _milliseconds(
            "idle_in_transaction_timeout_s", idle_in_transaction_timeout_s
        ),
    }
    return " ".join(f"-c {name}={value}" for name, value in settings.items())


def _json_default(value: Any) -> Any:
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def json_dumps(value: Any) -> str:
    """Strict JSON for the database: non-finite floats are a bug here (PostgreSQL rejects them)."""
    return json.dumps(value, allow_nan=False, separators=(",", ":"), default=_json_default)


def _expanded(text: str) -> str:
    # "1e+25" -> "10000000000000000000000000.0": the same digits, written out, with a fraction.
    return f"{Decimal(text):f}.0"


def _mark_whole_floats(value: Any, marks: dict[str, str], prefix: str) -> Any:
    """``value`` with every float that repr writes as ``1e+25`` replaced by a unique marker."""
    if isinstance(value, float):
        text = repr(value)
        if "e+" not in text:
            return value
        mark = f"{prefix}{len(marks)}"
        marks[mark] = _expanded(text)
        return mark
    if isinstance(value, dict):
        return {key: _mark_whole_floats(item, marks, prefix) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_mark_whole_floats(item, marks, prefix) for item in value]
    return value


def postgres_json_dumps(value: Any) -> str:
    """json_dumps for JSONB columns, which keep the float-ness of the floats sent.

    JSONB stores numbers as `numeric` and writes 1e25 back as 10000000000000000000000000, which
    Python reads as an int: every float that repr writes with an exponent ``e+`` (whole numbers
    from 1e16 up) would come back as an int from PostgreSQL, and as a float from SQLite. Written
    out with a fraction ("10000000000000000000000000.0", the same decimal digits as repr's),
    numeric keeps the scale and JSONB hands back a float of the same value; numerically equal to
    the bare integer, so JSONB comparisons with rows stored before are unchanged. Everything else
    is json_dumps's text (the usual case, no 'e+' anywhere in it, costs a substring search).
    -0.0 reads back as 0.0: numeric has no negative zero.
    """
    text = json_dumps(value)
    if "e+" not in text:
        return text
    marks: dict[str, str] = {}
    prefix = f"\x00float-{uuid.uuid4().hex}-"
    text = json_dumps(_mark_whole_floats(value, marks, prefix))
    for mark, number in marks.items():
        text = text.replace(json.dumps(mark), number)
    return text


def finite_or_none(value: float | None) -> float | None:
    """A float that JSON and SQL can store: NaN and infinities become None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class Database:
    """One database (SQLite file or PostgreSQL) with its engine, sessions and migrations."""

    def __init__(
        self,
        url: str,
        *,
        pre_ping: bool = True,
        lock_timeout_s: float | None = DEFAULT_LOCK_TIMEOUT_S,
        statement_timeout_s: float | None = DEFAULT_STATEMENT_TIMEOUT_S,
        idle_in_transaction_timeout_s: float | None = DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_S,
    ) -> None:
        """`pre_ping`: test pooled PostgreSQL connections before use (a round trip per session);
        callers that retry disconnects themselves, like workers, turn it off.

        The three timeouts (seconds; None or 0: no limit) apply to every PostgreSQL connection,
        so that a process frozen while holding a row lock cannot stall the others for long.
        SQLite ignores them (its busy timeout plays the part of the lock timeout).
        """
        self.url = normalize_database_url(url)
        backend = make_url(self.url).get_backend_name()
        self.is_sqlite = backend == "sqlite"
        self.is_postgres = backend == "postgresql"
        if self.is_sqlite:
            self._make_sqlite_directory()
            self.engine: Engine = create_engine(
                self.url,
                json_serializer=json_dumps,
                # Sessions may be used from the worker's heartbeat thread.
                connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            )
            _configure_sqlite(self.engine)
        else:
            self.engine = create_engine(
                self.url,
                json_serializer=postgres_json_dumps,
                # A restarted server leaves dead connections in the pool: test them before use.
                pool_pre_ping=pre_ping,
                pool_size=5,
                max_overflow=5,
                connect_args={
                    "connect_timeout": 10,
                    "options": postgres_session_options(
                        lock_timeout_s, statement_timeout_s, idle_in_transaction_timeout_s
                    ),
                },
            )
        # Writers on SQLite take the write lock when the transaction begins; reading first and
        # upgrading later can fail at once with SQLITE_BUSY instead of waiting.
        self._writer_bind = (
            self.engine.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            if self.is_sqlite
            else self.engine
        )
        self._sessions = sessionmaker(bind=self._writer_bind, expire_on_commit=False)
        self._read_sessions = sessionmaker(bind=self.engine, expire_on_commit=False)

    def _make_sqlite_directory(self) -> None:
        database = make_url(self.url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"Database({make_url(self.url).render_as_string(hide_password=True)!r})"

    @contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any exception."""
        factory = self._read_sessions if readonly else self._sessions
        with factory() as session:
            try:
                yield session
                # A read-only session just closes: its transaction ends without expiring the
                # objects it loaded, so callers can still read them.
                if not readonly:
                    session.commit()
            except BaseException:
                session.rollback()
                raise

    def migrate(self) -> None:
        """Brings the schema to the newest Alembic revision, and creates Optuna's tables too.

        Safe to call from many processes at once: PostgreSQL serializes them with an advisory
        lock, SQLite with its write lock.
        """
        from studies.db.migrations import upgrade_head

        if self.schema_is_current():
            return  # the common case for every worker after the first: no locks, no DDL
        with self._writer_bind.connect() as connection:
            if self.is_postgres:
                # DDL may wait for locks and run long, and the advisory lock waits for another
                # process's whole migration: no session limits on this connection until done.
                for setting in _SESSION_TIMEOUTS:
                    connection.execute(text(f"SET {setting} = 0"))
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
                connection.commit()
            try:
                with connection.begin():
                    upgrade_head(connection)
                # Optuna creating its tables from two processes at once races on PostgreSQL's
                # catalog; doing it here, under the same lock, makes start-up safe.
                from studies.db.optuna_schema import init_optuna_schema

                init_optuna_schema(self.url)
            finally:
                if self.is_postgres:
                    connection.execute(
                        text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_KEY}
                    )
                    # Back to the limits this connection was opened with, before it is pooled.
                    connection.execute(text("RESET ALL"))
                    connection.commit()

    def schema_is_current(self) -> bool:
        """True when our tables are at the newest revision and Optuna's tables exist."""
        from studies.db.migrations import HEAD_REVISION

        try:
            with self.engine.connect() as connection:
                ours = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
                connection.execute(text("SELECT version_num FROM alembic_version")).all()
        except Exception:
            return False  # missing tables: migrate
        return [row[0] for row in ours] == [HEAD_REVISION]

    def ping(self) -> None:
        """Raises when the database cannot be reached (for health checks)."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        """Closes every pooled connection (call before forking, or when done)."""
        self.engine.dispose()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own handling defers it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL with synchronous=NORMAL is durable across application crashes, and much faster.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(connection.get_execution_options().get("sqlite_begin", "BEGIN"))

"""Retrying database calls with exponential backoff: a database restart must not kill a worker."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["TRANSIENT_SQLSTATES", "RetryGaveUp", "is_transient", "with_retries"]

T = TypeVar("T")
log = logging.getLogger("workers")


class RetryGaveUp(Exception):
    """The database stayed unreachable for longer than the retry budget."""


# PostgreSQL errors that the same call, run again, normally gets past: lock_timeout expired
# (another session, perhaps a frozen worker, holds the row), deadlock victim, serialization failure.
TRANSIENT_SQLSTATES = frozenset({"55P03", "40P01", "40001"})


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error wrapped by SQLAlchemy (psycopg: `.sqlstate`)."""
    original = getattr(exc, "orig", None)
    state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    return state if isinstance(state, str) else None


def is_transient(exc: BaseException) -> bool:
    """True for errors that a reconnect can fix: lost connections, locks, server restarts."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, TimeoutError

    if isinstance(exc, OperationalError | InterfaceError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError) and _sqlstate(exc) in TRANSIENT_SQLSTATES:
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    try:
        from optuna.exceptions import StorageInternalError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, StorageInternalError)


def with_retries(
    call: Callable[[], T],
    *,
    what: str,
    give_up_after_s: float = 300.0,
    first_delay_s: float = 0.2,
    max_delay_s: float = 15.0,
    stop: threading.Event | None = None,
) -> T:
    """Runs `call`, retrying transient database errors with jittered exponential backoff.

    Raises RetryGaveUp after `give_up_after_s` of consecutive failures, or as soon as `stop` is
    set while waiting; other exceptions propagate at once.
    """
    started = time.monotonic()
    delay = first_delay_s
    attempt = 0
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempt += 1
            elapsed = time.monotonic() - started
            if elapsed >= give_up_after_s:
                raise RetryGaveUp(f"{what}: database unreachable for {elapsed:.0f} s") from exc
            log.warning(
                "%s failed (attempt %d, retrying in %.1f s): %s",
                what,
                attempt,
                delay,
                str(exc).splitlines()[0][:200],
            )
            sleep_for = delay * (0.5 + random.random() / 2)
            if stop is not None:
                if stop.wait(sleep_for):
                    raise RetryGaveUp(f"{what}: stopped while retrying") from exc
            else:
                time.sleep(sleep_for)
            delay = min(max_delay_s, delay * 2)

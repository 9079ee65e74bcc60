"""How an idle worker waits for work: a wake-up on a SQLite file's writes, else a plain poll.

An idle worker claims every --poll-interval seconds. On a SQLite file (the embedded default,
every process on one machine) a study submitted just after a claim found nothing waited up to
that interval, 0.2 s, a tenth of the quick preset's whole packed run. Any commit to the file
(WAL mode) changes the write-ahead log's size or modification time, which a stat of two files
shows for a few microseconds: the worker checks them every WATCH_S while it waits and claims as
soon as they change, with the interval left as the longest wait. PostgreSQL keeps the plain
poll (LISTEN/NOTIFY would be its analogue).

A commit the check cannot see (one within the same clock tick as the previous, with the log
rewritten in place at the same size) only means the worker claims at the end of the interval,
as it did before.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from sqlalchemy.engine import make_url

__all__ = ["WATCH_S", "IdleWait", "sqlite_file"]

WATCH_S = 0.01  # seconds between two looks at the SQLite file while idle


def sqlite_file(database_url: str) -> Path | None:
    """The database file of a SQLite URL (None for another database or an in-memory one)."""
    try:
        url = make_url(database_url)
    except Exception:  # the Database itself reports a malformed URL
        return None
    if url.get_backend_name() != "sqlite":
        return None
    name = url.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)


class IdleWait:
    """`wait(timeout)`: until `timeout` seconds pass, `stop` is set, or (SQLite) the database
    file is written to, whichever comes first."""

    def __init__(self, database_url: str, stop: threading.Event) -> None:
        self.stop = stop
        database = sqlite_file(database_url)
        self._paths = () if database is None else (database, Path(f"{database}-wal"))

    def _signature(self) -> tuple[tuple[int, int] | None, ...]:
        marks: list[tuple[int, int] | None] = []
        for path in self._paths:
            try:
                st = os.stat(path)
            except OSError:
                marks.append(None)  # not there (yet, or any more): a change when it appears
            else:
                marks.append((st.st_mtime_ns, st.st_size))
        return tuple(marks)

    def wait(self, timeout: float) -> bool:
        """Waits as described; True when the database changed (or stop was set) before the
        timeout, False when the whole timeout passed."""
        if not self._paths:
            return self.stop.wait(timeout)
        deadline = time.monotonic() + timeout
        before = self._signature()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.stop.wait(min(WATCH_S, left)):
                return True
            if self._signature() != before:
                return True

"""The lease heartbeat: one small context-managed thread per worker that renews the lease of
whatever trial the worker is running (one thread for the worker's life, not one per trial)."""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

from studies.db.engine import Database
from studies.db.queue import ClaimedTrial, renew_lease

__all__ = ["Heartbeat"]

log = logging.getLogger("workers")


class Heartbeat:
    """Renews the tracked claim's lease every `interval_s`; `lost` is set when the lease was lost
    or the study cancelled (the trial should stop)."""

    def __init__(self, db: Database, *, interval_s: float) -> None:
        self.db = db
        self.interval_s = interval_s
        self.lost = threading.Event()
        self._claim: ClaimedTrial | None = None
        self._since = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def track(self, claim: ClaimedTrial | None) -> None:
        """Starts renewing `claim` (None: stop renewing); clears `lost`."""
        with self._lock:
            self._claim = claim
            self._since = time.monotonic()
            self.lost.clear()

    def _run(self) -> None:
        tick = min(self.interval_s, 1.0)
        while not self._stop.wait(tick):
            with self._lock:
                claim = self._claim
                due = claim is not None and time.monotonic() - self._since >= self.interval_s
            if not due or claim is None:
                continue
            try:
                alive = renew_lease(self.db, claim)
            except Exception as exc:
                # A database outage: keep trying; the lease survives until it expires.
                log.warning("trial %d: heartbeat failed: %s", claim.trial_id, exc)
                continue
            with self._lock:
                if self._claim is not claim:
                    continue  # the trial ended meanwhile
                self._since = time.monotonic()
                if not alive:
                    log.info("trial %d: lease lost or study cancelled", claim.trial_id)
                    self.lost.set()
                    self._claim = None

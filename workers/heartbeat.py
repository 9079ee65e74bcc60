"""The lease heartbeat: a small context-managed thread that renews the current trial's lease."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from studies.db.engine import Database
from studies.db.queue import ClaimedTrial, renew_lease

__all__ = ["Heartbeat"]

log = logging.getLogger("workers")


class Heartbeat:
    """Renews a claim's lease every `interval_s` until the block exits; `lost` is set when the
    lease was lost or the study cancelled (the trial should stop)."""

    def __init__(self, db: Database, claim: ClaimedTrial, *, interval_s: float) -> None:
        self.db = db
        self.claim = claim
        self.interval_s = interval_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{claim.trial_id}", daemon=True
        )

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

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if not renew_lease(self.db, self.claim):
                    log.info("trial %d: lease lost or study cancelled", self.claim.trial_id)
                    self.lost.set()
                    return
            except Exception as exc:
                # A database outage: keep trying; the lease survives until it expires.
                log.warning("trial %d: heartbeat failed: %s", self.claim.trial_id, exc)

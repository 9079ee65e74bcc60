"""The lease heartbeat: one small context-managed thread per worker that renews the leases of
whatever the worker is running, one trial or every member of a pack, in one UPDATE per beat
(one thread for the worker's life, not one per trial).

Given the worker's registry identity it also beats the worker registry each interval, idle or
not (GET /workers: live, and which trials it holds), and now and then ends the expired leases of
cancelled studies (studies.db.registry.end_cancelled_expired), so that a cancelled study whose
worker was killed still finishes."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from types import TracebackType

from studies.db.engine import Database
from studies.db.queue import ClaimedTrial, renew_leases
from studies.db.registry import WorkerIdentity, beat, end_cancelled_expired, reregister

__all__ = ["DEFAULT_CANCEL_SWEEP_S", "Heartbeat"]

log = logging.getLogger("workers")
DEFAULT_CANCEL_SWEEP_S = 30.0


class Heartbeat:
    """Renews the tracked claims' leases every `interval_s`. A claim whose lease was lost or
    whose study was cancelled is no longer renewed: its id joins `lost_ids()` and `lost` is set
    (that trial should stop; the other members of its pack carry on).

    `registration`: the worker's registry row, beaten every `interval_s` with the tracked trial
    ids ("stopping" once `stopping` is set); with it, `end_cancelled_expired` runs every
    `cancel_sweep_s`. Without it the heartbeat only renews leases, as before."""

    def __init__(
        self,
        db: Database,
        *,
        interval_s: float,
        registration: WorkerIdentity | None = None,
        stopping: threading.Event | None = None,
        cancel_sweep_s: float = DEFAULT_CANCEL_SWEEP_S,
    ) -> None:
        self.db = db
        self.interval_s = interval_s
        self.registration = registration
        self._stopping = stopping
        self._cancel_sweep_s = cancel_sweep_s
        self._last_beat = time.monotonic()  # registered just now
        self._last_cancel_sweep = -math.inf
        self.lost = threading.Event()
        self._claims: tuple[ClaimedTrial, ...] = ()
        self._lost: set[int] = set()
        self._generation = 0  # which track() call the renewal in flight belongs to
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

    def track(self, claims: ClaimedTrial | Sequence[ClaimedTrial] | None) -> None:
        """Starts renewing `claims`, one trial or a pack (None: stop renewing); clears `lost`."""
        if claims is None:
            tracked: tuple[ClaimedTrial, ...] = ()
        elif isinstance(claims, ClaimedTrial):
            tracked = (claims,)
        else:
            tracked = tuple(claims)
        with self._lock:
            self._claims = tracked
            self._lost = set()
            self._generation += 1
            self._since = time.monotonic()
            self.lost.clear()

    def lost_ids(self) -> frozenset[int]:
        """The tracked trials whose lease was lost or whose study was cancelled."""
        with self._lock:
            return frozenset(self._lost)

    def _run(self) -> None:
        tick = min(self.interval_s, 1.0)
        while not self._stop.wait(tick):
            self._registry_tick()
            with self._lock:
                claims, generation = self._claims, self._generation
                due = bool(claims) and time.monotonic() - self._since >= self.interval_s
            if not due:
                continue
            try:
                alive = renew_leases(self.db, claims)
            except Exception as exc:
                # A database outage: keep trying; the leases survive until they expire.
                log.warning("trial %s: heartbeat failed: %s", _ids(claims), exc)
                continue
            with self._lock:
                if self._generation != generation:
                    continue  # the trial or pack ended meanwhile
                self._since = time.monotonic()
                gone = [c for c in claims if c.trial_id not in alive]
                if gone:
                    log.info("trial %s: lease lost or study cancelled", _ids(gone))
                    self._lost.update(c.trial_id for c in gone)
                    self._claims = tuple(c for c in claims if c.trial_id in alive)
                    self.lost.set()

    def _registry_tick(self) -> None:
        """Beats the registry when an interval has passed; sweeps cancelled leases when due."""
        if self.registration is None:
            return
        now = time.monotonic()
        if now - self._last_beat >= self.interval_s:
            with self._lock:
                trial_ids = [c.trial_id for c in self._claims]
            state = "stopping" if self._stopping is not None and self._stopping.is_set() else None
            try:
                if not beat(
                    self.db, self.registration.worker_id, trial_ids, state=state or "running"
                ):
                    # Pruned while this process was frozen: come back under the same id.
                    log.info("worker %s: registry row gone; registering again", self._worker())
                    reregister(self.db, self.registration, trial_ids)
                self._last_beat = now
            except Exception as exc:  # an outage: the next tick tries again
                log.warning("worker %s: registry beat failed: %s", self._worker(), exc)
        if now - self._last_cancel_sweep >= self._cancel_sweep_s:
            self._last_cancel_sweep = now
            try:
                ended = end_cancelled_expired(self.db)
                if ended:
                    log.info("ended %d expired trial(s) of cancelled studies", ended)
            except Exception as exc:
                log.warning("cancelled-lease sweep failed: %s", exc)

    def _worker(self) -> str:
        return self.registration.worker_id if self.registration is not None else "-"


def _ids(claims: Sequence[ClaimedTrial]) -> str:
    return ", ".join(str(c.trial_id) for c in claims)

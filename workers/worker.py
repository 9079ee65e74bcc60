"""The worker loop: claim → train (reporting each evaluation) → complete, with a heartbeat,
periodic requeueing of expired leases, database retries and graceful shutdown.

The worker is a supervisor: training runs in its long-lived trainer child (workers/trainer.py),
which it kills and replaces when a trial passes its time limit (budget.max_seconds,
--trial-timeout), when a cancelled or lost trial does not stop at its next evaluation, and at a
forced shutdown; a child that dies (segfault, OOM kill) costs its trial one attempt, the cause
recorded, and the worker carries on.

A claim is a lead trial and, when its workload packs and --pack-size allows, the compatible
trials claimed with it; a pack of several trains in one vectorized pass (studies.pack.run_pack),
a pack of one through studies.trial.run_trial exactly as without packs. Every member keeps its
own lease, result, Optuna trial and attempt count.

A finished pack is recorded while the next pack starts training: its members' results wait,
their leases renewed, until the next pack is claimed and sent to the trainer, then are stored
while the trainer builds and trains (storing 64 members' results and Optuna trials took 0.1 to
0.3 s on 2 busy cores, time the trainer sat idle). With nothing to claim next, at a stop, at
--max-trials and before a single trial, the results are stored at once.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from studies.checkpoints import Checkpointing, CheckpointStore
from studies.db.engine import Database
from studies.db.optuna_bridge import sync_optuna
from studies.db.packs import MAX_PACK_SIZE, claim_next_pack, extend_pack
from studies.db.queue import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    ClaimedTrial,
    WorkerInfo,
    buffer_evaluation,
    claim_next_trial,
    complete_and_claim_next,
    complete_pack,
    fail_attempt,
    queue_counts,
    record_evaluation,
    release_lease,
    requeue_expired,
)
from studies.db.reuse import find_reusable
from workers.devices import select_device
from workers.gc_freeze import freeze_long_lived_objects
from workers.heartbeat import Heartbeat
from workers.packing import PackReport, PackSizer, check_pack_size_option
from workers.retry import RetryGaveUp, with_retries
from workers.trainer import Trainer, TrainerDied, TrainerStopped, TrainingError, TrainingJob
from workers.wakeup import IdleWait

if TYPE_CHECKING:
    from studies.db.registry import WorkerIdentity
    from studies.trial import EvalPoint, TrialResult

__all__ = ["Worker", "WorkerOptions"]

log = logging.getLogger("workers")
ENV_CHECKPOINT_DIR = "ADAMOD_LAB_CHECKPOINT_DIR"
OPTUNA_SYNC_INTERVAL_S = 60.0
# A trial whose lease is lost or whose study is cancelled is told to stop at its next evaluation;
# if its code does not get there within this long, its trainer is killed.
LOST_GRACE_S = 1.0
TIMED_OUT = "timed out"
DEFAULT_CHECKPOINT_DIR = os.environ.get(ENV_CHECKPOINT_DIR, "adamod_lab_checkpoints")
DEFAULT_CHECKPOINT_SECONDS = 300.0  # long trials only: a short one finishes before its first
CHECKPOINT_FLAGS = {
    "directory": "--checkpoint-dir",
    "every_evaluations": "--checkpoint-every",
    "every_seconds": "--checkpoint-seconds",
}
LOST = "lease lost or study cancelled"


SQLITE_POLL_S = 0.2  # default idle poll on a SQLite file
SERVER_POLL_S = 1.0  # default idle poll on PostgreSQL


@dataclass
class WorkerOptions:
    """What `python -m workers` takes on its command line."""

    database_url: str
    device: str = "auto"
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    # Seconds between claims while the queue is empty; None: SQLITE_POLL_S on a SQLite file (a
    # local read costing microseconds, so a study submitted to an idle embedded lab starts
    # at once) and SERVER_POLL_S on a database server shared by many workers.
    poll_interval: float | None = None
    max_trials: int | None = None
    exit_when_idle: bool = False
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    shutdown_timeout: float = 8.0
    retry_timeout: float = 300.0
    # Evaluations closer together than this are written with the next one (or at completion).
    report_interval: float = 0.5
    # Trials trained together in one pack, at most: 1 = one at a time; None = auto (the pack
    # runner's memory estimate for the lead's config on this device).
    pack_size: int | None = None
    # Wall-clock limit per trial (None: none), on top of any budget.max_seconds in the spec: the
    # smaller one holds. A pack of K may take K times the limit (K trials' work in one process).
    trial_timeout: float | None = None
    # Where single trials save their checkpoints (a shared directory across machines), and how
    # often: every N evaluations and/or S seconds (both None: no checkpoints).
    checkpoint_dir: str = DEFAULT_CHECKPOINT_DIR
    checkpoint_every: int | None = None
    checkpoint_seconds: float | None = DEFAULT_CHECKPOINT_SECONDS
    # Claim only this study's trials, and count only its trials as work left (--exit-when-idle).
    study_id: int | None = None

    @property
    def idle_poll_s(self) -> float:
        """The poll interval in force: the one given, else the database's default."""
        if self.poll_interval is not None:
            return self.poll_interval
        return SQLITE_POLL_S if self.database_url.startswith("sqlite") else SERVER_POLL_S

    def validate(self) -> None:
        """Raises ValueError naming the command-line flag of the first bad option."""
        for flag, value, low in (
            ("--lease-seconds", self.lease_seconds, 0.1),
            ("--poll-interval", self.idle_poll_s, 0.0),
            ("--shutdown-timeout", self.shutdown_timeout, 0.0),
            ("--retry-timeout", self.retry_timeout, 0.0),
            ("--report-interval", self.report_interval, 0.0),
        ):
            if not isinstance(value, int | float) or not math.isfinite(value) or value < low:
                raise ValueError(f"{flag}: must be a number >= {low} (got {value!r})")
        if self.max_trials is not None and self.max_trials < 1:
            raise ValueError(f"--max-trials: must be >= 1 (got {self.max_trials})")
        if self.max_attempts < 1:
            raise ValueError(f"--max-attempts: must be >= 1 (got {self.max_attempts})")
        if self.study_id is not None and self.study_id < 1:
            raise ValueError(f"--study: must be a study id >= 1 (got {self.study_id})")
        timeout = self.trial_timeout
        if timeout is not None and (
            not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0
        ):
            raise ValueError(f"--trial-timeout: must be a number of seconds > 0 (got {timeout!r})")
        check_pack_size_option(self.pack_size)
        self.checkpointing("probe")  # ValueError naming the flag of a bad checkpoint option

    def checkpointing(self, name: str) -> Checkpointing | None:
        """The checkpoint policy for the trial saved as `name` (None: checkpoints are off)."""
        if self.checkpoint_every is None and self.checkpoint_seconds is None:
            return None
        try:
            return Checkpointing(
                CheckpointStore(self.checkpoint_dir),
                name,
                every_evaluations=self.checkpoint_every,
                every_seconds=self.checkpoint_seconds,
            )
        except ValueError as exc:  # "argument: why" -> "--flag: why"
            argument, _, why = str(exc).partition(": ")
            flag = CHECKPOINT_FLAGS.get(argument)
            raise ValueError(f"{flag}: {why}" if flag else str(exc)) from None


class Worker:
    """One worker process: trains one trial, or one pack of compatible trials, at a time."""

    def __init__(self, options: WorkerOptions) -> None:
        options.validate()
        self.options = options
        self.device = select_device(options.device)
        self.info = WorkerInfo(host=socket.gethostname(), pid=os.getpid(), device=self.device)
        # No pre-ping round trip per transaction: a dropped connection fails the call, the pool
        # is invalidated, and with_retries runs it again on a fresh connection.
        self.db = Database(options.database_url, pre_ping=False)
        self.shutdown = threading.Event()
        self._idle = IdleWait(options.database_url, self.shutdown)
        self.trials_run = 0
        self.sizer = PackSizer(options.pack_size, self.device)
        self.trainer = Trainer(log_level=log.getEffectiveLevel())
        # What the worker holds now: one trial, every member of a pack, or nothing.
        self._current: tuple[ClaimedTrial, ...] = ()
        # The lead's compatible trials claimed with it by _claim_lead, until _pack_for sizes the
        # pack; None when the lead came alone (from the transaction that completed a trial).
        self._mates: list[ClaimedTrial] | None = None
        # A finished pack whose results are stored while the next pack trains (_run_pack), and
        # its claims, still held (renewed, handed back at a forced stop) until then.
        self._recording: Callable[[], None] | None = None
        self._unrecorded: tuple[ClaimedTrial, ...] = ()
        self._watchdog: threading.Thread | None = None
        self._heartbeat: Heartbeat | None = None
        self._identity: WorkerIdentity | None = None  # the registration (GET /workers)
        self._sweep_interval = max(0.5, min(options.lease_seconds / 2, 30.0))
        self._last_sweep = -math.inf
        self._last_optuna_sync = time.monotonic()

    # -- plumbing -------------------------------------------------------------------------------

    def _retry(self, call, what: str, give_up_after_s: float | None = None):  # type: ignore[no-untyped-def]
        return with_retries(
            call,
            what=what,
            give_up_after_s=self.options.retry_timeout
            if give_up_after_s is None
            else give_up_after_s,
        )

    def request_stop(self, reason: str = "signal") -> None:
        """Asks the worker to stop: the current trial is handed back at its next evaluation, or
        by the watchdog after --shutdown-timeout; a second request hands it back at once."""
        if self.shutdown.is_set():
            log.info("second stop request (%s): handing back now", reason)
            self._hand_back_and_exit()
            return
        log.info("stop requested (%s)", reason)
        self.shutdown.set()
        if self._current and self._watchdog is None:
            self._watchdog = threading.Thread(
                target=self._watch, name="shutdown-watchdog", daemon=True
            )
            self._watchdog.start()

    def _watch(self) -> None:
        # Whatever is held at the deadline is handed back: the trial held at the stop request,
        # or the pack it became while being sized. Nothing held any more: the worker stopped.
        deadline = time.monotonic() + self.options.shutdown_timeout
        while time.monotonic() < deadline:
            if not self._current:
                return
            time.sleep(0.05)
        claims = self._current
        if claims:
            log.warning(
                "trial %s did not stop within %.1f s",
                _ids(claims),
                self.options.shutdown_timeout,
            )
            self._hand_back_and_exit()

    def _hand_back_and_exit(self) -> None:
        self.trainer.kill()  # first: nothing may train on under a lease handed back
        for claim in self._current:  # every member of a pack, each under its own lease
            try:
                handed = release_lease(self.db, claim)
                log.info("trial %d handed back: %s", claim.trial_id, handed)
            except Exception as exc:  # the lease will expire instead
                log.warning("trial %d: hand back failed: %s", claim.trial_id, exc)
        self._mark_exited()  # os._exit skips run's finally
        logging.shutdown()
        os._exit(0)

    def _mark_exited(self) -> None:
        """Best effort: a registration not marked shows as lost once its beats stop."""
        from studies.db.registry import mark_exited

        identity, self._identity = self._identity, None
        if identity is None:
            return
        try:
            mark_exited(self.db, identity.worker_id)
        except Exception as exc:
            log.warning("could not mark worker %s exited: %s", identity.worker_id, exc)

    def _sweep(self, *, force_sync: bool = False) -> None:
        """Requeues expired leases (any worker may), and mirrors stragglers in Optuna."""
        try:
            reclaimed = requeue_expired(self.db, max_attempts=self.options.max_attempts)
            if reclaimed:
                log.info("requeued %d trial(s) whose lease expired", reclaimed)
            now = time.monotonic()
            if force_sync or now - self._last_optuna_sync >= OPTUNA_SYNC_INTERVAL_S:
                self._last_optuna_sync = now
                written = sync_optuna(self.db, older_than_s=OPTUNA_SYNC_INTERVAL_S)
                if written:
                    log.info("mirrored %d finished trial(s) in Optuna", written)
        except Exception as exc:
            log.warning("sweep failed: %s", exc)

    def _drained(self) -> bool:
        self._sweep(force_sync=True)
        counts = self._retry(
            lambda: queue_counts(self.db, study_id=self.options.study_id), "count queue"
        )
        return counts["queued"] == 0 and counts["running"] == 0

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> int:
        """Runs until stopped, --max-trials or (--exit-when-idle) an empty queue; the exit code."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        from studies.db.registry import register_worker

        log.info("worker %s pid %d on %s", self.info.host, self.info.pid, self.device)
        try:
            self.trainer.start()  # its imports overlap the migration and the registration
            self.sizer.warm()  # so do the pack sizer's
            self._retry(self.db.migrate, "migrate")
            identity = self._identity = self._retry(
                lambda: register_worker(
                    self.db,
                    host=self.info.host,
                    pid=self.info.pid,
                    device=self.device,
                    pack_size=self.options.pack_size,
                ),
                "register",
            )
            freeze_long_lived_objects()  # SQLAlchemy's, optuna's and alembic's objects
            heartbeat = Heartbeat(
                self.db,
                interval_s=self.options.lease_seconds / 3,
                registration=identity,
                stopping=self.shutdown,
            )
            with heartbeat:
                self._heartbeat = heartbeat
                self._loop()
        except RetryGaveUp as exc:
            log.error("giving up: %s", exc)
            return 3
        finally:
            self.trainer.close()
            self._mark_exited()
            self.db.dispose()
        log.info("worker exiting after %d trial(s)", self.trials_run)
        return 0

    def _loop(self) -> None:
        claim: ClaimedTrial | None = None
        while not self.shutdown.is_set():
            if time.monotonic() - self._last_sweep >= self._sweep_interval:
                self._last_sweep = time.monotonic()
                self._sweep()
            if claim is None:
                claim = self._retry(self._claim_lead, "claim")
            if claim is None:
                self._record_finished_pack()  # nothing to overlap it with
                if self.options.exit_when_idle and self._drained():
                    log.info("queue drained: exiting")
                    break
                self._idle.wait(self.options.idle_poll_s)  # or until a SQLite file is written
                continue
            claimed = self._pack_for(claim)
            self.trials_run += len(claimed)
            last = bool(self.options.max_trials and self.trials_run >= self.options.max_trials)
            pack = self._complete_reused(claimed)
            if not pack:  # every claimed trial had an identical earlier result
                self._release_hold()
                claim = None
                if last:
                    break
                continue
            # A single trial's successor is claimed in the transaction that completes it; a
            # pack's results are stored while the next pack trains (see _run_pack).
            if len(pack) == 1:
                self._record_finished_pack()
                claim = self._run_claim(claim, claim_next=not last)
            else:
                claim = self._run_pack(pack, claim_next=not last)
            if last:
                break
        self._record_finished_pack()
        if claim is not None:  # claimed, then asked to stop: hand it back untouched
            self._retry(lambda: release_lease(self.db, claim), "hand back")

    def _claim_lead(self) -> ClaimedTrial | None:
        """The next queued trial; when this worker packs, with its pack's other members, sized
        and claimed in the same transaction (kept in self._mates for _pack_for). Claimed one
        after the other, two workers claiming at the same moment could split a pack's lead
        from its mates (the other's pack took them) and train the lead alone."""
        limit = self.options.pack_size or MAX_PACK_SIZE
        if self.options.max_trials:
            limit = min(limit, self.options.max_trials - self.trials_run)
        if limit <= 1:
            return claim_next_trial(
                self.db,
                self.info,
                lease_seconds=self.options.lease_seconds,
                study_id=self.options.study_id,
            )
        pack = claim_next_pack(
            self.db,
            self.info,
            pack_size=limit,
            lease_seconds=self.options.lease_seconds,
            study_id=self.options.study_id,
            size_for=self.sizer.size_for,  # cached per pack key: the first may build a model
        )
        if not pack:
            return None
        self._mates = pack[1:]
        return pack[0]

    def _pack_for(self, lead: ClaimedTrial) -> list[ClaimedTrial]:
        """The lead and the compatible trials claimed to train with it: as many as its pack
        size allows and never more than --max-trials has left; [lead] for a pack of one.
        Mates claimed with the lead (always _pack_for's next call: nothing runs between) are
        handed back untouched when a stop came meanwhile."""
        mates, self._mates = self._mates, None
        # sizing may build a model: keep the leases alive meanwhile
        self._hold((lead, *(mates or [])))
        size = self.sizer.size_for(lead.config)
        if self.options.max_trials:
            size = min(size, self.options.max_trials - self.trials_run)
        if self.shutdown.is_set():
            size = 1
        if mates is not None:
            keep = max(size - 1, 0)
            if mates[keep:]:
                self._hold((lead, *mates[:keep]))  # the heartbeat stops renewing the extras
                self._hand_back(mates[keep:], "claimed with a lead, then asked to stop")
            return [lead, *mates[:keep]]
        if size <= 1:
            return [lead]
        return self._retry(
            lambda: extend_pack(self.db, lead, self.info, pack_size=size), "claim pack"
        )

    def _complete_reused(self, claims: list[ClaimedTrial]) -> list[ClaimedTrial]:
        """Completes the claims that an identical earlier trial's result stands for (studies/db/
        reuse.py), without training them; returns the claims left to train."""
        reusable = self._retry(
            lambda: find_reusable(self.db, claims, self.device), "look up reusable results"
        )
        if not reusable:
            return claims
        done = [(c, reusable[c.trial_id]) for c in claims if c.trial_id in reusable]
        stored, _ = self._retry(
            lambda: complete_pack(self.db, done, None, lease_seconds=self.options.lease_seconds),
            "complete reused",
        )
        for (claim, result), kept in zip(done, stored, strict=True):
            if kept:
                log.info(
                    "trial %d %s: reused the result of trial %d",
                    claim.trial_id,
                    result.state,
                    result.reused_from,
                )
        return [c for c in claims if c.trial_id not in reusable]

    def _run_claim(self, claim: ClaimedTrial, *, claim_next: bool) -> ClaimedTrial | None:
        """Trains one claimed trial and records its outcome; returns the next claim, if any."""
        log.info(
            "trial %d (study %d, attempt %d) claimed", claim.trial_id, claim.study_id, claim.attempt
        )
        heartbeat = self._hold((claim,))
        try:
            last_write = [time.monotonic()]

            def report(_k: int, point: EvalPoint) -> bool:
                if self.shutdown.is_set() or heartbeat.lost.is_set():
                    return True
                now = time.monotonic()
                if now - last_write[0] < self.options.report_interval:
                    # Fast evaluations: one write per interval, not one per evaluation.
                    buffer_evaluation(claim, point)
                    return False
                last_write[0] = now
                keep = self._retry(
                    lambda: record_evaluation(self.db, claim, point), "record evaluation"
                )
                return not keep

            results = self._train((claim,), report, heartbeat, packed=False)
            if results is None:
                return None
            return self._record(claim, results[0], claim_next=claim_next)
        finally:
            self._release_hold()

    def _run_pack(self, pack: Sequence[ClaimedTrial], *, claim_next: bool) -> ClaimedTrial | None:
        """Trains a pack in one vectorized pass and records each member's outcome under its own
        lease; an exception fails every member's attempt. Returns the next claim, if any."""
        log.info(
            "pack of %d trials (ids %s) claimed (study %d, attempts %s)",
            len(pack),
            _ids(pack),
            pack[0].study_id,
            ", ".join(str(c.attempt) for c in pack),
        )
        heartbeat = self._hold(tuple(pack))
        try:
            report = PackReport(
                self.db,
                pack,
                heartbeat=heartbeat,
                shutdown=self.shutdown,
                interval_s=self.options.report_interval,
                retry=self._retry,
            )
            results = self._train(
                tuple(pack), report, heartbeat, packed=True, meanwhile=self._record_finished_pack
            )
            if results is None:
                return None
            if len(results) != len(pack):
                for claim in pack:
                    self._fail(claim, f"RuntimeError: run_pack gave {len(results)} results")
                return None
            if claim_next and not self.shutdown.is_set():
                # Stored while the next pack trains (see the module's docstring).
                self._recording = lambda: self._record_pack(pack, results, claim_next=False)
                self._unrecorded = tuple(pack)
                return None
            return self._record_pack(pack, results, claim_next=claim_next)
        finally:
            self._release_hold()

    def _record_finished_pack(self) -> None:
        """Stores the finished pack whose results wait (see _run_pack), if any, and stops
        renewing its leases."""
        recording, self._recording = self._recording, None
        if recording is None:
            return
        try:
            recording()
        finally:
            recorded = {claim.trial_id for claim in self._unrecorded}
            self._unrecorded = ()
            self._current = tuple(c for c in self._current if c.trial_id not in recorded)
            if self._heartbeat is not None:
                self._heartbeat.track(self._current or None)

    def _train(
        self,
        claims: tuple[ClaimedTrial, ...],
        report: Callable[[int, EvalPoint], bool],
        heartbeat: Heartbeat,
        *,
        packed: bool,
        meanwhile: Callable[[], None] | None = None,
    ) -> list[TrialResult] | None:
        """Trains `claims` (one trial, or a pack) in the trainer child, calling `meanwhile()`
        once the trainer has the job. Their results, or None when the outcome was recorded
        here: an error or a crash (one attempt each), a timeout (failed, not retried), a lost
        lease or a cancel (handed back)."""
        limit, source = self._time_limit(claims)
        watch = self._training_watch(claims, heartbeat, limit)
        checkpoint = None if packed else self.options.checkpointing(f"trial-{claims[0].trial_id}")
        job = TrainingJob(
            configs=[c.config for c in claims],
            device=self.device,
            packed=packed,
            checkpoint=checkpoint,
        )
        started = time.monotonic()
        try:
            return self.trainer.run(job, report=report, watch=watch, meanwhile=meanwhile)
        except TrainingError as exc:
            heartbeat.track(None)
            for claim in claims:
                self._fail(claim, exc.description)
        except TrainerDied as exc:
            heartbeat.track(None)
            self.trainer.start()
            if self.shutdown.is_set():  # a SIGTERM to the process group: part of the stop
                self._hand_back(claims, f"trainer ended during shutdown: {exc}")
            else:
                log.warning("trial %s: %s; trainer restarted", _ids(claims), exc)
                for claim in claims:
                    self._fail(claim, f"TrainerDied: {exc}")
        except TrainerStopped as exc:
            heartbeat.track(None)
            self.trainer.start()  # now: its imports overlap the writes below
            if exc.reason == TIMED_OUT:
                message = (
                    f"TrialTimeout: timed out after {time.monotonic() - started:.1f} s "
                    f"(limit {limit:g} s: {source}); not retried"
                )
                log.warning("trial %s: %s", _ids(claims), message)
                for claim in claims:
                    self._fail(claim, message, final=True)
            else:
                self._hand_back(claims, f"{exc.reason}: trainer killed")
        return None

    def _time_limit(self, claims: Sequence[ClaimedTrial]) -> tuple[float | None, str]:
        """The wall-clock limit for training `claims` and where it comes from. A pack's members
        share their budget; a pack of K gets K times the per-trial limit, as its duration_s is
        the pack's time divided by K."""
        limits = []
        spec_limit = claims[0].config.budget.max_seconds
        if spec_limit is not None:
            limits.append((spec_limit, "budget.max_seconds"))
        if self.options.trial_timeout is not None:
            limits.append((float(self.options.trial_timeout), "--trial-timeout"))
        if not limits:
            return None, ""
        per_trial, source = min(limits)
        if len(claims) > 1:
            return per_trial * len(claims), f"{source} {per_trial:g} s x pack of {len(claims)}"
        return per_trial, source

    def _training_watch(
        self, claims: Sequence[ClaimedTrial], heartbeat: Heartbeat, limit: float | None
    ) -> Callable[[], str | None]:
        """The trainer's watch: TIMED_OUT past the limit; LOST once every claim's lease is lost
        or cancelled and the trial has not stopped within LOST_GRACE_S; else None."""
        deadline = None if limit is None else time.monotonic() + limit
        ids = {c.trial_id for c in claims}
        lost_since: list[float] = []

        def watch() -> str | None:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return TIMED_OUT
            if heartbeat.lost.is_set() and ids <= heartbeat.lost_ids():
                if not lost_since:
                    lost_since.append(now)
                elif now - lost_since[0] >= LOST_GRACE_S:
                    return LOST
            return None

        return watch

    def _hand_back(self, claims: Sequence[ClaimedTrial], why: str) -> None:
        """Hands `claims` back without counting the attempt, keeping the curves written so far
        (a cancelled study's trials end cancelled; a lost lease is someone else's now)."""
        for claim in claims:
            handed = self._retry(
                lambda claim=claim: release_lease(self.db, claim, keep_curve=True), "hand back"
            )
            log.info("trial %d stopped (%s; handed back: %s)", claim.trial_id, why, handed)

    def _hold(self, claims: tuple[ClaimedTrial, ...]) -> Heartbeat:
        """Makes `claims`, with a finished pack's claims not yet recorded, what the heartbeat
        renews and what a stop request hands back."""
        held = {c.trial_id for c in claims}
        claims = (*claims, *(c for c in self._unrecorded if c.trial_id not in held))
        self._current = claims
        if self.shutdown.is_set() and self._watchdog is None:
            self.request_stop("stop during claim")
        heartbeat = self._heartbeat
        assert heartbeat is not None
        heartbeat.track(claims)
        return heartbeat

    def _release_hold(self) -> None:
        """Holds only the finished pack's claims not yet recorded, if any."""
        if self._heartbeat is not None:
            self._heartbeat.track(self._unrecorded or None)
        self._current = self._unrecorded

    def _record(
        self, claim: ClaimedTrial, result: TrialResult, *, claim_next: bool
    ) -> ClaimedTrial | None:
        """Stores one trial's outcome (a cancelled one is handed back); returns the next claim
        when `claim_next` and it rode on the same transaction."""
        if result.state == "cancelled":
            handed = self._retry(
                lambda: release_lease(self.db, claim, keep_curve=True), "hand back"
            )
            log.info("trial %d stopped early (handed back: %s)", claim.trial_id, handed)
            return None
        next_for = self.info if claim_next and not self.shutdown.is_set() else None
        stored, following = self._retry(
            lambda: complete_and_claim_next(
                self.db,
                claim,
                result,
                next_for,
                lease_seconds=self.options.lease_seconds,
                study_id=self.options.study_id,
            ),
            "complete",
        )
        packed = f" (pack of {result.pack_size})" if result.pack_size > 1 else ""
        if stored:
            log.info(
                "trial %d %s in %.2f s%s", claim.trial_id, result.state, result.duration_s, packed
            )
        else:
            log.warning("trial %d: lease lost before completion; result dropped", claim.trial_id)
        return following

    def _record_pack(
        self, pack: Sequence[ClaimedTrial], results: Sequence[TrialResult], *, claim_next: bool
    ) -> ClaimedTrial | None:
        """Stores every member's outcome in one transaction (cancelled members are handed
        back); returns the next claim when `claim_next`, riding on the same commit."""
        next_for = self.info if claim_next and not self.shutdown.is_set() else None
        members = list(zip(pack, results, strict=True))
        stored, following = self._retry(
            lambda: complete_pack(
                self.db,
                members,
                next_for,
                lease_seconds=self.options.lease_seconds,
                study_id=self.options.study_id,
            ),
            "complete pack",
        )
        for (claim, result), kept in zip(members, stored, strict=True):
            if result.state == "cancelled":
                log.info("trial %d stopped early (handed back: %s)", claim.trial_id, kept)
            elif kept:
                log.info(
                    "trial %d %s in %.2f s (pack of %d)",
                    claim.trial_id,
                    result.state,
                    result.duration_s,
                    result.pack_size,
                )
            else:
                log.warning(
                    "trial %d: lease lost before completion; result dropped", claim.trial_id
                )
        return following

    def _fail(self, claim: ClaimedTrial, description: str, *, final: bool = False) -> None:
        """Records a failed attempt (`final`: failed now, not retried)."""
        state = self._retry(
            lambda: fail_attempt(
                self.db, claim, description, max_attempts=self.options.max_attempts, final=final
            ),
            "record failure",
        )
        if state in ("failed", "cancelled"):  # over for good: nothing will resume it
            self._delete_checkpoint(claim)
        log.warning(
            "trial %d attempt %d: %s -> %s",
            claim.trial_id,
            claim.attempt,
            description.splitlines()[0] if description else "failed",
            state,
        )

    def _delete_checkpoint(self, claim: ClaimedTrial) -> None:
        checkpoint = self.options.checkpointing(f"trial-{claim.trial_id}")
        if checkpoint is None:
            return
        try:
            checkpoint.delete()
        except OSError as exc:  # a full or read-only volume must not stop the worker
            log.warning("trial %d: could not delete its checkpoint: %s", claim.trial_id, exc)


def _ids(claims: Sequence[ClaimedTrial]) -> str:
    return ", ".join(str(c.trial_id) for c in claims)

"""The trainer: a long-lived child process that trains what the worker (its supervisor) claims.

Training code can hang, segfault, die of a CUDA error or be OOM-killed; none of that may take the
worker down with it, because the worker owns the leases, the heartbeat and the database. So the
worker trains in a child it can always kill: on a trial timeout, on a cancel whose trial never
returns, or at shutdown. The child is reused from trial to trial (its imports and CUDA context
stay warm, so no-op trials still flow at queue speed) and replaced only after a kill or a crash.

Protocol, over one multiprocessing Pipe: the supervisor sends a TrainingJob; the child answers
("eval", k, point) for each evaluation of a single trial (k = 0) and waits for the supervisor's
bool (True: stop), or ("evals", [(k, point), ...]) for a pack's round of evaluations and waits
for the list of members to stop; then ("done", results) or ("error", description). Only the
supervisor writes to the database, exactly as when training ran in its own process.

The child ignores SIGINT (a Ctrl-C reaches the whole process group, and stopping is the worker's
to handle: it hands the trial back; a SIGTERM that kills the child meanwhile is taken as part of
that stop, not as a crash) and dies with its parent (PR_SET_PDEATHSIG on Linux, a
watcher thread elsewhere), so a SIGKILLed worker never leaves a trainer behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from studies.checkpoints import Checkpointing
    from studies.spec import TrialConfig
    from studies.trial import EvalPoint, TrialResult

__all__ = [
    "MAX_TRACEBACK_CHARS",
    "Trainer",
    "TrainerDied",
    "TrainerStopped",
    "TrainingError",
    "TrainingJob",
    "describe_error",
]

log = logging.getLogger("workers")
MAX_TRACEBACK_CHARS = 4000
POLL_S = 0.05  # how often the supervisor checks its watch while the child trains in silence
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class TrainingJob:
    """What the child trains: one trial (run_trial, with its checkpointing if any) or a pack
    (run_pack) of `configs`."""

    configs: Sequence[TrialConfig]
    device: str
    packed: bool
    checkpoint: Checkpointing | None = None


class TrainingError(Exception):
    """The training code raised; `description` has its type, message and traceback."""

    def __init__(self, description: str) -> None:
        super().__init__(description.splitlines()[0] if description else "training failed")
        self.description = description


class TrainerDied(Exception):
    """The child process died while training (segfault, OOM kill, os._exit...)."""


class TrainerStopped(Exception):
    """The supervisor killed the child: `reason` is what its watch returned."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def describe_error(exc: BaseException) -> str:
    """An exception as stored on a failed attempt: type and message, then the traceback's end."""
    trace = "".join(traceback.format_exception(exc))[-MAX_TRACEBACK_CHARS:]
    return f"{type(exc).__name__}: {exc}\n{trace}"


class Trainer:
    """The supervisor's handle on its trainer child: start it, run jobs in it, kill it."""

    def __init__(self, *, log_level: int = logging.INFO) -> None:
        self._context = multiprocessing.get_context("spawn")  # no fork of a threaded process
        self._log_level = log_level
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        process = self._process
        return process.pid if process is not None and process.is_alive() else None

    def start(self) -> None:
        """Starts the child unless it runs already; it imports the training code meanwhile.

        Call it from the thread that lives as long as the worker: Linux's parent-death signal
        fires when the *thread* that started the child ends."""
        if self._process is not None and self._process.is_alive():
            return
        self._discard()
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_child_main,
            args=(child, os.getpid(), self._log_level),
            name="trainer",
            daemon=True,
        )
        process.start()
        child.close()
        self._process, self._conn = process, parent
        log.debug("trainer pid %d started", process.pid)

    def run(
        self,
        job: TrainingJob,
        *,
        report: Callable[[int, EvalPoint], bool],
        watch: Callable[[], str | None],
        meanwhile: Callable[[], None] | None = None,
    ) -> list[TrialResult]:
        """Trains `job` in the child; `report(k, point)` answers each evaluation (True: stop
        member k). `watch()` is asked every POLL_S and after each evaluation: a reason (not
        None) kills the child and raises TrainerStopped(reason). `meanwhile()`, when given, is
        called once the job is sent (also when sending failed), while the child starts on it:
        the supervisor's own work that training need not wait for.

        Raises TrainingError when the training code raised (the child lives on), TrainerDied
        when the child died, TrainerStopped when killed. Whatever else interrupts the run (the
        database gave up in `report`, KeyboardInterrupt) kills the child before propagating:
        a child left mid-trial would train on with no one to answer it."""
        self.start()
        conn, process = self._conn, self._process
        assert conn is not None and process is not None
        finished = False
        try:
            try:
                conn.send(job)
            finally:
                if meanwhile is not None:
                    meanwhile()
            while True:
                if conn.poll(POLL_S):
                    try:
                        message = conn.recv()
                    except (EOFError, OSError):
                        raise TrainerDied(self._death(process)) from None
                    kind = message[0]
                    if kind == "eval":
                        conn.send(bool(report(message[1], message[2])))
                    elif kind == "evals":  # a pack's round: every member's point at once
                        conn.send([k for k, point in message[1] if report(k, point)])
                    elif kind == "done":
                        finished = True
                        return list(message[1])
                    elif kind == "error":
                        finished = True
                        raise TrainingError(message[1])
                    else:
                        raise RuntimeError(f"trainer sent an unknown message {kind!r}")
                elif not process.is_alive():
                    raise TrainerDied(self._death(process))
                reason = watch()
                if reason is not None:
                    raise TrainerStopped(reason)
        except BaseException:
            if not finished:
                self.kill()
            raise

    def kill(self) -> None:
        """Kills the child (SIGKILL: it may be stuck in native code) and reaps it. Safe from any
        thread, and when there is no child."""
        process = self._process
        if process is None:
            return
        if process.is_alive():
            with contextlib.suppress(OSError):
                os.kill(process.pid, signal.SIGKILL)  # type: ignore[arg-type]
        process.join(timeout=10)

    def close(self) -> None:
        """Ends the child (the worker is exiting)."""
        self.kill()
        self._discard()

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._process, self._conn = None, None

    @staticmethod
    def _death(process: BaseProcess) -> str:
        """Why the child died, as stored on the trial's failed attempt."""
        process.join(timeout=5)
        code = process.exitcode
        if code is None:
            return "trainer process stopped answering (its pipe closed)"
        if code < 0:
            name = signal.Signals(-code).name
            hint = {
                "SIGKILL": " (out of memory, or killed from outside)",
                "SIGSEGV": " (a crash in native code)",
                "SIGABRT": " (aborted, e.g. by a failed CUDA or C++ assertion)",
                "SIGBUS": " (a crash in native code)",
            }.get(name, "")
            return f"trainer process killed by {name}{hint}"
        return f"trainer process exited with code {code} while training"


# -- the child --------------------------------------------------------------------------------


def _child_main(conn: Connection, parent_pid: int, log_level: int) -> None:
    """The child's whole life: warm up, then run jobs until the pipe closes."""
    started = time.monotonic()
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=log_level,
        format="%(asctime)s trainer[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    import optuna  # imported by the studies package: quiet like the supervisor

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from studies.pack import run_pack
    from studies.trial import run_trial
    from studies.warm import warm_up
    from workers.gc_freeze import freeze_long_lived_objects

    warm_up()  # the first optimizer's and vmap's lazy imports, before any trial waits on them
    freeze_long_lived_objects()  # full collections then skip torch's and optuna's objects
    # Start-up to the first trial that trains at full speed: imports and warm-up take seconds,
    # more when several workers start on few cores at once (benchmarks/packs.py waits on this).
    log.info("trainer ready (imports and warm-up: %.1f s)", time.monotonic() - started)
    while True:
        try:
            job: TrainingJob = conn.recv()
        except (EOFError, OSError):
            return  # the supervisor closed the pipe or died

        def ask(k: int, point: EvalPoint) -> bool:
            conn.send(("eval", k, point))
            return bool(conn.recv())

        def ask_round(points: list[tuple[int, EvalPoint]]) -> list[int]:
            conn.send(("evals", points))
            return list(conn.recv())

        try:
            if job.packed:
                results = run_pack(list(job.configs), job.device, report=ask_round)
            else:
                only = job.configs[0]
                trained = run_trial(
                    only, job.device, report=lambda p: ask(0, p), checkpoint=job.checkpoint
                )
                results = [trained]
        except (EOFError, OSError, BrokenPipeError):
            return  # the supervisor went away mid-trial
        except Exception as exc:
            reply: tuple[Any, ...] = ("error", describe_error(exc))
        else:
            reply = ("done", results)
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when the parent dies, however it dies (SIGKILL included)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent_pid:  # it died before the prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch_parent() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()

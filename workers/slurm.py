"""What runs inside one task of an `adamod-lab slurm` job array: one ordinary worker.

`adamod-lab slurm` (service/cli_slurm.py) submits N ArrayTask objects through submitit as one
array. In each task, submitit's job process (`python -m submitit.core._submit FOLDER`) unpickles
its ArrayTask and calls it: the task builds the worker from a worker command line exactly as
`python -m workers` does (workers.__main__.build_worker, always with --exit-when-idle) and runs
it until the queue, or its --study, has nothing queued or running; then the task ends, exit 0.

Signals. submitit installs its handlers first (JobEnvironment._handle_signals): SIGTERM and
SIGCONT are logged and ignored, and SIGUSR2 (its preemption signal, sent by Slurm
`--signal=USR2@SECONDS` before the time limit) checkpoints and requeues the job, or raises
UncompletedJobError for a function without a `checkpoint` method. Neither would hand the
worker's trial back. So the task replaces them, after submitit and before the worker runs, with
the worker's own stop path: SIGTERM (scancel, preemption, the time limit's kill), SIGINT and
SIGUSR2 call Worker.request_stop, which hands the current trial back at its next evaluation (or
after --shutdown-timeout; a second signal at once): queued again, the attempt not counted. The
worker then exits normally, and its Slurm task with it. After SIGUSR2 (time limit near) the task
also requeues itself with `scontrol requeue` when work is left, as submitit would: the job
starts again later and its worker carries on with the queue. SIGCONT stays submitit's (ignored).
Slurm signals every process of the job step, the worker's trainer child too: a trainer that dies
of the signal during a stop is part of that stop (the trial is handed back, not failed).

Who is who: the task writes LOG_DIR/workers/<job id>.json (host, pid, Slurm ids) as it starts,
so that `adamod-lab slurm status` can put the registry's live workers (host and pid) next to
their Slurm array tasks.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from studies.db.engine import ENV_DATABASE_URL

if TYPE_CHECKING:
    from workers.worker import Worker

__all__ = ["WORKERS_SUBDIR", "ArrayTask", "slurm_job_id", "task_record_path"]

log = logging.getLogger("workers")
WORKERS_SUBDIR = "workers"
# submitit's preemption signal: SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise.
PREEMPT_SIGNAL = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


def slurm_job_id(environ: Mapping[str, str] | None = None) -> str | None:
    """This process's Slurm job id as squeue shows it: ARRAYJOB_TASK in an array, else the job
    id; None outside Slurm."""
    environ = os.environ if environ is None else environ
    array, task = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return environ.get("SLURM_JOB_ID") or None


def task_record_path(log_dir: Path, job_id: str) -> Path:
    """Where the task `job_id` writes who its worker is (host, pid)."""
    return log_dir / WORKERS_SUBDIR / f"{job_id}.json"


@dataclass
class ArrayTask:
    """One array task's work, pickled by submitit: a worker command line and its environment."""

    worker_argv: list[str]
    # Set in the task's environment first: where the worker finds its database URL
    # (ADAMOD_LAB_DATABASE_URL or ..._FILE), so that the URL is never on a command line.
    env: dict[str, str] = field(default_factory=dict)
    log_dir: str | None = None

    def __call__(self) -> int:
        """Runs the worker to the end; raises (the Slurm task fails) when it gave up."""
        from workers.__main__ import build_worker, install_stop_handlers

        if any(name.startswith(ENV_DATABASE_URL) for name in self.env):
            # Only one of the URL and its _FILE may be set, and sbatch exports the submitter's
            # environment: the task's own choice replaces both.
            os.environ.pop(ENV_DATABASE_URL, None)
            os.environ.pop(f"{ENV_DATABASE_URL}_FILE", None)
        os.environ.update(self.env)
        argv = [*self.worker_argv]
        if "--exit-when-idle" not in argv:
            argv.append("--exit-when-idle")
        worker = build_worker(argv)
        install_stop_handlers(worker, (signal.SIGTERM, signal.SIGINT))
        stopped_by: list[int] = []

        def near_time_limit(signum: int, _frame: object) -> None:
            stopped_by.append(signum)
            worker.request_stop(f"{signal.Signals(signum).name}: Slurm time limit near")

        signal.signal(PREEMPT_SIGNAL, near_time_limit)
        job_id = slurm_job_id()
        log.info("Slurm job %s: worker pid %d on %s", job_id, os.getpid(), socket.gethostname())
        if job_id and self.log_dir:
            self._record(Path(self.log_dir), job_id)
        code = worker.run()
        if code != 0:
            raise RuntimeError(f"the worker exited with code {code} (see the log above)")
        if stopped_by and job_id and _work_left(worker):
            _requeue(job_id)
        return code

    @staticmethod
    def _record(log_dir: Path, job_id: str) -> None:
        path = task_record_path(log_dir, job_id)
        record = {
            "job_id": job_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "node": os.environ.get("SLURMD_NODENAME"),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record) + "\n", encoding="utf-8")
        except OSError as exc:  # status then matches by host only
            log.warning("could not write %s: %s", path, exc)


def _work_left(worker: Worker) -> bool:
    """Whether the worker's queue (or study) still has trials queued or running."""
    from studies.db.queue import queue_counts

    try:
        counts = queue_counts(worker.db, study_id=worker.options.study_id)
    except Exception as exc:
        log.warning("could not count the trials left: %s", exc)
        return False
    finally:
        worker.db.dispose()
    return counts["queued"] + counts["running"] > 0


def _requeue(job_id: str, runner: Sequence[str] = ("scontrol", "requeue")) -> None:
    """Puts this task back in the Slurm queue (it is killed and started again later)."""
    log.info("work left: requeueing Slurm job %s", job_id)
    try:
        subprocess.run([*runner, job_id], check=True, timeout=60, capture_output=True)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not requeue Slurm job %s: %s", job_id, exc)

"""`adamod-lab slurm`: run N workers on a Slurm cluster as one job array (through submitit).

    adamod-lab slurm --database-url URL --workers N [--gpus-per-worker 1] [--partition P]
                     [--time HH:MM:SS] [--pack-size K] [--study ID] [--dry-run] [--log-dir DIR]
                     [-- WORKER OPTIONS...]
    adamod-lab slurm status [--job JOBID] [--database-url URL] [--log-dir DIR]

Submission: one submitit SlurmExecutor job array of N tasks, each running a Python callable,
workers.slurm.ArrayTask, in the job process: an ordinary worker (workers.__main__.build_worker,
as `python -m workers`) with --exit-when-idle, so each task ends, exit 0, once the queue (or the
--study) has nothing queued or running. Options after `--` go to every worker as they are
(`-- --lease-seconds 30 --max-attempts 5`). --dry-run prints the sbatch script that submitit
would submit (the same text, from submitit's own _make_sbatch_string) and submits nothing.

Why a callable and not `python -m workers` through submitit's helpers.CommandFunction: with a
command, the worker would be a child of submitit's job process, whose handlers swallow SIGTERM
and turn SIGUSR2 into a requeue or an error without telling the worker. In-process, the task
installs the worker's own handlers over submitit's (SIGTERM, SIGINT and SIGUSR2 all call
Worker.request_stop: the trial is handed back, not counted as an attempt) and sees the worker's
exit code. The details are in workers/slurm.py.

The database URL (--database-url, $ADAMOD_LAB_DATABASE_URL or $ADAMOD_LAB_DATABASE_URL_FILE)
must be PostgreSQL: workers on other nodes cannot share a SQLite file. It reaches the tasks
through the pickled task's environment (for _FILE: the file's path, read on the node), never the
sbatch script or a command line; --log-dir is created private (0700) for that reason. It must be
on a file system that every node sees (submitit's pickles, one log per task, workers/*.json).

Status lists the jobs (squeue; sacct for a finished --job where accounting is on) next to the
live workers of the database registry, matched through the LOG_DIR/workers/<job id>.json record
(host and pid) that each task writes as it starts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_JOB_NAME",
    "SlurmRequest",
    "build_parser",
    "build_status_parser",
    "main",
    "parse_time",
    "sbatch_script",
    "submit",
]

DEFAULT_JOB_NAME = "adamod-lab-worker"
DEFAULT_LOG_DIR = "adamod_lab_slurm"
DEFAULT_TIME = "04:00:00"
DEFAULT_SIGNAL_DELAY_S = 120
ENV_DATABASE_URL = "ADAMOD_LAB_DATABASE_URL"  # studies.db.engine's, without importing SQLAlchemy
_TIME = re.compile(r"^(?:(\d+)-)?(\d+):([0-5]\d):([0-5]\d)$")


def parse_time(text: str) -> int:
    """--time: `[D-]HH:MM:SS` (or whole minutes, as sbatch takes them) -> minutes, at least 1
    (submitit's `time` parameter is in minutes; seconds round up)."""
    text = text.strip()
    if text.isdigit():
        minutes = int(text)
    else:
        match = _TIME.match(text)
        if match is None:
            raise argparse.ArgumentTypeError(f"expected HH:MM:SS or D-HH:MM:SS, got {text!r}")
        days, hours, mins, secs = (int(g) if g else 0 for g in match.groups())
        minutes = math.ceil((((days * 24 + hours) * 60 + mins) * 60 + secs) / 60)
    if minutes < 1:
        raise argparse.ArgumentTypeError(f"must be at least one minute, got {text!r}")
    return minutes


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum`, else a message naming what was given."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


_positive = _int_at_least(1)
_count = _int_at_least(0)


def _pack_size(text: str) -> str:
    from workers.packing import parse_pack_size

    parse_pack_size(text)  # ArgumentTypeError when invalid
    return text


def build_parser() -> argparse.ArgumentParser:
    """`adamod-lab slurm`'s command line (submission)."""
    parser = argparse.ArgumentParser(
        prog="adamod-lab slurm",
        description="Submit N workers to Slurm as one job array (submitit). Each array task "
        "runs a worker until the queue (or --study) has nothing queued or running, then exits 0. "
        "Options after `--` go to every worker (see `adamod-lab worker --help`). "
        "`adamod-lab slurm status` shows the jobs and their workers.",
        epilog="example: adamod-lab slurm --database-url postgresql://lab@db/lab --workers 8 "
        "--partition gpu --time 08:00:00 -- --lease-seconds 30",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL URL (default: $ADAMOD_LAB_DATABASE_URL or the file named by "
        "$ADAMOD_LAB_DATABASE_URL_FILE); SQLite is refused",
    )
    parser.add_argument(
        "--workers", type=_positive, required=True, help="array tasks, one worker each"
    )
    parser.add_argument(
        "--gpus-per-worker", type=_count, default=1, help="GPUs per task (default 1; 0: CPU only)"
    )
    parser.add_argument("--cpus-per-worker", type=_positive, default=None, help="CPUs per task")
    parser.add_argument("--partition", default=None, help="Slurm partition (default: its default)")
    parser.add_argument(
        "--time",
        type=parse_time,
        default=parse_time(DEFAULT_TIME),
        metavar="HH:MM:SS",
        help=f"time limit per task (default {DEFAULT_TIME})",
    )
    parser.add_argument(
        "--signal-delay",
        type=_positive,
        default=DEFAULT_SIGNAL_DELAY_S,
        metavar="SECONDS",
        help="Slurm sends SIGUSR2 this long before the time limit: the worker hands its trial "
        f"back and the task requeues itself when work is left (default {DEFAULT_SIGNAL_DELAY_S})",
    )
    parser.add_argument(
        "--pack-size",
        type=_pack_size,
        default=None,
        metavar="N|auto",
        help="each worker's --pack-size (default: the worker's)",
    )
    parser.add_argument(
        "--study", type=_positive, default=None, metavar="ID", help="only this study"
    )
    parser.add_argument("--device", default="auto", help="each worker's --device (default auto)")
    parser.add_argument("--job-name", default=DEFAULT_JOB_NAME, help=f"default {DEFAULT_JOB_NAME}")
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=Path(DEFAULT_LOG_DIR),
        help=f"submitit's folder: pickles and one log per task, on a file system every node "
        f"sees (default ./{DEFAULT_LOG_DIR})",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the sbatch script; submit nothing"
    )
    return parser


def build_status_parser() -> argparse.ArgumentParser:
    """`adamod-lab slurm status`'s command line."""
    parser = argparse.ArgumentParser(
        prog="adamod-lab slurm status",
        description="Show the Slurm jobs of `adamod-lab slurm` (squeue) next to the live workers "
        "of the database registry.",
    )
    parser.add_argument("--job", default=None, metavar="JOBID", help="only this job (array)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="default: $ADAMOD_LAB_DATABASE_URL or $ADAMOD_LAB_DATABASE_URL_FILE",
    )
    parser.add_argument("--log-dir", type=Path, default=Path(DEFAULT_LOG_DIR))
    parser.add_argument("--job-name", default=DEFAULT_JOB_NAME, help="without --job: this name")
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser


@dataclass
class SlurmRequest:
    """What one `adamod-lab slurm` submits: the executor's parameters and each task."""

    workers: int
    folder: Path  # submitit's folder: LOG_DIR/%j, one subfolder per task
    parameters: dict[str, Any]
    worker_argv: list[str]
    env: dict[str, str]
    log_dir: Path


def _database_env(parser: argparse.ArgumentParser, given: str | None) -> dict[str, str]:
    """How the tasks find the database: the URL itself, or its _FILE's absolute path. Exits 2
    for a SQLite URL (or none at all) and for an unusable _FILE."""
    from studies.db.engine import database_url_from_env, normalize_database_url

    file = os.environ.get(f"{ENV_DATABASE_URL}_FILE") or ""
    try:
        url = given or database_url_from_env()
        if given is None and not file and not os.environ.get(ENV_DATABASE_URL):
            parser.error(
                "--database-url: required (or $ADAMOD_LAB_DATABASE_URL, or "
                "$ADAMOD_LAB_DATABASE_URL_FILE): a PostgreSQL URL that every node can reach"
            )
        url = normalize_database_url(url)
    except ValueError as exc:
        parser.error(str(exc))
    if url.startswith("sqlite"):
        parser.error(
            f"--database-url: {url.split(':', 1)[0]} is not supported here: workers on other "
            "nodes cannot share a SQLite file; use a PostgreSQL URL (postgresql://USER@HOST/DB)"
        )
    if given is None and file:
        return {f"{ENV_DATABASE_URL}_FILE": str(Path(file).resolve())}
    return {ENV_DATABASE_URL: url}


def _request(
    parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]
) -> SlurmRequest:
    from workers.__main__ import build_parser as worker_parser

    env = _database_env(parser, args.database_url)
    worker_argv = ["--exit-when-idle", "--device", args.device]
    if args.pack_size is not None:
        worker_argv += ["--pack-size", args.pack_size]
    if args.study is not None:
        worker_argv += ["--study", str(args.study)]
    worker_argv += extra
    checker = worker_parser()
    checker.prog = "adamod-lab slurm -- (worker options)"
    try:
        # Bad worker options fail here, not in N tasks on the cluster.
        checker.parse_args(["--database-url", "postgresql://check", *worker_argv])
    except SystemExit as exc:  # argparse printed why
        raise SystemExit(2) from exc
    log_dir = args.log_dir.resolve()
    parameters: dict[str, Any] = {
        "job_name": args.job_name,
        "time": args.time,
        "signal_delay_s": args.signal_delay,
        "array_parallelism": args.workers,
        "stderr_to_stdout": True,
        "wckey": None,
        "additional_parameters": {"requeue": True},
    }
    if args.partition:
        parameters["partition"] = args.partition
    if args.gpus_per_worker:
        parameters["gpus_per_node"] = args.gpus_per_worker
    if args.cpus_per_worker:
        parameters["cpus_per_task"] = args.cpus_per_worker
    return SlurmRequest(
        workers=args.workers,
        folder=log_dir / "%j",
        parameters=parameters,
        worker_argv=worker_argv,
        env=env,
        log_dir=log_dir,
    )


def sbatch_script(request: SlurmRequest) -> str:
    """The sbatch script submitit submits for `request` (its own template, same parameters)."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = " ".join(
        [
            shlex.quote(sys.executable),
            "-u -m submitit.core._submit",
            shlex.quote(str(request.folder)),
        ]
    )
    map_count = request.workers if request.workers > 1 else None
    return _make_sbatch_string(
        command=command, folder=request.folder, map_count=map_count, **request.parameters
    )


def submit(request: SlurmRequest) -> list[str]:
    """Submits the array; the job ids of its tasks (ARRAYJOB_TASK; one plain id for one task)."""
    import submitit

    from workers.slurm import ArrayTask

    request.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    executor = submitit.SlurmExecutor(folder=request.folder, max_num_timeout=0)
    executor.update_parameters(**request.parameters)
    task = ArrayTask(request.worker_argv, request.env, str(request.log_dir))
    with executor.batch():
        futures = [executor.submit(task) for _ in range(request.workers)]
    return [str(job.job_id) for job in futures]


def main(argv: Sequence[str] | None = None) -> int:
    """`adamod-lab slurm ...` (argv after the word "slurm"); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "status":
        return status(build_status_parser().parse_args(argv[1:]))
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = build_parser()
    args = parser.parse_args(argv)
    request = _request(parser, args, extra)
    if args.dry_run:
        print(sbatch_script(request), end="")
        return 0
    if shutil.which("sbatch") is None:
        print("adamod-lab slurm: sbatch not found: run this on a Slurm login node", file=sys.stderr)
        return 1
    try:
        job_ids = submit(request)
    except Exception as exc:  # sbatch refused: its message says why
        print(f"adamod-lab slurm: submission failed: {exc}", file=sys.stderr)
        return 1
    for job_id in job_ids:
        print(job_id)
    array = job_ids[0].split("_")[0]
    print(
        f"submitted {len(job_ids)} worker(s) as Slurm job {array}; logs in {request.log_dir}; "
        f"`adamod-lab slurm status --job {array}` shows them",
        file=sys.stderr,
    )
    return 0


# -- status ---------------------------------------------------------------------------------------


@dataclass
class SlurmJobRow:
    """One job (or array task) as squeue or sacct shows it."""

    job_id: str
    state: str
    node: str
    elapsed: str


def slurm_jobs(job: str | None, job_name: str) -> list[SlurmJobRow]:
    """The jobs of `job` (every task of an array), or this user's jobs named `job_name`:
    squeue, then sacct for a finished --job (where accounting is on)."""
    command = ["squeue", "--noheader", "-r", "-o", "%i|%T|%N|%M"]
    command += ["-j", job] if job else ["--me", "-n", job_name]
    rows = _parse_rows(_run(command))
    if not rows and job:
        sacct = ["sacct", "-n", "-X", "-P", "-j", job, "-o", "JobID,State,NodeList,Elapsed"]
        rows = _parse_rows(_run(sacct))
    return sorted(rows, key=_job_order)


def _job_order(row: SlurmJobRow) -> tuple[int, ...]:
    """ARRAYJOB_TASK in numeric order (a pending array's `123_[0-7]` after its tasks)."""
    parts = re.split(r"[_\[\]-]", row.job_id)
    return tuple(int(p) if p.isdigit() else 1 << 62 for p in parts if p)


def _run(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout if result.returncode == 0 else ""


def _parse_rows(text: str) -> list[SlurmJobRow]:
    rows = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4 and parts[0]:
            rows.append(SlurmJobRow(*parts))
    return rows


def _task_records(log_dir: Path) -> dict[str, dict[str, Any]]:
    from workers.slurm import WORKERS_SUBDIR

    records = {}
    for path in sorted((log_dir / WORKERS_SUBDIR).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        records[str(record.get("job_id", path.stem))] = record
    return records


def status(args: argparse.Namespace) -> int:
    """Prints the jobs next to their workers; exit 0."""
    from studies.db import Database
    from studies.db.engine import database_url_from_env
    from studies.db.registry import live_workers

    try:
        url = args.database_url or database_url_from_env()
    except ValueError as exc:
        build_status_parser().error(str(exc))
    jobs = slurm_jobs(args.job, args.job_name)
    records = _task_records(args.log_dir.resolve())
    db = Database(url)
    try:
        workers = live_workers(db)
    finally:
        db.dispose()
    by_host_pid = {(w.host, w.pid): w for w in workers}
    matched: set[str] = set()
    lines = []
    for job in jobs:
        record = records.get(job.job_id)
        worker = by_host_pid.get((record["host"], record["pid"])) if record else None
        if worker is not None:
            matched.add(worker.id)
        lines.append((job, worker))
    others = [w for w in workers if w.id not in matched]
    if args.json:
        print(
            json.dumps(
                {
                    "jobs": [
                        {
                            "job_id": j.job_id,
                            "state": j.state,
                            "node": j.node,
                            "elapsed": j.elapsed,
                            "worker": _worker_json(w),
                        }
                        for j, w in lines
                    ],
                    "other_workers": [_worker_json(w) for w in others],
                },
                indent=2,
            )
        )
        return 0
    header = f"{'JOBID':<14} {'STATE':<11} {'NODE':<12} {'ELAPSED':<10} {'WORKER':<10} TRIALS"
    print(header)
    for job, worker in lines:
        who = worker.id[:8] if worker else "-"
        trials = ",".join(map(str, worker.current_trial_ids)) if worker else ""
        print(
            f"{job.job_id:<14} {job.state:<11} {job.node:<12} {job.elapsed:<10} {who:<10} {trials}"
        )
    if not jobs:
        print("(no Slurm jobs)")
    if others:
        print(f"\nother live workers ({len(others)}):")
        for w in others:
            trials = ",".join(map(str, w.current_trial_ids))
            print(f"  {w.id[:8]}  {w.host} pid {w.pid} {w.device} {w.state} {trials}")
    return 0


def _worker_json(worker: Any) -> dict[str, Any] | None:
    if worker is None:
        return None
    return {
        "id": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "device": worker.device,
        "state": worker.state,
        "current_trial_ids": worker.current_trial_ids,
        "last_beat_at": worker.last_beat_at.isoformat(),
    }

"""`python -m workers` / `adamod-lab-worker`: run one worker process against the database."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from studies.db.engine import database_url_from_env
from studies.db.packs import MAX_PACK_SIZE
from studies.db.queue import DEFAULT_LEASE_SECONDS, DEFAULT_MAX_ATTEMPTS
from workers.packing import parse_pack_size
from workers.worker import DEFAULT_CHECKPOINT_DIR, DEFAULT_CHECKPOINT_SECONDS, ENV_CHECKPOINT_DIR

if TYPE_CHECKING:
    from workers.worker import Worker

__all__ = ["build_parser", "build_worker", "install_stop_handlers", "main", "parse_pack_size"]


def build_parser() -> argparse.ArgumentParser:
    """The worker's command line."""
    parser = argparse.ArgumentParser(
        prog="adamod-lab-worker",
        description="Claim trials from the AdaMod Lab queue and train them: one at a time, or "
        "compatible trials of one study together in one vectorized pack (--pack-size).",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL (default: $ADAMOD_LAB_DATABASE_URL or sqlite:///./adamod_lab.db)",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda:N")
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=DEFAULT_LEASE_SECONDS,
        help="lease length; a trial whose worker stops renewing it is requeued after this long",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=None,
        help="seconds between claims when idle (default: 0.2 on SQLite, 1.0 on PostgreSQL)",
    )
    parser.add_argument("--max-trials", type=int, default=None, help="exit after this many trials")
    parser.add_argument(
        "--exit-when-idle",
        action="store_true",
        help="exit once no trial is queued or running (instead of waiting for more)",
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=DEFAULT_MAX_ATTEMPTS,
        help="attempts per trial before it is marked failed",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=8.0,
        help="on SIGTERM, seconds to wait for the next evaluation before handing the trial back",
    )
    parser.add_argument(
        "--retry-timeout",
        type=float,
        default=300.0,
        help="give up (exit 3) after the database was unreachable this long",
    )
    parser.add_argument(
        "--report-interval",
        type=float,
        default=0.5,
        help="write evaluations at most this often (seconds); each write also checks for "
        "cancellation; the full curve is always written at completion (0: every evaluation)",
    )
    parser.add_argument(
        "--pack-size",
        type=parse_pack_size,
        default=None,
        metavar="N|auto",
        help="train up to N queued trials of one study that differ only in lr, beta3, warmup "
        "and seed together, in one vectorized pack, each with its own lease, result and Optuna "
        f"trial; auto (default): as many as the pack runner estimates fit on the device, at most "
        f"{MAX_PACK_SIZE}; 1: one trial at a time. Unpackable workloads run one at a time",
    )
    parser.add_argument(
        "--trial-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="kill a trial's training after this long and mark it failed, not retried (the "
        "smaller of this and the spec's budget.max_seconds holds; a pack of K gets K times it)",
    )
    parser.add_argument(
        "--checkpoint-dir",
        default=DEFAULT_CHECKPOINT_DIR,
        help=f"where trials save checkpoints, shared by every worker that may re-run them "
        f"(default: ${ENV_CHECKPOINT_DIR} or ./adamod_lab_checkpoints)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help="save a trial's checkpoint every N evaluations (a re-run attempt resumes there)",
    )
    parser.add_argument(
        "--checkpoint-seconds",
        type=_seconds_or_off,
        default=DEFAULT_CHECKPOINT_SECONDS,
        metavar="S|off",
        help=f"save a checkpoint at the first evaluation S seconds after the last save "
        f"(default {DEFAULT_CHECKPOINT_SECONDS:g}; off: only --checkpoint-every; both off: none)",
    )
    parser.add_argument(
        "--study",
        type=int,
        default=None,
        metavar="ID",
        help="claim only this study's trials (with --exit-when-idle: exit once it has none "
        "queued or running)",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    return parser


def _seconds_or_off(text: str) -> float | None:
    """--checkpoint-seconds: a number of seconds, or `off`."""
    if text.strip().lower() == "off":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or off, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Parses the command line, runs the worker until it stops, returns the exit code."""
    worker = build_worker(argv)
    install_stop_handlers(worker, (signal.SIGTERM, signal.SIGINT))
    return worker.run()


def build_worker(argv: Sequence[str] | None = None) -> Worker:
    """The Worker that a command line describes, with logging set up; exits 2 on bad arguments.
    Shared by main and workers.slurm (a worker inside a Slurm job)."""
    from workers.worker import Worker, WorkerOptions

    parser = build_parser()
    args = parser.parse_args(argv)
    level = getattr(logging, str(args.log_level).upper(), None)
    if not isinstance(level, int):
        parser.error(f"--log-level: unknown level {args.log_level!r}")
    logging.basicConfig(
        level=level, format="%(asctime)s worker[%(process)d] %(levelname)s %(message)s"
    )
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    try:
        database_url = args.database_url or database_url_from_env()
    except ValueError as exc:  # an unreadable or empty ADAMOD_LAB_DATABASE_URL_FILE
        parser.error(str(exc))
    options = WorkerOptions(
        database_url=database_url,
        device=args.device,
        lease_seconds=args.lease_seconds,
        poll_interval=args.poll_interval,
        max_trials=args.max_trials,
        exit_when_idle=args.exit_when_idle,
        max_attempts=args.max_attempts,
        shutdown_timeout=args.shutdown_timeout,
        retry_timeout=args.retry_timeout,
        report_interval=args.report_interval,
        pack_size=args.pack_size,
        trial_timeout=args.trial_timeout,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        checkpoint_seconds=args.checkpoint_seconds,
        study_id=args.study,
    )
    try:
        return Worker(options)
    except ValueError as exc:
        parser.error(str(exc))


def install_stop_handlers(worker: Worker, signums: Sequence[int]) -> None:
    """Makes each signal in `signums` ask `worker` to stop (hand back its trial, then exit)."""
    for signum in signums:
        signal.signal(signum, lambda s, _f: worker.request_stop(signal.Signals(s).name))


if __name__ == "__main__":
    sys.exit(main())

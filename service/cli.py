"""The `adamod-lab` console script: its parser and dispatch.

The commands live in service.cli_up (serve, up) and service.cli_commands (submit, status, list,
cancel, retry, report), imported only when run so that `adamod-lab --help` stays quick.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from service.version import __version__

# service.schemas.STUDY_STATUSES, repeated so that parsing arguments imports no pydantic
STUDY_STATUSES = ("queued", "running", "completed", "cancelled", "failed")
# command -> (module, function) of its handler
HANDLERS = {
    "serve": ("service.cli_up", "serve"),
    "up": ("service.cli_up", "up"),
    "submit": ("service.cli_commands", "submit"),
    "status": ("service.cli_commands", "status"),
    "list": ("service.cli_commands", "list_studies"),
    "cancel": ("service.cli_commands", "cancel"),
    "retry": ("service.cli_commands", "retry"),
    "report": ("service.cli_commands", "report"),
}
EPILOG = """\
examples:
  adamod-lab up --workers 2                       # API + 2 workers on ./adamod_lab.db
  adamod-lab submit studies/presets/quick.yaml --wait
  adamod-lab status 1
  adamod-lab list --status running
  adamod-lab cancel 1
  adamod-lab retry 1                              # queue its failed and cancelled trials again
  adamod-lab report 1 --out runs/report-1
  adamod-lab serve --host 0.0.0.0 --port 8000     # API only; database from ADAMOD_LAB_DATABASE_URL,
                                                  # and tokens (ADAMOD_LAB_API_TOKENS) required
  adamod-lab worker --database-url URL --device cuda:0
  adamod-lab slurm --database-url URL --workers 8 # 8 workers as one Slurm job array
  adamod-lab slurm status                         # their jobs next to the live workers

client commands talk to --url (env ADAMOD_LAB_URL, default http://127.0.0.1:8000) with the
token from --token (env ADAMOD_LAB_API_TOKEN).
"""


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="API root (env ADAMOD_LAB_URL)")
    parser.add_argument("--token", default=None, help="bearer token (env ADAMOD_LAB_API_TOKEN)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="adamod-lab",
        description="AdaMod Lab: measure how robust AdaMod is, vs Adam, to lr, beta3 and warmup.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"adamod-lab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the REST API (uvicorn)",
        description="Run the REST API. The database (ADAMOD_LAB_DATABASE_URL) is migrated at "
        "start-up, after waiting for it to come up; see docs at http://HOST:PORT/docs.",
    )
    serve.add_argument("--host", default=None, help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.add_argument("--database-url", default=None, help="env ADAMOD_LAB_DATABASE_URL")
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--allow-no-auth",
        action="store_true",
        help="serve beyond loopback without API tokens (env ADAMOD_LAB_ALLOW_NO_AUTH); refused "
        "otherwise",
    )

    commands.add_parser(
        "worker",
        help="run one worker process (see `adamod-lab worker --help`)",
        add_help=False,
    )

    commands.add_parser(
        "slurm",
        help="run N workers on Slurm as one job array (see `adamod-lab slurm --help`)",
        add_help=False,
    )

    up = commands.add_parser(
        "up",
        help="embedded one-machine mode: the API plus N local workers on SQLite",
        description="Start the API and N local worker processes on one database (a SQLite file "
        "by default). Ctrl-C or SIGTERM stops the workers (each hands back its trial), "
        "then the API.",
    )
    up.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    up.add_argument("--host", default="127.0.0.1", help="API interface (default 127.0.0.1)")
    up.add_argument("--port", type=int, default=8000, help="API port (default 8000)")
    up.add_argument(
        "--database-url",
        default=None,
        help="default: env ADAMOD_LAB_DATABASE_URL, else sqlite:///DATA_DIR/adamod_lab.db",
    )
    up.add_argument("--data-dir", default=".", help="where the SQLite file goes (default .)")
    up.add_argument("--device", default="auto", help="worker device: auto, cpu, cuda:N")
    up.add_argument(
        "--pack-size",
        default=None,
        metavar="N|auto",
        help="each worker's --pack-size: train up to N compatible trials of a study in one "
        "vectorized pack (default auto; 1: one trial at a time; see `adamod-lab worker --help`)",
    )
    up.add_argument(
        "--allow-no-auth",
        action="store_true",
        help="serve beyond loopback without API tokens (env ADAMOD_LAB_ALLOW_NO_AUTH); refused "
        "otherwise",
    )

    submit = commands.add_parser(
        "submit",
        help="submit a study spec (YAML or JSON)",
        description="POST a StudySpec and print the new study's id (stdout). With --wait, show "
        "a progress bar (stderr) and exit 0 when every trial completed or diverged; 1 when any "
        "trial failed or the study was cancelled (the last line says how many).",
    )
    submit.add_argument("spec", type=Path, help="StudySpec file, e.g. studies/presets/quick.yaml")
    submit.add_argument("--wait", action="store_true", help="show progress until it finishes")
    submit.add_argument("--idempotency-key", default=None, help="repeat-safe submission key")
    submit.add_argument("--interval", type=float, default=1.0, help="poll interval (s)")
    _add_client_options(submit)

    status = commands.add_parser("status", help="show a study's status and progress")
    status.add_argument("study_id", type=int, metavar="ID")
    status.add_argument("--json", action="store_true", help="print the StudyOut JSON")
    _add_client_options(status)

    listing = commands.add_parser(
        "list",
        help="list studies, newest first",
        description="List studies: id, name, status, progress (trials done/total), created.",
    )
    listing.add_argument("--status", choices=STUDY_STATUSES, default=None, help="only these")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.add_argument("--json", action="store_true", help="print the StudyOut list as JSON")
    _add_client_options(listing)

    cancel = commands.add_parser(
        "cancel",
        help="cancel a study",
        description="Cancel a study: its queued trials never run, running ones stop at their "
        "next evaluation; finished trials and their results are kept.",
    )
    cancel.add_argument("study_id", type=int, metavar="ID")
    _add_client_options(cancel)

    retry = commands.add_parser(
        "retry",
        help="queue a study's failed and cancelled trials again",
        description="Queue a study's failed and cancelled trials again (attempts from 0); a "
        "cancelled study is resumed. Completed, diverged and running trials are not touched.",
    )
    retry.add_argument("study_id", type=int, metavar="ID")
    _add_client_options(retry)

    report = commands.add_parser(
        "report",
        help="download a study's report: JSON, PNGs, HTML",
        description="Write report.json, one PNG per figure and report.html into --out.",
    )
    report.add_argument("study_id", type=int, metavar="ID")
    report.add_argument("--out", type=Path, required=True, help="directory to write into")
    _add_client_options(report)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `adamod-lab`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "worker":
        # The worker has its own parser; hand it everything after the word "worker".
        from workers.__main__ import main as worker_main

        return int(worker_main(argv[1:]) or 0)
    if argv and argv[0] == "slurm":  # its own parser too (and `slurm status`)
        from service.cli_slurm import main as slurm_main

        return slurm_main(argv[1:])
    args = build_parser().parse_args(argv)
    if getattr(args, "limit", 1) < 1:
        raise SystemExit("adamod-lab list: --limit must be >= 1")
    module, function = HANDLERS[args.command]
    handler = getattr(importlib.import_module(module), function)
    from service.client import ApiError

    try:
        return int(handler(args))
    except ApiError as exc:
        print(f"adamod-lab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

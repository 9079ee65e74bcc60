"""The `adamod-lab` console script: serve, worker, up (embedded mode), submit, status, report."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

TERMINAL_STATUSES = ("completed", "cancelled", "failed")
EPILOG = """\
examples:
  adamod-lab up --workers 2                       # API + 2 workers on ./adamod_lab.db
  adamod-lab submit studies/presets/quick.yaml --wait
  adamod-lab status 1
  adamod-lab report 1 --out runs/report-1
  adamod-lab serve --host 0.0.0.0 --port 8000     # API only; database from ADAMOD_LAB_DATABASE_URL
  adamod-lab worker --database-url URL --device cuda:0

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

    commands.add_parser(
        "worker",
        help="run one worker process (see `adamod-lab worker --help`)",
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

    submit = commands.add_parser(
        "submit",
        help="submit a study spec (YAML or JSON)",
        description="POST a StudySpec and print the new study's id (stdout). With --wait, show "
        "a progress bar (stderr) and exit 0 when the study completed, 1 otherwise.",
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
    args = build_parser().parse_args(argv)
    handlers = {"serve": _serve, "up": _up, "submit": _submit, "status": _status,
                "report": _report}
    from service.client import ApiError

    try:
        return handlers[args.command](args)
    except ApiError as exc:
        print(f"adamod-lab: {exc}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from service.app import create_app
    from service.settings import Settings

    overrides = {
        key: value
        for key, value in (
            ("host", args.host),
            ("port", args.port),
            ("database_url", args.database_url),
        )
        if value is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        fields = "; ".join(
            f"ADAMOD_LAB_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise SystemExit(f"adamod-lab serve: invalid setting: {fields}") from None
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level=args.log_level
    )
    return 0


def _load_spec(path: Path) -> dict[str, Any]:
    from studies.spec import read_spec_file

    try:
        # The same reader as `python -m studies`: `eps: 1e-8` is a number there, not a string.
        data = read_spec_file(path)
    except FileNotFoundError:
        raise SystemExit(f"adamod-lab: cannot read {path}: no such file") from None
    except OSError as exc:
        raise SystemExit(f"adamod-lab: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise SystemExit(f"adamod-lab: {path} is not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SystemExit(f"adamod-lab: {path} must hold a mapping (a StudySpec)")
    return data


def _submit(args: argparse.Namespace) -> int:
    from service.client import Client

    spec = _load_spec(args.spec)
    client = Client(args.url, args.token)
    try:
        study = client.submit(spec, idempotency_key=args.idempotency_key)
        print(study["id"], flush=True)
        if not args.wait:
            return 0
        return _wait(client, study, args.interval)
    finally:
        client.close()


def _done(progress: dict[str, int]) -> int:
    return sum(int(progress.get(k, 0)) for k in ("completed", "diverged", "failed", "cancelled"))


def _wait(client: Any, study: dict[str, Any], interval: float) -> int:
    from tqdm import tqdm

    bar = tqdm(total=study["n_trials"], unit="trial", desc=f"study {study['id']}", file=sys.stderr)
    try:
        while True:
            progress = study["progress"]
            bar.n = _done(progress)
            bar.set_postfix(
                status=study["status"],
                running=progress.get("running", 0),
                diverged=progress.get("diverged", 0),
                failed=progress.get("failed", 0),
                refresh=False,
            )
            bar.refresh()
            if study["status"] in TERMINAL_STATUSES:
                break
            time.sleep(interval)
            study = client.study(study["id"])
    except KeyboardInterrupt:
        bar.close()
        print(f"\nstopped waiting; the study keeps running: adamod-lab status {study['id']}",
              file=sys.stderr)
        return 130
    bar.close()
    print(f"study {study['id']} {study['status']}", file=sys.stderr)
    return 0 if study["status"] == "completed" else 1


def _status(args: argparse.Namespace) -> int:
    from service.client import Client

    client = Client(args.url, args.token)
    try:
        study = client.study(args.study_id)
    finally:
        client.close()
    if args.json:
        print(json.dumps(study, indent=2))
        return 0
    p = study["progress"]
    print(f"study {study['id']} {study['name']!r}: {study['status']}")
    print(f"  {_done(p)}/{p['total']} done: completed {p.get('completed', 0)}, "
          f"diverged {p.get('diverged', 0)}, failed {p.get('failed', 0)}, "
          f"cancelled {p.get('cancelled', 0)}; running {p.get('running', 0)}, "
          f"queued {p.get('queued', 0)}")
    print(f"  created {study['created_at']}  started {study['started_at']}  "
          f"finished {study['finished_at']}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from service.client import Client

    client = Client(args.url, args.token)
    out: Path = args.out
    try:
        study = client.study(args.study_id)
        report = client.report(args.study_id)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        for name, path in study["links"]["plots"].items():
            (out / f"{name}.png").write_bytes(client.get_bytes(path))
        (out / "report.html").write_bytes(client.get_bytes(study["links"]["report_html"]))
    finally:
        client.close()
    if not report.get("complete", True):
        print(f"note: study {args.study_id} is {study['status']}; the report is partial",
              file=sys.stderr)
    print(f"report of study {args.study_id} written to {out}/ "
          f"(report.html, report.json, {len(study['links']['plots'])} PNGs)")
    return 0


# ----------------------------------------------------------------- embedded mode (`up`)


def _check_pack_size(text: str) -> None:
    # Checked here, before anything starts, with the workers' own rule; imported only now so
    # that `adamod-lab --help` stays quick.
    from argparse import ArgumentTypeError

    from workers.__main__ import parse_pack_size

    try:
        parse_pack_size(text)
    except ArgumentTypeError as exc:
        raise SystemExit(f"adamod-lab up: --pack-size: {exc}") from None


class _Stop(Exception):
    """Raised by the signal handler to leave the supervision loop."""


def _up(args: argparse.Namespace) -> int:
    if args.workers < 0:
        raise SystemExit("adamod-lab up: --workers must be >= 0")
    if args.pack_size is not None:
        _check_pack_size(args.pack_size)
    database_url = args.database_url
    if database_url is None:
        database_url = os.environ.get("ADAMOD_LAB_DATABASE_URL")
    # Set but empty is a mistake, not a request for the default: a SQLite file would appear in
    # the data directory and studies would go there instead of the intended database.
    if database_url is not None and not database_url.strip():
        raise SystemExit(
            "adamod-lab up: the database URL is empty (--database-url or "
            "ADAMOD_LAB_DATABASE_URL); give a URL or leave both unset for the SQLite default"
        )
    if database_url is None:
        data_dir = Path(args.data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        database_url = f"sqlite:///{data_dir / 'adamod_lab.db'}"
    env = {**os.environ, "ADAMOD_LAB_DATABASE_URL": database_url}
    url = f"http://{args.host}:{args.port}"

    def on_signal(signum: int, frame: object) -> None:
        raise _Stop(signal.Signals(signum).name)

    from service.processes import (
        RestartBackoff,
        server_command,
        spawn,
        stop,
        wait_healthy,
        worker_command,
    )

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    server: Any = None
    workers: list[Any] = []
    code = 0
    try:
        server = spawn(server_command(args.host, args.port), env)
        if not wait_healthy(url, server, timeout=120):
            print(f"adamod-lab up: the API did not become healthy at {url}", file=sys.stderr)
            return 1
        # N CPU workers each using every core only fight over them: split the cores instead.
        worker_env = dict(env)
        if args.workers and "OMP_NUM_THREADS" not in env:
            worker_env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.workers))

        def start_worker() -> Any:
            return spawn(
                worker_command(database_url, args.device, pack_size=args.pack_size), worker_env
            )

        workers.extend(start_worker() for _ in range(args.workers))
        started = [time.monotonic()] * len(workers)
        backoffs = [RestartBackoff() for _ in workers]
        restart_at: list[float | None] = [None] * len(workers)
        print(f"AdaMod Lab is up: API {url} (docs {url}/docs), {args.workers} workers, "
              f"database {database_url}. Ctrl-C stops everything.", flush=True)
        while True:
            time.sleep(0.5)
            if server.poll() is not None:
                print(f"adamod-lab up: the API exited ({server.returncode})", file=sys.stderr)
                code = 1
                break
            # A worker that exits while nobody asked it to stop (crash, OOM killer, SIGKILL)
            # comes back after a backoff, so `up` keeps its workers; its trial's lease expires
            # and another worker's sweep queues it again.
            now = time.monotonic()
            for slot, worker in enumerate(workers):
                if restart_at[slot] is None and worker.poll() is not None:
                    lived = now - started[slot]
                    delay = backoffs[slot].delay_after(lived)
                    restart_at[slot] = now + delay
                    print(f"adamod-lab up: worker {slot} (pid {worker.pid}) exited with code "
                          f"{worker.returncode} after {lived:.0f} s; restarting it in "
                          f"{delay:.0f} s", file=sys.stderr, flush=True)
                due = restart_at[slot]
                if due is not None and now >= due:
                    workers[slot] = start_worker()
                    started[slot] = time.monotonic()
                    restart_at[slot] = None
                    print(f"adamod-lab up: worker {slot} restarted as pid {workers[slot].pid}",
                          file=sys.stderr, flush=True)
    except _Stop as reason:
        print(f"adamod-lab up: {reason}, stopping workers and API", file=sys.stderr, flush=True)
    finally:
        # Ignore further signals while cleaning up, so a second Ctrl-C cannot orphan anything.
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        stop(workers, grace=60)
        if server is not None:
            stop([server], grace=10)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code


if __name__ == "__main__":
    sys.exit(main())

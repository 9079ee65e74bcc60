"""The process commands of `adamod-lab`: serve (the API alone) and up (the API plus N workers).

Both check what they can before starting anything (settings, exposure without tokens, the port,
the database), so that a mistake is one line naming its cause, not a traceback or a false "is up".
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from service.cli_preflight import database_problem, port_problem, safe_url
from service.settings import SecretFileError, Settings, env_or_file


def load_settings(command: str, **overrides: Any) -> Settings:
    """Settings from the environment and ``overrides`` (None values ignored); exit on mistakes."""
    from pydantic import ValidationError

    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except SecretFileError as exc:  # ADAMOD_LAB_*_FILE: unreadable, empty, or set twice
        raise SystemExit(f"adamod-lab {command}: invalid setting: {exc}") from None
    except ValidationError as exc:
        fields = "; ".join(
            f"ADAMOD_LAB_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise SystemExit(f"adamod-lab {command}: invalid setting: {fields}") from None


def check_exposure(command: str, settings: Settings) -> None:
    """Exit when the API would listen beyond loopback without tokens (see exposure_problem)."""
    from service.settings import exposure_problem

    problem = exposure_problem(settings)
    if problem is not None:
        raise SystemExit(f"adamod-lab {command}: {problem}")


def serve(args: argparse.Namespace) -> int:
    """Runs the API (uvicorn) after checking the settings, the port and the database."""
    settings = load_settings(
        "serve",
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        allow_no_auth=True if args.allow_no_auth else None,
    )
    check_exposure("serve", settings)
    if settings.port:
        problem = port_problem(settings.host, settings.port)
        if problem is not None:
            raise SystemExit(f"adamod-lab serve: {problem}")
    # Waits (as start-up does) while the database cannot be opened, even when it answers "no"
    # (it may not be created yet beside this server); gives up naming the driver's words.
    problem = database_problem(
        settings.database_url, wait_s=settings.db_wait_seconds, wait_on_refusal=True
    )
    if problem is not None:
        raise SystemExit(f"adamod-lab serve: {problem}")

    import uvicorn

    from service.app import create_app

    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level=args.log_level
    )
    return 0


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


def _database_url(args: argparse.Namespace) -> str:
    database_url = args.database_url
    if database_url is None:
        try:  # or the file ADAMOD_LAB_DATABASE_URL_FILE names
            database_url = env_or_file("ADAMOD_LAB_DATABASE_URL")
        except SecretFileError as exc:
            raise SystemExit(f"adamod-lab up: {exc}") from None
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
    return database_url


def up(args: argparse.Namespace) -> int:
    """The API and N local workers on one database, until Ctrl-C or SIGTERM."""
    if args.workers < 0:
        raise SystemExit("adamod-lab up: --workers must be >= 0")
    if args.pack_size is not None:
        _check_pack_size(args.pack_size)
    database_url = _database_url(args)
    settings = load_settings(
        "up",
        host=args.host,
        port=args.port,
        database_url=database_url,
        allow_no_auth=True if args.allow_no_auth else None,
    )
    check_exposure("up", settings)
    problem = port_problem(args.host, args.port)
    if problem is None:
        problem = database_problem(database_url)
    if problem is not None:
        print(f"adamod-lab up: {problem}", file=sys.stderr)
        return 1
    env = {**os.environ, "ADAMOD_LAB_DATABASE_URL": database_url}
    env.pop("ADAMOD_LAB_DATABASE_URL_FILE", None)  # the URL itself, read once, goes to children
    if args.allow_no_auth:
        env["ADAMOD_LAB_ALLOW_NO_AUTH"] = "1"
    return _supervise(args, database_url, env)


def _supervise(args: argparse.Namespace, database_url: str, env: dict[str, str]) -> int:
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
        print(
            f"AdaMod Lab is up: API {url} (docs {url}/docs), {args.workers} workers, "
            f"database {safe_url(database_url)}. Ctrl-C stops everything.",
            flush=True,
        )
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
                    print(
                        f"adamod-lab up: worker {slot} (pid {worker.pid}) exited with code "
                        f"{worker.returncode} after {lived:.0f} s; restarting it in "
                        f"{delay:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
                due = restart_at[slot]
                if due is not None and now >= due:
                    workers[slot] = start_worker()
                    started[slot] = time.monotonic()
                    restart_at[slot] = None
                    print(
                        f"adamod-lab up: worker {slot} restarted as pid {workers[slot].pid}",
                        file=sys.stderr,
                        flush=True,
                    )
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

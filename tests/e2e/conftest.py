"""End-to-end helpers: a live API server plus real worker subprocesses on one database."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from service.processes import spawn, stop, worker_command


@contextmanager
def running_workers(
    database_url: str, n: int, log_dir: Path, *extra: str
) -> Iterator[list[subprocess.Popen]]:
    """``n`` CPU worker processes on ``database_url``, stopped with SIGTERM when the block ends."""
    # One thread per worker: the tests share a few cores, and two workers each using every core
    # for a tiny MLP only fight over them.
    env = {**os.environ, "ADAMOD_LAB_DATABASE_URL": database_url, "OMP_NUM_THREADS": "1"}
    processes: list[subprocess.Popen] = []
    logs = []
    try:
        for i in range(n):
            log = open(log_dir / f"worker-{i}.log", "ab")  # noqa: SIM115
            logs.append(log)
            command = worker_command(database_url, "cpu", "--poll-interval", "0.2", *extra)
            processes.append(spawn(command, env, stdout=log, stderr=subprocess.STDOUT))
        yield processes
    finally:
        stop(processes, grace=20)
        for log in logs:
            log.close()


def poll(
    client: httpx.Client, study_id: int, until: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    """GET /studies/{id} until ``until(study)`` holds; AssertionError with the last state if not."""
    deadline = time.monotonic() + timeout
    study: dict[str, Any] = {}
    while time.monotonic() < deadline:
        study = client.get(f"/studies/{study_id}").json()
        if until(study):
            return study
        time.sleep(0.3)
    raise AssertionError(f"study {study_id} did not get there in {timeout}s: {study}")


def log_tail(log_dir: Path, chars: int = 4000) -> str:
    """The end of every log in ``log_dir``, for assertion messages."""
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in sorted(log_dir.glob("*"))
    )

"""Starting and always stopping real worker subprocesses in tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from studies.db import Database
from studies.db.models import TrialRow


class WorkerProcesses:
    """Real `python -m workers` processes, each logging to a file; all killed on cleanup."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, url: str, *args: str) -> subprocess.Popen[bytes]:
        """Starts one worker on `url` with extra command-line arguments."""
        index = len(self.processes)
        log = open(self.directory / f"worker-{index}.log", "wb")  # noqa: SIM115 - closed by the OS
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
        process = subprocess.Popen(
            [sys.executable, "-m", "workers", "--database-url", url, "--device", "cpu", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            env=env,
        )
        self.processes.append(process)
        return process

    def log(self, process: subprocess.Popen[bytes]) -> str:
        """What a worker has printed so far."""
        index = self.processes.index(process)
        return (self.directory / f"worker-{index}.log").read_text(errors="replace")

    def wait_all(self, timeout: float) -> list[int]:
        """Waits for every worker to exit; their exit codes."""
        deadline = time.monotonic() + timeout
        codes = []
        for process in self.processes:
            codes.append(process.wait(timeout=max(0.1, deadline - time.monotonic())))
        return codes

    def kill_all(self) -> None:
        """Kills whatever is still running (test cleanup)."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    """Polls `predicate` until it is truthy; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def trial_rows(db: Database, study_id: int) -> list[TrialRow]:
    """Every trial row of a study, in grid order."""
    with db.session(readonly=True) as session:
        return list(
            session.execute(
                select(TrialRow).where(TrialRow.study_id == study_id).order_by(TrialRow.number)
            ).scalars()
        )

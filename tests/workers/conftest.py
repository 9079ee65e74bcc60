"""Fixtures for the worker tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.workers.procs import WorkerProcesses


@pytest.fixture
def worker_processes(tmp_path) -> Iterator[WorkerProcesses]:  # type: ignore[no-untyped-def]
    """Real worker subprocesses, killed when the test ends whatever happened."""
    processes = WorkerProcesses(tmp_path)
    try:
        yield processes
    finally:
        processes.kill_all()

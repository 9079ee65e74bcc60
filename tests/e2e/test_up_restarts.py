"""`adamod-lab up` restarts a worker that dies on its own, with backoff; Ctrl-C still stops all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.processes import RestartBackoff, free_port, spawn, wait_healthy
from tests.e2e.procfs import SPEC_YAML, alive, children


def _is_worker(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"workers" in cmdline


def _workers_of(pid: int, n: int) -> list[int] | None:
    """The worker children of ``pid`` once there are ``n`` of them."""
    found = [child for child in children(pid) if _is_worker(child)]
    return found if len(found) == n else None


def _wait(predicate, timeout: float, what: str, log: Path):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def test_backoff_doubles_to_the_cap_and_resets_after_a_healthy_run() -> None:
    backoff = RestartBackoff(first_s=1, max_s=30, reset_after_s=60)
    assert [backoff.delay_after(2) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay_after(61) == 1  # it lived long enough: forgiven
    assert backoff.delay_after(0.5) == 2
    with pytest.raises(ValueError):
        RestartBackoff(first_s=0)


@pytest.mark.slow
def test_up_restarts_a_killed_worker_and_the_study_completes(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("ADAMOD_LAB_DATABASE_URL", "ADAMOD_LAB_API_TOKENS", "ADAMOD_LAB_PROTECT_READS"):
        env.pop(name, None)
    log_path = tmp_path / "up.log"
    log = open(log_path, "wb")  # noqa: SIM115
    up = spawn(
        [
            sys.executable,
            "-u",
            "-m",
            "service",
            "up",
            "--workers",
            "2",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
            "--device",
            "cpu",
        ],
        env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_healthy(url, up, timeout=120), log_path.read_text()
        workers = _wait(lambda: _workers_of(up.pid, 2), 30, "two workers", log_path)
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)

        restarted = _wait(
            lambda: re.search(r"worker (\d+) restarted as pid (\d+)", log_path.read_text()),
            30,
            "the restart",
            log_path,
        )
        text = log_path.read_text()
        assert f"(pid {victim}) exited with code -9" in text
        assert "restarting it in 1 s" in text
        new_pid = int(restarted.group(2))
        assert new_pid != victim and new_pid in children(up.pid)
        assert sorted(p for p in children(up.pid) if _is_worker(p)) == sorted([workers[1], new_pid])

        spec = tmp_path / "restarts.yaml"
        spec.write_text(SPEC_YAML)
        submitted = subprocess.run(
            [sys.executable, "-m", "service", "submit", str(spec), "--wait"],
            capture_output=True,
            text=True,
            timeout=180,
            env={**env, "ADAMOD_LAB_URL": url},
        )
        assert submitted.returncode == 0, submitted.stderr + log_path.read_text()[-3000:]
        assert "completed" in submitted.stderr

        # A stop request stops everything, and nothing is restarted.
        started = children(up.pid)
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=90) == 0, log_path.read_text()[-3000:]
        _wait(lambda: not any(alive(p) for p in started), 10, "every child to exit", log_path)
        assert log_path.read_text().count("restarted as pid") == 1
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        log.close()

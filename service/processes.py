"""Starting, watching and stopping the API and worker processes (used by `up` and the tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_command(host: str, port: int, log_level: str = "warning") -> list[str]:
    """The command line of an API server process."""
    return [sys.executable, "-m", "service", "serve", "--host", host, "--port", str(port),
            "--log-level", log_level]


def worker_command(
    database_url: str, device: str = "cpu", *extra: str, pack_size: int | str | None = None
) -> list[str]:
    """The command line of a worker process (`pack_size`: its --pack-size; None: the default)."""
    packing = [] if pack_size is None else ["--pack-size", str(pack_size)]
    return [sys.executable, "-m", "workers", "--database-url", database_url, "--device", device,
            *packing, *extra]


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM if its parent dies (even by SIGKILL), so none is orphaned.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def spawn(cmd: Sequence[str], env: dict[str, str], **kwargs: object) -> subprocess.Popen:
    """Starts ``cmd`` in its own process group, tied to this process's life."""
    # Own process group: a terminal's Ctrl-C reaches only the parent, which then stops the
    # children in order (workers first, so they hand back trials while the database is there).
    return subprocess.Popen(
        list(cmd), env=env, start_new_session=True, preexec_fn=_die_with_parent, **kwargs
    )


def wait_healthy(url: str, process: subprocess.Popen | None, timeout: float) -> bool:
    """Polls ``url``/healthz until it answers 200; False on timeout or if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def stop(processes: Sequence[subprocess.Popen], grace: float) -> None:
    """SIGTERM to every process still running, then SIGKILL to any still there after ``grace``."""
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in processes:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def running_server(
    database_url: str,
    *,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    timeout: float = 120.0,
    log_path: str | None = None,
) -> Iterator[str]:
    """Runs an API server on a free port of ``host`` until the block ends; yields its base URL."""
    port = free_port(host)
    url = f"http://{host}:{port}"
    full_env = {**os.environ, **(env or {}), "ADAMOD_LAB_DATABASE_URL": database_url}
    full_env.pop("ADAMOD_LAB_DATABASE_URL_FILE", None)  # the URL given wins over a secrets file
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = spawn(server_command(host, port), full_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_healthy(url, process, timeout):
            tail = ""
            if log_path:
                log.flush()  # type: ignore[union-attr]
                tail = Path(log_path).read_text(errors="replace")[-3000:]
            raise RuntimeError(f"API server at {url} did not become healthy:\n{tail}")
        yield url
    finally:
        stop([process], grace=10)
        if log_path:
            log.close()  # type: ignore[union-attr]


class RestartBackoff:
    """When to restart a process that died: exponential backoff, forgiven after a healthy run.

    A worker that crashes at start-up (bad URL, broken device) must not be restarted in a tight
    loop, yet one that ran fine for a while and then died (OOM killer, SIGKILL) should come back
    at once: the delay starts at ``first_s``, doubles up to ``max_s`` for each quick death, and
    falls back to ``first_s`` once a process lived ``reset_after_s``.
    """

    def __init__(
        self, first_s: float = 1.0, max_s: float = 30.0, reset_after_s: float = 60.0
    ) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError(f"RestartBackoff: need 0 < first_s <= max_s, got {first_s}, {max_s}")
        self.first_s = first_s
        self.max_s = max_s
        self.reset_after_s = reset_after_s
        self._next_s = first_s

    def delay_after(self, lived_s: float) -> float:
        """The wait before restarting a process that died after ``lived_s`` seconds."""
        if lived_s >= self.reset_after_s:
            self._next_s = self.first_s
        delay = self._next_s
        self._next_s = min(self.max_s, self._next_s * 2)
        return delay

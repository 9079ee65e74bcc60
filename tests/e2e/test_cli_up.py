"""`adamod-lab up`, submit --wait, status and report as a user runs them; Ctrl-C stops it all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.processes import free_port, running_server, spawn, wait_healthy
from tests.e2e.procfs import SPEC_YAML, alive, children

pytestmark = pytest.mark.slow


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_up_submit_wait_report_and_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "ADAMOD_LAB_API_TOKENS": "cli-token",
        "ADAMOD_LAB_PROTECT_READS": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("ADAMOD_LAB_DATABASE_URL", None)
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    up = spawn(
        [
            sys.executable,
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
        assert wait_healthy(url, up, timeout=120), (tmp_path / "up.log").read_text()
        assert (tmp_path / "data" / "adamod_lab.db").exists()
        spec = tmp_path / "quick.yaml"
        spec.write_text(SPEC_YAML)
        client_env = {**env, "ADAMOD_LAB_URL": url}

        refused = _cli("submit", str(spec), env=client_env)
        assert refused.returncode == 1 and "401" in refused.stderr

        submitted = _cli("submit", str(spec), "--token", "cli-token", "--wait", env=client_env)
        assert submitted.returncode == 0, submitted.stderr + (tmp_path / "up.log").read_text()
        study_id = int(submitted.stdout.strip())
        assert "completed" in submitted.stderr  # the progress bar's last words

        # Reads are protected too on this server: the token comes from ADAMOD_LAB_API_TOKEN.
        anonymous = httpx.get(f"{url}/studies/{study_id}", timeout=10)
        assert anonymous.status_code == 401
        client_env["ADAMOD_LAB_API_TOKEN"] = "cli-token"
        status = _cli("status", str(study_id), env=client_env)
        assert status.returncode == 0 and "completed" in status.stdout
        assert "12/12 done" in status.stdout

        out = tmp_path / "report"
        report = _cli("report", str(study_id), "--out", str(out), env=client_env)
        assert report.returncode == 0, report.stderr
        assert json.loads((out / "report.json").read_text())["complete"] is True
        for name in ("lr_curves", "beta3_surface", "warmup", "budget"):
            assert (out / f"{name}.png").read_bytes().startswith(b"\x89PNG")
        assert "<img" in (out / "report.html").read_text()

        started = children(up.pid)
        assert len(started) == 3  # the API and two workers
        up.send_signal(signal.SIGINT)  # what Ctrl-C does
        assert up.wait(timeout=60) == 0, (tmp_path / "up.log").read_text()[-1500:]
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in started)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/healthz", timeout=2)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        log.close()


def test_up_refuses_a_port_another_server_holds(tmp_path: Path) -> None:
    # Another healthy API on the port: its /healthz used to make `up` report "is up" while its
    # own API failed to bind.
    with running_server(f"sqlite:///{tmp_path / 'other.db'}") as other:
        port = int(other.rsplit(":", 1)[1])
        result = _cli(
            "up",
            "--workers",
            "1",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
            env={**os.environ},
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "is up" not in result.stdout
    assert not (tmp_path / "data" / "adamod_lab.db").exists()  # nothing was started


def test_up_names_the_database_error(postgres_url: str) -> None:
    missing = postgres_url.rsplit("/", 1)[0] + "/adamod_lab_no_such_db"
    result = _cli(
        "up",
        "--workers",
        "1",
        "--port",
        str(free_port()),
        "--database-url",
        missing,
        env={**os.environ},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'database "adamod_lab_no_such_db" does not exist' in result.stderr
    assert "Traceback" not in result.stderr and "is up" not in result.stdout

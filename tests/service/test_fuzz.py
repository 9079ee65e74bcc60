"""A bounded schemathesis run of the live server's OpenAPI schema: no request gets a 500."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.processes import running_server

pytestmark = pytest.mark.slow


def _schemathesis() -> str:
    found = Path(sys.executable).with_name("schemathesis")
    if found.exists():
        return str(found)
    return shutil.which("schemathesis") or pytest.skip("schemathesis is not installed")


def test_fuzzing_the_openapi_schema_finds_no_server_error(sqlite_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"ADAMOD_LAB_MAX_TRIALS": "50"}
    log = tmp_path / "server.log"
    with running_server(sqlite_url, env=env, log_path=str(log)) as url:
        result = subprocess.run(
            [
                _schemathesis(), "run", f"{url}/openapi.json",
                "--checks", "not_a_server_error",
                "--max-examples", "20",
                "--max-time", "20",
                "--seed", "20260101",
                "--generation-database", "none",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
    output = result.stdout[-8000:] + result.stderr[-2000:]
    assert result.returncode == 0, output + "\n--- server log\n" + log.read_text()[-4000:]
    assert "passed" in result.stdout
    assert " 500" not in log.read_text()

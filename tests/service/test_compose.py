"""docker-compose.yml validates with Debian's docker-compose 1.29 and has what the docs promise."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _config(*args: str) -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    result = subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_compose_file_validates() -> None:
    _config("config", "-q")


def test_compose_services_are_wired_as_documented() -> None:
    config = yaml.safe_load(_config("--profile", "dashboard", "--profile", "cpu", "config"))
    services = config["services"]
    assert {"db", "api", "worker", "worker-cpu", "dashboard"} <= set(services)
    db = services["db"]
    assert db["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert "pgdata" in str(db["volumes"]) and "pgdata" in config["volumes"]
    api = services["api"]
    assert api["depends_on"]["db"]["condition"] == "service_healthy"
    assert "0.0.0.0" in api["command"]
    assert api["ports"]
    worker = services["worker"]
    assert worker["restart"] == "unless-stopped"
    assert worker["stop_grace_period"]
    device = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "postgresql+psycopg://" in worker["environment"]["ADAMOD_LAB_DATABASE_URL"]
    assert services["dashboard"]["profiles"] == ["dashboard"]
    assert "optuna-dashboard" in services["dashboard"]["command"]


def test_dockerfile_uses_a_cuda_pytorch_base_and_keeps_its_torch() -> None:
    text = (ROOT / "Dockerfile").read_text()
    base = next(line for line in text.splitlines() if line.startswith("FROM "))
    assert "pytorch/pytorch:" in base and "cuda" in base and "runtime" in base
    assert "-c /tmp/base-constraints.txt" in text  # torch pinned to the image's build

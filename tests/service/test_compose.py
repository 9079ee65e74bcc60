"""docker-compose.yml validates with Debian's docker-compose 1.29 and has what the docs promise:
a required database password, workers that need only the database, a slim image for the API and
the dashboard, one Dockerfile whose targets every service builds, and a data volume for workers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {"POSTGRES_PASSWORD": "test-password-1234"}
PROFILES = ("--profile", "dashboard", "--profile", "cpu")


def _compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    # Only the variables given here: nothing from this shell, and an empty file instead of any
    # .env a developer keeps next to the compose file.
    base = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    with tempfile.NamedTemporaryFile("w", suffix=".env") as env_file:
        return subprocess.run(
            [binary, "-f", str(ROOT / "docker-compose.yml"), "--env-file", env_file.name, *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={**base, **env},
        )


def _config(env: dict[str, str] = REQUIRED) -> dict[str, Any]:
    result = _compose(*PROFILES, "config", env=env)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_file_validates_with_the_required_variables() -> None:
    result = _compose(*PROFILES, "config", "-q", env=REQUIRED)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("value", [None, ""])
def test_compose_refuses_to_run_without_a_database_password(value: str | None) -> None:
    env = {} if value is None else {"POSTGRES_PASSWORD": value}
    result = _compose(*PROFILES, "config", "-q", env=env)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def test_no_default_password_anywhere() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    uses = re.findall(r"\$\{POSTGRES_PASSWORD[^}]*\}", text)
    assert len(uses) >= 3  # the db, the workers' and API's URL, the dashboard's URL
    assert all(use.startswith("${POSTGRES_PASSWORD:?") for use in uses), uses
    config = _config()
    for name, service in config["services"].items():
        rendered = yaml.safe_dump(service)
        assert ":adamod@" not in rendered, name  # the old default password
    assert "test-password-1234" in config["services"]["db"]["environment"]["POSTGRES_PASSWORD"]


def test_compose_services_are_wired_as_documented() -> None:
    config = _config()
    services = config["services"]
    assert {"db", "api", "worker", "worker-cpu", "dashboard"} <= set(services)
    db = services["db"]
    assert db["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert "pgdata" in str(db["volumes"]) and "pgdata" in config["volumes"]
    api = services["api"]
    assert api["depends_on"]["db"]["condition"] == "service_healthy"
    assert "0.0.0.0" in api["command"]
    assert api["ports"] and all(str(p).startswith("127.0.0.1:") for p in api["ports"])
    # Tokens and the explicit opt-out reach the API, which refuses 0.0.0.0 without either.
    assert {"ADAMOD_LAB_API_TOKENS", "ADAMOD_LAB_ALLOW_NO_AUTH"} <= set(api["environment"])
    worker = services["worker"]
    assert worker["restart"] == "unless-stopped"
    assert worker["stop_grace_period"]
    device = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "postgresql+psycopg://" in worker["environment"]["ADAMOD_LAB_DATABASE_URL"]
    assert services["dashboard"]["profiles"] == ["dashboard"]
    assert "optuna-dashboard" in services["dashboard"]["command"]


def test_workers_depend_on_the_database_not_on_the_api() -> None:
    services = _config()["services"]
    for name in ("worker", "worker-cpu", "dashboard"):
        depends = services[name]["depends_on"]
        assert "api" not in depends, name
        assert depends["db"]["condition"] == "service_healthy", name


def test_workers_have_a_data_volume_and_its_variable() -> None:
    config = _config()
    assert "data" in config["volumes"]
    for name in ("worker", "worker-cpu"):
        service = config["services"][name]
        data_dir = service["environment"]["ADAMOD_LAB_DATA_DIR"]
        mounts = [str(volume) for volume in service["volumes"]]
        assert any(m.startswith("data:") and f":{data_dir}" in m for m in mounts), mounts


def _stages() -> dict[str, str]:
    """Dockerfile stage name -> its FROM image (or parent stage)."""
    text = (ROOT / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))
    stages = {}
    for base, name in re.findall(r"^FROM (\S+) AS (\S+)$", text, flags=re.M):
        stages[name] = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), base)
    return stages


def test_api_and_dashboard_use_the_slim_target_workers_the_cuda_one() -> None:
    services = _config()["services"]
    stages = _stages()
    targets = {name: services[name]["build"]["target"] for name in services if name != "db"}
    assert targets == {
        "api": "api",
        "dashboard": "api",
        "worker": "worker",
        "worker-cpu": "worker-cpu",
    }
    assert all(services[name]["build"]["context"] == str(ROOT) for name in targets)
    assert set(targets.values()) <= set(stages)  # one Dockerfile holds every target
    assert stages["api"].startswith("python:3.11-slim")
    assert stages["worker-cpu"] == "api"
    assert "pytorch/pytorch:" in stages["worker"] and "cuda" in stages["worker"]


def test_dockerfile_installs_cpu_torch_for_the_api_and_keeps_the_cuda_images_torch() -> None:
    text = (ROOT / "Dockerfile").read_text()
    api = text.split(" AS api")[1].split("\nFROM ")[0]
    assert "--index-url https://download.pytorch.org/whl/cpu" in api
    worker = text.split(" AS worker\n")[1]
    assert "-c /tmp/base-constraints.txt" in worker  # torch pinned to the image's build


def test_worker_images_have_a_c_compiler_for_the_fused_cpu_kernel() -> None:
    # adamod/_cpu_kernel.py compiles _cpu_kernel.c with cc/gcc (-fopenmp, -lmvec) on first use.
    text = (ROOT / "Dockerfile").read_text()
    for stage in ("worker-cpu", "worker"):
        body = text.split(f" AS {stage}\n")[1].split("\nFROM ")[0]
        assert re.search(r"apt-get install[^\n]*\bgcc\b", body), stage
        assert "libc6-dev" in body, stage

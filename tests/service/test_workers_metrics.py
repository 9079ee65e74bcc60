"""GET /workers and GET /metrics against a running API and real worker processes (SQLite file).

A worker shows in /workers with the trial it trains while it runs, and not once it has exited;
/metrics, parsed with prometheus-client's own parser, counts completed trials as they complete,
and labels requests by route template. A cancelled study whose worker was SIGKILLed is finished
by the API's sweep.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.processes import running_server
from tests.workers.procs import WorkerProcesses, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[httpx.Client, str]]:
    """A running API server on a fresh SQLite file: its client and the database URL."""
    database_url = f"sqlite:///{tmp_path / 'lab.db'}"
    with (
        running_server(database_url, log_path=str(tmp_path / "server.log")) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client, database_url


def _submit(client: httpx.Client, steps: int, sleep_s: float, seeds: int = 2) -> int:
    spec = {
        "name": "workers and metrics",
        "workload": "noop",
        "workload_config": {"steps_per_epoch": steps, "sleep_s": sleep_s, "eval_every": 1},
        "optimizers": ["adam", "adamod"],
        "lr": {"values": [0.01]},
        "seeds": seeds,
    }
    response = client.post("/studies", json=spec)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _samples(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics scrape, keyed by name and sorted labels."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _completed(samples: dict[Any, float]) -> float:
    return samples[("adamod_lab_trials_finished_total", (("state", "completed"),))]


def _running_ids(client: httpx.Client, study_id: int) -> set[int]:
    trials = client.get(f"/studies/{study_id}/trials").json()
    return {t["id"] for t in trials if t["state"] == "running"}


def test_workers_and_metrics_follow_a_real_worker(
    api: tuple[httpx.Client, str], tmp_path: Path
) -> None:
    client, database_url = api
    study_id = _submit(client, steps=8, sleep_s=0.1)  # 4 trials of about 1 s
    before = _samples(client)
    assert _completed(before) == 0
    assert before[("adamod_lab_trials", (("state", "queued"),))] == 4
    workers = WorkerProcesses(tmp_path)
    try:
        process = workers.start(
            database_url, "--pack-size", "1", "--lease-seconds", "1.5", "--exit-when-idle",
            "--poll-interval", "0.2",
        )  # fmt: skip

        def training() -> dict[str, Any] | None:
            listed = client.get("/workers").json()
            held = [w for w in listed if w["current_trial_ids"]]
            if held and set(held[0]["current_trial_ids"]) <= _running_ids(client, study_id):
                return held[0]
            return None

        worker = wait_for(training, 60, "the worker listed with its running trial")
        assert isinstance(worker, dict)
        assert (worker["host"], worker["pid"], worker["device"]) == (
            socket.gethostname(),
            process.pid,
            "cpu",
        )
        assert worker["state"] == "running" and len(worker["current_trial_ids"]) == 1
        assert worker["pack_size"] == 1
        assert _samples(client)[("adamod_lab_live_workers", ())] == 1
        seen = [_completed(_samples(client))]
        while process.poll() is None:
            seen.append(_completed(_samples(client)))
        assert process.wait(timeout=60) == 0, workers.log(process)
    finally:
        workers.kill_all()
    assert client.get("/workers").json() == []
    everyone = client.get("/workers", params={"all": "true"}).json()
    assert [(w["pid"], w["state"], w["current_trial_ids"]) for w in everyone] == [
        (process.pid, "exited", [])
    ]
    after = _samples(client)
    seen.append(_completed(after))
    assert seen == sorted(seen) and seen[-1] == 4  # the counter only moves up, to 4
    assert after[("adamod_lab_trials", (("state", "completed"),))] == 4
    assert after[("adamod_lab_trial_duration_seconds_count", ())] == 4
    assert after[("adamod_lab_trial_duration_seconds_bucket", (("le", "+Inf"),))] == 4
    assert after[("adamod_lab_trial_duration_seconds_sum", ())] > 0
    assert after[("adamod_lab_live_workers", ())] == 0
    routes = {dict(labels)["route"] for name, labels in after if name.startswith("adamod_lab_http")}
    assert {"/studies/{study_id}/trials", "/workers", "/metrics", "/studies"} <= routes
    assert not any(str(study_id) in route for route in routes)  # templates, not raw paths
    trials_ok = (("method", "GET"), ("route", "/studies/{study_id}/trials"), ("status", "200"))
    assert after[("adamod_lab_http_requests_total", trials_ok)] >= 1


def test_bad_queries_and_unknown_paths_are_4xx_and_bounded(api: tuple[httpx.Client, str]) -> None:
    client, _ = api
    for params in ({"stale_after_s": "nan"}, {"stale_after_s": "-1"}, {"all": "perhaps"}):
        assert client.get("/workers", params=params).status_code == 422
    for path in ("/no/such/path/1", "/no/such/path/2"):
        assert client.get(path).status_code == 404
    assert 400 <= client.request("PURGE", "/workers").status_code < 500
    samples = _samples(client)
    labels = [dict(labels) for name, labels in samples if name == "adamod_lab_http_requests_total"]
    assert {"route": "<unmatched>", "method": "GET", "status": "404"} in labels
    assert not any("/no/such" in label["route"] for label in labels)
    assert {label["method"] for label in labels} <= {"GET", "POST", "other"}


def test_the_api_ends_a_cancelled_study_whose_worker_was_killed(
    api: tuple[httpx.Client, str], tmp_path: Path
) -> None:
    client, database_url = api
    study_id = _submit(client, steps=400, sleep_s=0.05, seeds=1)  # trials of 20 s
    workers = WorkerProcesses(tmp_path)
    try:
        process = workers.start(database_url, "--pack-size", "1", "--lease-seconds", "1")
        wait_for(lambda: _running_ids(client, study_id), 60, "a running trial")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        workers.kill_all()
    assert client.delete(f"/studies/{study_id}").status_code == 200
    assert _running_ids(client, study_id)  # no worker is left to stop it

    def ended() -> bool:
        client.get("/workers")  # reading the workers also runs the API's sweep
        return not _running_ids(client, study_id)

    wait_for(ended, 30, "the killed worker's trial ended")
    study = client.get(f"/studies/{study_id}").json()
    assert study["status"] == "cancelled" and study["progress"]["running"] == 0
    states = {t["state"] for t in client.get(f"/studies/{study_id}/trials").json()}
    assert states == {"cancelled"}
    lost = client.get("/workers", params={"all": "true", "stale_after_s": "1"}).json()
    assert [(w["pid"], w["state"]) for w in lost] == [(process.pid, "lost")]

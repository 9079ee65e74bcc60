"""A real digits study through the API and two real workers, on SQLite and on PostgreSQL."""

from __future__ import annotations

import math
import time
from collections import Counter

import httpx
import optuna
import pytest
from pydantic import TypeAdapter

from service.processes import running_server
from service.schemas import TrialOut

from .conftest import log_tail, poll, running_workers

pytestmark = pytest.mark.slow

DIGITS_STUDY = {
    "name": "e2e digits",
    "workload": "digits_mlp",
    "workload_config": {"hidden": 32, "depth": 1},
    "optimizers": ["adam", "adamod"],
    "lr": {"min": 1e-3, "max": 1e-1, "points": 3},
    "beta3": [0.999],
    "seeds": 2,
    "budget": {"steps": 20},
}
TERMINAL = {"completed", "diverged", "failed", "cancelled"}


def test_digits_study_end_to_end(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with (
        running_server(database_url, log_path=str(tmp_path / "server.log")) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        created = client.post("/studies", json=DIGITS_STUDY)
        assert created.status_code == 201, created.text
        study = created.json()
        n = study["n_trials"]
        assert n == 12  # 2 optimizers x 3 lrs x 2 seeds
        # No worker yet: the report exists, is partial, and has no results in it.
        early = client.get(f"/studies/{study['id']}/report").json()
        assert early["complete"] is False and early["n_used"] == 0
        with running_workers(database_url, 2, tmp_path):
            try:
                study = poll(client, study["id"], lambda s: s["status"] == "completed", timeout=150)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{log_tail(tmp_path)}") from None
            assert study["progress"]["completed"] + study["progress"]["diverged"] == n
            assert study["started_at"] and study["finished_at"]

            # Every grid point completed exactly once, by one of our workers.
            trials = client.get(f"/studies/{study['id']}/trials").json()
            TypeAdapter(list[TrialOut]).validate_python(trials)  # the documented shape
            assert sorted(t["number"] for t in trials) == list(range(n))
            keys = Counter(
                (p["optimizer"], p["lr"], p["beta3"], p["warmup_steps"], p["seed"])
                for p in (t["params"] for t in trials)
            )
            assert len(keys) == n and set(keys.values()) == {1}
            assert {t["state"] for t in trials} <= {"completed", "diverged"}
            assert all(t["attempts"] == 1 for t in trials)
            assert all(t["worker"]["device"] == "cpu" for t in trials)
            assert all(t["curve"] and t["loss0"] is not None for t in trials)

            report = client.get(f"/studies/{study['id']}/report")
            assert report.status_code == 200
            body = report.json()
            assert body["complete"] is True and body["n_used"] == n
            assert body["status"] == "completed" and body["spec"]["workload"] == "digits_mlp"
            assert body["reference"] == "adam" and body["target"]["source"] == "reference"
            assert body["environment"]["torch"] and body["environment"]["devices"] == ["cpu"]
            # 2 seeds: the comparison says so instead of giving a verdict or an interval.
            (comparison,) = body["comparisons"]
            assert comparison["underpowered"] is True and comparison["ci_t"] is None
            assert all(p["steps_to_target"] is None or p["steps_to_target"] > 0
                       for c in body["configs"] for p in c["curve"])  # fmt: skip
            for name, path in study["links"]["plots"].items():
                png = client.get(path)
                assert png.status_code == 200, (name, png.text)
                assert png.headers["content-type"] == "image/png"
                assert png.content.startswith(b"\x89PNG") and len(png.content) > 5000
            html = client.get(study["links"]["report_html"])
            assert html.status_code == 200 and "<img" in html.text
            # The cached report answers again, identically.
            assert client.get(f"/studies/{study['id']}/report").content == report.content

    # Optuna sees the same trials in the same database.
    loaded = optuna.load_study(study_name=study["links"]["optuna_study_name"], storage=database_url)
    finished = [t for t in loaded.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == n
    assert all(t.intermediate_values for t in finished)  # one value per evaluation

    def grid_point(params: dict) -> tuple:
        return (params["optimizer"], float(f"{params['lr']:.12g}"), params["seed"])

    # Only the varying axes are Optuna params; the seed and fixed settings are user attributes.
    assert {grid_point({**t.user_attrs, **t.params}) for t in finished} == {
        grid_point(t["params"]) for t in trials
    }
    ours = {t["number"]: t for t in trials}
    values = sorted(t.value for t in finished)
    expected = sorted(
        t["loss0"] if t["state"] == "diverged" else min(t["value"], t["loss0"])
        for t in ours.values()
    )
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(values, expected, strict=True))


def test_cancel_mid_study_stops_queued_trials(sqlite_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    slow = {
        "name": "cancel me",
        "workload": "noop",
        "workload_config": {"steps_per_epoch": 4, "sleep_s": 0.2},
        "optimizers": ["adam"],
        "lr": {"min": 1e-3, "max": 1e-1, "points": 20},
        "seeds": 1,
        "budget": {"steps": 4},
    }
    with (
        running_server(sqlite_url, log_path=str(tmp_path / "server.log")) as url,
        httpx.Client(base_url=url, timeout=60) as client,
        # One trial at a time: a pack would start every trial before the cancel.
        running_workers(sqlite_url, 1, tmp_path, "--pack-size", "1"),
    ):
        study = client.post("/studies", json=slow).json()
        poll(client, study["id"], lambda s: s["progress"]["completed"] >= 2, timeout=90)
        cancelled = client.delete(f"/studies/{study['id']}")
        assert cancelled.status_code == 200
        at_cancel = cancelled.json()["progress"]
        assert cancelled.json()["status"] == "cancelled"
        assert at_cancel["queued"] == 0  # queued trials are cancelled at once
        # Wait for the running trial (if any) to stop, then make sure nothing else started.
        poll(client, study["id"], lambda s: s["progress"]["running"] == 0, timeout=30)
        time.sleep(1.5)
        final = client.get(f"/studies/{study['id']}").json()
        p = final["progress"]
        assert p["completed"] <= at_cancel["completed"] + at_cancel["running"]
        assert p["completed"] + p["cancelled"] + p["diverged"] + p["failed"] == 20
        assert p["cancelled"] >= 20 - at_cancel["completed"] - at_cancel["running"] > 0
        trials = client.get(f"/studies/{study['id']}/trials").json()
        assert all(t["state"] in TERMINAL for t in trials)
        report = client.get(f"/studies/{study['id']}/report").json()
        # A cancelled study's report is never "complete", and its page says cancelled.
        assert report["status"] == "cancelled" and report["complete"] is False
        assert report["counts"]["cancelled"] == p["cancelled"]
        assert report["headline"][0].startswith("Study cancelled")
        page = client.get(f"/studies/{study['id']}/report.html").text
        assert "cancelled" in page.lower()

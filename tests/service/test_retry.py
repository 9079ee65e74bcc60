"""POST /studies/{id}/retry against a live server and real worker processes, on SQLite and
PostgreSQL: failed and cancelled trials run again to completion, the rest is untouched, the
Optuna mirror ends with one COMPLETE trial per grid point; 404, 401 and the no-op."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import httpx
import optuna
import pytest
from optuna.trial import TrialState

from service.cli import main
from studies.db import Database
from studies.db.queue import requeue_expired
from tests.workers.procs import WorkerProcesses, wait_for

from .conftest import TOKEN, Api, row_counts

pytestmark = pytest.mark.slow

# 4 trials (adam and adamod at 2 lrs, 1 seed) of about 1 s each.
SPEC: dict[str, Any] = {
    "name": "retry-test",
    "workload": "noop",
    "workload_config": {"steps_per_epoch": 4, "sleep_s": 0.25, "eval_every": 1},
    "optimizers": ["adam", "adamod"],
    "lr": {"values": [0.01, 0.1]},
    "seeds": 1,
    "budget": {"steps": 4},
}
# One trial at a time: the tests follow single trials (a pack would hold all four).
WORKER_ARGS = ("--pack-size", "1", "--poll-interval", "0.2")


@pytest.fixture
def workers(tmp_path) -> Iterator[WorkerProcesses]:  # type: ignore[no-untyped-def]
    """Real worker subprocesses, killed when the test ends whatever happened."""
    processes = WorkerProcesses(tmp_path)
    try:
        yield processes
    finally:
        processes.kill_all()


def _submit(api: Api, name: str) -> dict[str, Any]:
    created = api.client.post("/studies", json={**SPEC, "name": name})
    assert created.status_code == 201, created.text
    return created.json()


def _study(api: Api, study_id: int) -> dict[str, Any]:
    return api.client.get(f"/studies/{study_id}").json()


def _trials(api: Api, study_id: int) -> dict[int, dict[str, Any]]:
    return {t["number"]: t for t in api.client.get(f"/studies/{study_id}/trials").json()}


def _retry(api: Api, study_id: int) -> dict[str, Any]:
    response = api.client.post(f"/studies/{study_id}/retry")
    assert response.status_code == 200, response.text
    return response.json()


def _run_until_idle(api: Api, workers: WorkerProcesses) -> None:
    worker = workers.start(api.database_url, "--exit-when-idle", *WORKER_ARGS)
    assert worker.wait(timeout=180) == 0, workers.log(worker)


def _assert_mirror_complete(api: Api, study: dict[str, Any]) -> None:
    """One COMPLETE Optuna trial per grid point, numbered by the grid, naming our trial."""
    name = study["links"]["optuna_study_name"]
    trials = optuna.load_study(study_name=name, storage=api.database_url).trials
    assert sorted(t.number for t in trials) == list(range(study["n_trials"]))
    assert all(t.state == TrialState.COMPLETE and t.value is not None for t in trials)
    ours = _trials(api, study["id"])
    assert {t.number: t.user_attrs["adamod_lab_trial_id"] for t in trials} == {
        n: t["id"] for n, t in ours.items()
    }
    assert all("error" not in t.user_attrs for t in trials)


def test_failed_trial_is_retried_and_completed_by_a_worker(
    api: Api, workers: WorkerProcesses
) -> None:
    study = _submit(api, "retry failed")
    sid = study["id"]
    # A worker that dies mid-trial on its only allowed attempt: that trial ends `failed`.
    doomed = workers.start(
        api.database_url, "--max-attempts", "1", "--lease-seconds", "2", *WORKER_ARGS
    )
    wait_for(
        lambda: (p := _study(api, sid)["progress"])["completed"] >= 1 and p["running"] == 1,
        timeout=120,
        what="one trial completed and the next one running",
    )
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    db = Database(api.database_url)
    try:
        # Any live worker's sweep, once the lease expired: the last attempt is spent, so failed.
        wait_for(lambda: requeue_expired(db, max_attempts=1), timeout=30, what="the sweep")
    finally:
        db.dispose()
    before = _trials(api, sid)
    failed = [n for n, t in before.items() if t["state"] == "failed"]
    finished = {n: t for n, t in before.items() if t["state"] == "completed"}
    assert len(failed) == 1 and finished, before
    assert "lease expired" in before[failed[0]]["error"]
    fail_mirror = optuna.load_study(
        study_name=study["links"]["optuna_study_name"], storage=api.database_url
    ).trials
    assert {t.number: t.state for t in fail_mirror}[failed[0]] == TrialState.FAIL

    retried = _retry(api, sid)
    assert retried["requeued"] == 1
    assert retried["status"] == "running" and retried["finished_at"] is None
    assert retried["progress"]["failed"] == 0
    assert {k: v for k, v in retried.items() if k != "requeued"} == _study(api, sid)
    requeued = _trials(api, sid)[failed[0]]
    assert requeued["state"] == "queued" and requeued["attempts"] == 0
    assert requeued["error"] is None and requeued["curve"] == [] and requeued["worker"] is None

    _run_until_idle(api, workers)
    after = _trials(api, sid)
    assert [t["state"] for t in after.values()] == ["completed"] * 4
    assert all(t["attempts"] == 1 and t["error"] is None for t in after.values())
    assert {n: after[n] for n in finished} == finished  # completed before: untouched
    assert after[failed[0]]["worker"]["pid"] != doomed.pid  # run again, by the second worker
    final = _study(api, sid)
    assert final["status"] == "completed" and final["progress"]["completed"] == 4
    _assert_mirror_complete(api, final)
    assert _retry(api, sid)["requeued"] == 0  # nothing left to retry: a no-op


def test_cancelled_study_is_resumed_and_runs_to_completion(
    api: Api, workers: WorkerProcesses
) -> None:
    study = _submit(api, "retry cancelled")
    sid = study["id"]
    cancelled = api.client.delete(f"/studies/{sid}").json()
    assert cancelled["status"] == "cancelled" and cancelled["progress"]["cancelled"] == 4

    retried = _retry(api, sid)
    assert retried["requeued"] == 4
    assert retried["status"] == "queued" and retried["progress"]["queued"] == 4
    assert retried["finished_at"] is None and retried["started_at"] is None
    listed = api.client.get("/studies", params={"status": "cancelled"}).json()
    assert sid not in [s["id"] for s in listed]

    _run_until_idle(api, workers)
    final = _study(api, sid)
    assert final["status"] == "completed" and final["progress"]["completed"] == 4
    assert final["finished_at"] is not None
    _assert_mirror_complete(api, final)
    report = api.client.get(f"/studies/{sid}/report").json()
    assert report["complete"] is True and report["counts"]["completed"] == 4


def test_retry_of_an_unknown_study_is_404(api: Api) -> None:
    before = row_counts(api.database_url)
    response = api.client.post("/studies/987654/retry")
    assert response.status_code == 404
    assert response.json() == {"detail": "study 987654 not found"}
    assert api.client.post("/studies/0/retry").status_code == 422
    assert api.client.post("/studies/x/retry").status_code == 422
    assert api.client.get("/studies/1/retry").status_code == 405
    assert row_counts(api.database_url) == before


def test_retry_of_a_study_with_nothing_to_retry_is_a_no_op(api: Api) -> None:
    study = _submit(api, "retry nothing")
    api.client.delete(f"/studies/{study['id']}")  # leaves nothing queued for other tests
    _retry(api, study["id"])  # now nothing is failed or cancelled, and nothing ran
    before = row_counts(api.database_url)
    again = _retry(api, study["id"])
    assert again["requeued"] == 0 and again["status"] == "queued"
    assert row_counts(api.database_url) == before
    api.client.delete(f"/studies/{study['id']}")


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic dXNlcjpwYXNz"}],
    ids=["none", "wrong", "basic"],
)
def test_retry_needs_a_valid_token(api: Api, headers: dict[str, str]) -> None:
    study = _submit(api, "retry auth")
    api.client.delete(f"/studies/{study['id']}")
    before = row_counts(api.database_url)
    with httpx.Client(base_url=api.url, timeout=30) as anonymous:
        response = anonymous.post(f"/studies/{study['id']}/retry", headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
        assert "token" in response.json()["detail"]
        # Unknown studies are not told apart from known ones without a token.
        assert anonymous.post("/studies/987654/retry", headers=headers).status_code == 401
    assert row_counts(api.database_url) == before
    after = _study(api, study["id"])
    assert after["status"] == "cancelled" and after["progress"]["cancelled"] == 4


def test_retry_is_in_the_openapi_document(api: Api) -> None:
    operation = api.client.get("/openapi.json").json()["paths"]["/studies/{study_id}/retry"]
    post = operation["post"]
    assert {"200", "401", "404", "422"} <= set(post["responses"])
    schema = post["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/RetryOut"}


def test_cli_retry_says_what_it_queued(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    study = _submit(api, "retry cli")
    api.client.delete(f"/studies/{study['id']}")
    args = ("--url", api.url, "--token", TOKEN)
    capsys.readouterr()
    assert main(["retry", str(study["id"]), *args]) == 0
    assert f"study {study['id']} queued: 4 failed or cancelled trials queued again" in (
        capsys.readouterr().out
    )
    assert main(["retry", str(study["id"]), *args]) == 0
    assert "no failed or cancelled trial to retry" in capsys.readouterr().out
    api.client.delete(f"/studies/{study['id']}")  # leaves nothing queued for other tests
    assert main(["retry", "987654", *args]) == 1
    err = capsys.readouterr().err
    assert f"there is no study 987654 at {api.url}" in err and "Traceback" not in err
    assert main(["retry", str(study["id"]), "--url", api.url, "--token", "wrong"]) == 1
    assert "401" in capsys.readouterr().err

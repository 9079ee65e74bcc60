"""`adamod-lab` list, cancel, submit --wait's exit status, "did you mean", and floats as sent, run
in-process against a live server (uvicorn subprocess) on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.cli import main
from service.cli_commands import outcome, wait
from service.client import Client
from tests.e2e.conftest import running_workers
from tests.service.conftest import TOKEN, Api


def _spec(name: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "workload": "noop",
        "workload_config": {"steps_per_epoch": 2},
        "optimizers": ["adam"],
        "lr": {"values": [1e-3]},
        "seeds": 2,
        "budget": {"steps": 2},
    }
    spec.update(overrides)
    return spec


def _write(tmp_path: Path, spec: dict[str, Any]) -> Path:
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _cli(api: Api, *args: str) -> int:
    return main([*args, "--url", api.url, "--token", TOKEN])


def _submit(api: Api, spec: dict[str, Any]) -> dict[str, Any]:
    response = api.client.post("/studies", json=spec)
    assert response.status_code == 201, response.text
    return response.json()


def test_list_shows_studies_newest_first_and_filters_by_status(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _submit(api, _spec("list-first"))
    second = _submit(api, _spec("list-second"))
    api.client.delete(f"/studies/{second['id']}")
    capsys.readouterr()
    assert _cli(api, "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "PROGRESS", "CREATED"]
    ids = [int(line.split()[0]) for line in lines[1:]]
    assert ids.index(second["id"]) < ids.index(first["id"])  # newest first
    row = next(line for line in lines if line.startswith(f"{second['id']} "))
    assert "list-second" in row and "cancelled" in row and "2/2" in row

    assert _cli(api, "list", "--status", "cancelled", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert second["id"] in [s["id"] for s in listed]
    assert first["id"] not in [s["id"] for s in listed]
    assert {s["status"] for s in listed} == {"cancelled"}


def test_list_rejects_an_unknown_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["list", "--status", "done", "--url", "http://127.0.0.1:9"])
    assert exit_info.value.code == 2
    assert "--status" in capsys.readouterr().err


def test_cancel_stops_a_study_and_names_an_unknown_id(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _submit(api, _spec("to-cancel"))
    assert _cli(api, "cancel", str(study["id"])) == 0
    assert f"study {study['id']} cancelled: 2 trials will not run" in capsys.readouterr().out
    assert api.client.get(f"/studies/{study['id']}").json()["status"] == "cancelled"

    assert _cli(api, "cancel", "999999") == 1
    err = capsys.readouterr().err
    assert f"there is no study 999999 at {api.url}" in err
    assert "Traceback" not in err


def test_waiting_on_a_cancelled_study_exits_1_and_says_so(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _submit(api, _spec("wait-cancelled"))
    api.client.delete(f"/studies/{study['id']}")
    client = Client(api.url, TOKEN)
    try:
        assert wait(client, study, interval=0.05) == 1
    finally:
        client.close()
    assert f"study {study['id']} was cancelled: 2 of 2 trials did not finish" in (
        capsys.readouterr().err
    )


def test_submit_wait_exits_1_and_counts_the_failed_trials(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Seed 0 fails at its first step, seed 1 completes: the study completes, with one failure.
    spec = _spec(
        "one-fails", workload_config={"steps_per_epoch": 2, "fail_at_step": 1, "fail_seeds": [0]}
    )
    path = _write(tmp_path, spec)
    with running_workers(api.database_url, 1, tmp_path, "--max-attempts", "1"):
        code = _cli(api, "submit", str(path), "--wait", "--interval", "0.2")
    captured = capsys.readouterr()
    assert code == 1, captured.err
    study_id = int(captured.out.strip())
    assert f"study {study_id} completed, but 1 of 2 trials failed" in captured.err
    assert api.client.get(f"/studies/{study_id}").json()["progress"]["failed"] == 1


def test_a_mistyped_field_gets_did_you_mean(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec("typo")
    spec["seed"] = spec.pop("seeds")
    spec["lr"] = {"min": 1e-3, "max": 1e-1, "point": 3}
    spec["workload_config"] = {"step_per_epoch": 2}
    response = api.client.post("/studies", json=spec)
    assert response.status_code == 422
    messages = {tuple(d["loc"]): d["msg"] for d in response.json()["detail"]}
    assert "did you mean 'seeds'?" in messages[("body", "seed")]
    assert "did you mean 'points'?" in messages[("body", "lr", "point")]
    assert (
        "did you mean 'steps_per_epoch'?" in messages[("body", "workload_config", "step_per_epoch")]
    )

    assert _cli(api, "submit", str(_write(tmp_path, spec))) == 1
    err = capsys.readouterr().err
    assert (
        "body.seed: Extra inputs are not permitted: unknown field 'seed'; did you mean "
        "'seeds'?" in err
    )


def test_floats_come_back_as_floats(api: Api) -> None:
    # JSONB stores 1e25 as numeric and PostgreSQL wrote it back as the int 10**25.
    spec = _spec("big-floats", lr={"values": [1e-3, 1e25]}, eps=1e20, seeds=1)
    created = _submit(api, spec)
    for study in (created, api.client.get(f"/studies/{created['id']}").json()):
        assert study["spec"]["lr"]["values"] == [1e-3, 1e25]
        assert all(isinstance(v, float) for v in study["spec"]["lr"]["values"])
        assert isinstance(study["spec"]["eps"], float) and study["spec"]["eps"] == 1e20
        assert isinstance(study["spec"]["seeds"], int)
    listed = api.client.get("/studies", params={"limit": 500}).json()
    mine = next(s for s in listed if s["id"] == created["id"])
    assert isinstance(mine["spec"]["lr"]["values"][1], float)
    # The trial rows too, and in the response's JSON text as sent (1e+25, not 1000...0).
    response = api.client.get(f"/studies/{created['id']}/trials")
    assert sorted(t["params"]["lr"] for t in response.json()) == [1e-3, 1e25]
    assert all(isinstance(t["params"]["lr"], float) for t in response.json())
    assert "1e+25" in response.text and "10000000000000000000000000" not in response.text


def test_outcome_is_0_only_when_every_trial_completed_or_diverged() -> None:
    progress = {"total": 4, "completed": 3, "diverged": 1, "failed": 0}
    assert outcome({"id": 1, "status": "completed", "progress": progress})[0] == 0
    failed = {**progress, "diverged": 0, "failed": 1}
    assert outcome({"id": 1, "status": "completed", "progress": failed})[0] == 1
    everything_failed = {"total": 2, "failed": 2}
    code, line = outcome({"id": 1, "status": "failed", "progress": everything_failed})
    assert code == 1 and "2 of 2 trials failed" in line

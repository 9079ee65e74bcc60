"""The REST contract against a live server: happy paths, auth, idempotency, and every bad input.

Every rejected request must leave the database exactly as it was (row counts of every table).
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import httpx
import pytest

from .conftest import OTHER_TOKEN, Api, row_counts

pytestmark = pytest.mark.slow

SPEC: dict[str, Any] = {
    "name": "api-test",
    "workload": "noop",
    "workload_config": {"steps_per_epoch": 5},
    "optimizers": ["adam", "adamod"],
    "lr": {"values": [0.01, 0.1]},
    "seeds": 1,
    "budget": {"steps": 5},
}


def spec(**changes: Any) -> dict[str, Any]:
    """SPEC with some fields replaced (None removes the field)."""
    out = copy.deepcopy(SPEC)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def test_submit_read_list_cancel(api: Api) -> None:
    created = api.client.post("/studies", json=spec(name="first"))
    assert created.status_code == 201, created.text
    study = created.json()
    assert created.headers["location"] == f"/studies/{study['id']}"
    assert study["status"] == "queued"
    assert study["n_trials"] == 4  # adam: 2 lrs; adamod: 2 lrs x 1 beta3
    assert study["progress"]["total"] == 4 and study["progress"]["queued"] == 4
    assert study["spec"]["beta3"] == [0.999]  # defaults filled in
    assert study["links"]["plots"]["lr_curves"] == f"/studies/{study['id']}/plots/lr_curves.png"
    assert study["created_at"] and study["finished_at"] is None

    second = api.client.post("/studies", json=spec(name="second")).json()
    assert api.client.get(f"/studies/{study['id']}").json() == study

    listed = api.client.get("/studies").json()
    ids = [s["id"] for s in listed]
    assert ids.index(second["id"]) < ids.index(study["id"])  # newest first
    assert [s["id"] for s in api.client.get("/studies", params={"limit": 1}).json()] == ids[:1]
    page = api.client.get("/studies", params={"limit": 1, "offset": 1}).json()
    assert [s["id"] for s in page] == ids[1:2]

    trials = api.client.get(f"/studies/{study['id']}/trials").json()
    assert sorted(t["number"] for t in trials) == [0, 1, 2, 3]
    assert {t["state"] for t in trials} == {"queued"}
    assert {t["params"]["optimizer"] for t in trials} == {"adam", "adamod"}

    cancelled = api.client.delete(f"/studies/{study['id']}")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    statuses = {s["id"]: s["status"] for s in api.client.get("/studies").json()}
    assert statuses[study["id"]] == "cancelled" and statuses[second["id"]] == "queued"
    only = api.client.get("/studies", params={"status": "cancelled"}).json()
    assert study["id"] in [s["id"] for s in only]
    assert all(s["status"] == "cancelled" for s in only)
    trials = api.client.get(f"/studies/{study['id']}/trials").json()
    assert {t["state"] for t in trials} == {"cancelled"}


def test_report_of_a_study_without_results_is_partial(api: Api) -> None:
    study = api.client.post("/studies", json=spec(name="no results yet")).json()
    report = api.client.get(f"/studies/{study['id']}/report")
    assert report.status_code == 200, report.text
    assert report.json()["complete"] is False
    html = api.client.get(f"/studies/{study['id']}/report.html")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    png = api.client.get(f"/studies/{study['id']}/plots/lr_curves.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


def test_workloads_docs_and_health(api: Api) -> None:
    workloads = {w["name"]: w for w in api.client.get("/workloads").json()}
    assert {"noop", "quadratic", "digits_mlp"} <= set(workloads)
    digits = workloads["digits_mlp"]
    assert digits["description"] and "hidden" in digits["config_schema"]["properties"]
    assert len(digits["default_budget"]) == 1
    health = api.client.get("/healthz")
    assert health.status_code == 200 and health.json()["database"] == "ok"
    assert api.client.get("/docs").status_code == 200
    schema = api.client.get("/openapi.json").json()
    body = schema["paths"]["/studies"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/StudySpec"}
    assert "digits" in body["examples"]
    assert "lr" in schema["components"]["schemas"]["StudySpec"]["properties"]


def test_openapi_example_is_a_valid_study(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    body = schema["paths"]["/studies"]["post"]["requestBody"]["content"]["application/json"]
    for name, example in body["examples"].items():
        value = dict(example["value"], seeds=1)  # keep it under this server's max_trials
        value["lr"] = {"values": [0.01]}
        response = api.client.post("/studies", json=value)
        assert response.status_code == 201, (name, response.text)


# ---------------------------------------------------------------- idempotency


def test_idempotency_key_replays_and_conflicts(api: Api) -> None:
    key = str(uuid.uuid4())
    headers = {"Idempotency-Key": key}
    first = api.client.post("/studies", json=spec(name="idem"), headers=headers)
    assert first.status_code == 201
    before = row_counts(api.database_url)
    again = api.client.post("/studies", json=spec(name="idem"), headers=headers)
    assert again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    conflict = api.client.post("/studies", json=spec(name="other body"), headers=headers)
    assert conflict.status_code == 409
    assert "Idempotency-Key" in conflict.json()["detail"]
    assert row_counts(api.database_url) == before


# ---------------------------------------------------------------- auth


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "test-token-0123456789"},  # the token without the scheme
        {"Authorization": "Bearer test-token-012345678"},  # a prefix of the token
        {"Authorization": "Bearer t\u00e9st".encode("latin-1")},  # not ASCII
    ],
    ids=["none", "wrong", "empty", "basic", "no-scheme", "prefix", "latin1"],
)
def test_mutating_routes_need_a_valid_token(api: Api, headers: dict[str, Any]) -> None:
    existing = api.client.post("/studies", json=spec(name="auth target")).json()["id"]
    before = row_counts(api.database_url)
    with httpx.Client(base_url=api.url, timeout=30) as anonymous:
        for method, path, kwargs in [
            ("POST", "/studies", {"json": spec()}),
            ("DELETE", f"/studies/{existing}", {}),
        ]:
            response = anonymous.request(method, path, headers=headers, **kwargs)
            assert response.status_code == 401, (method, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert "token" in response.json()["detail"]
        # Reads stay open unless ADAMOD_LAB_PROTECT_READS is set.
        assert anonymous.get(f"/studies/{existing}").status_code == 200
    assert row_counts(api.database_url) == before
    assert api.client.get(f"/studies/{existing}").json()["status"] == "queued"


def test_any_configured_token_is_accepted(api: Api) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as other:
        response = other.post(
            "/studies", json=spec(), headers={"Authorization": f"Bearer {OTHER_TOKEN}"}
        )
    assert response.status_code == 201


# ---------------------------------------------------------------- bad input

BAD_BODIES: list[tuple[str, bytes | dict | list, list]] = [
    ("not json", b"{name: 1", ["body"]),
    ("empty body", b"", ["body"]),
    ("a list", [SPEC], ["body"]),
    ("a number", b"42", ["body"]),
    ("NaN", b'{"name": "x", "workload": "noop", "eps": NaN}', ["body"]),
    ("1e999", b'{"name": "x", "workload": "noop", "eps": 1e999}', ["body"]),
    ("5000-digit int", b'{"name": "x", "workload": "noop", "seeds": 1' + b"0" * 5000 + b"}",
     ["body"]),
    ("deep nesting", b"[" * 5000 + b"]" * 5000, ["body"]),
    ("over the size limit", b"[" * 10001 + b"]" * 10001, None),  # 413: more than 20000 bytes
    ("missing name", spec(name=None), ["body", "name"]),
    ("blank name", spec(name="   "), ["body", "name"]),
    ("missing workload", spec(workload=None), ["body", "workload"]),
    ("unknown workload", spec(workload="nope"), ["body", "workload"]),
    ("import path", spec(workload="os.system"), ["body", "workload"]),
    ("workload_config field", spec(workload_config={"steps_per_epoch": 0}),
     ["body", "workload_config", "steps_per_epoch"]),
    ("workload_config extra", spec(workload_config={"bogus": 1}),
     ["body", "workload_config", "bogus"]),
    ("workload_config type", spec(workload_config=[1]), ["body", "workload_config"]),
    ("unknown optimizer", spec(optimizers=["adam", "lion"]), ["body", "optimizers", 1]),
    ("no optimizers", spec(optimizers=[]), ["body", "optimizers"]),
    ("duplicate optimizers", spec(optimizers=["adam", "adam"]), ["body", "optimizers"]),
    ("lr min > max", spec(lr={"min": 1.0, "max": 0.1, "points": 3}), ["body", "lr"]),
    ("lr negative", spec(lr={"values": [-0.1]}), ["body", "lr"]),
    ("lr both forms", spec(lr={"values": [0.1], "min": 0.1}), ["body", "lr"]),
    ("beta3 = 1", spec(beta3=[1.0]), ["body", "beta3", 0]),
    ("warmup negative", spec(warmup_steps=[-1]), ["body", "warmup_steps", 0]),
    ("seeds zero", spec(seeds=0), ["body", "seeds"]),
    ("seeds string", spec(seeds="3"), ["body", "seeds"]),
    ("seeds huge", spec(seeds=10**30), ["body", "seeds"]),
    ("budget both", spec(budget={"epochs": 1, "steps": 1}), ["body", "budget"]),
    ("budget zero", spec(budget={"steps": 0}), ["body", "budget", "steps"]),
    ("extra field", spec(colour="blue"), ["body", "colour"]),
    ("priority huge", spec(priority=10**12), ["body", "priority"]),
    ("name too long", spec(name="n" * 1000), ["body", "name"]),
    ("betas wrong length", spec(betas=[0.9]), ["body", "betas"]),
    ("too many trials", spec(lr={"min": 1e-4, "max": 1.0, "points": 31}), ["body", "lr"]),
]


@pytest.mark.parametrize("case", BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_study_bodies_are_rejected_and_change_nothing(api: Api, case: tuple) -> None:
    _, body, loc = case
    before = row_counts(api.database_url)
    if isinstance(body, bytes):
        kwargs: dict[str, Any] = {"content": body, "headers": {"content-type": "application/json"}}
    else:
        kwargs = {"json": body}
    response = api.client.post("/studies", **kwargs)
    if loc is None:
        assert response.status_code == 413, response.text
    else:
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert any(d["loc"][: len(loc)] == loc for d in detail), detail
        assert all(d["msg"] for d in detail)
    assert row_counts(api.database_url) == before


def test_body_size_limit(api: Api) -> None:
    before = row_counts(api.database_url)
    big = spec(name="x" * 30_000)
    response = api.client.post("/studies", json=big)
    assert response.status_code == 413
    assert "20000" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit must count the streamed bytes
        yield b'{"name": "'
        for _ in range(40):
            yield b"x" * 1000
        yield b'"}'

    streamed = api.client.post(
        "/studies", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert row_counts(api.database_url) == before


BAD_REQUESTS: list[tuple[str, str, str, dict, int]] = [
    ("id not int", "GET", "/studies/abc", {}, 422),
    ("id float", "GET", "/studies/1.5", {}, 422),
    ("id zero", "GET", "/studies/0", {}, 422),
    ("id negative", "GET", "/studies/-3", {}, 422),
    ("id huge", "GET", "/studies/99999999999999999999999", {}, 422),
    ("id 2^31", "GET", "/studies/2147483648", {}, 422),
    ("unknown id", "GET", "/studies/2147483647", {}, 404),
    ("unknown trials", "GET", "/studies/987654/trials", {}, 404),
    ("unknown report", "GET", "/studies/987654/report", {}, 404),
    ("unknown html", "GET", "/studies/987654/report.html", {}, 404),
    ("unknown plot study", "GET", "/studies/987654/plots/lr_curves.png", {}, 404),
    ("unknown delete", "DELETE", "/studies/987654", {}, 404),
    ("delete bad id", "DELETE", "/studies/x", {}, 422),
    ("limit zero", "GET", "/studies", {"params": {"limit": 0}}, 422),
    ("limit 501", "GET", "/studies", {"params": {"limit": 501}}, 422),
    ("limit text", "GET", "/studies", {"params": {"limit": "ten"}}, 422),
    ("offset negative", "GET", "/studies", {"params": {"offset": -1}}, 422),
    ("offset huge", "GET", "/studies", {"params": {"offset": 10**40}}, 422),
    ("status unknown", "GET", "/studies", {"params": {"status": "done"}}, 422),
    ("idempotency key too long", "POST", "/studies",
     {"json": SPEC, "headers": {"Idempotency-Key": "k" * 300}}, 422),
    ("method not allowed", "PUT", "/studies", {"json": SPEC}, 405),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_their_4xx_and_change_nothing(api: Api, case: tuple) -> None:
    _, method, path, kwargs, expected = case
    before = row_counts(api.database_url)
    response = api.client.request(method, path, **kwargs)
    assert response.status_code == expected, response.text
    assert "detail" in response.json()
    if expected == 422:
        assert all(d["loc"] for d in response.json()["detail"])
    assert row_counts(api.database_url) == before


def test_unknown_plot_name_lists_the_valid_ones(api: Api) -> None:
    study = api.client.post("/studies", json=spec()).json()
    response = api.client.get(f"/studies/{study['id']}/plots/nope.png")
    assert response.status_code == 404
    detail = response.json()["detail"]
    for name in ("lr_curves", "beta3_surface", "warmup", "budget"):
        assert name in detail


def test_validation_errors_name_the_field(api: Api) -> None:
    response = api.client.post("/studies", json=spec(seeds=-1, eps=0))
    locs = {tuple(d["loc"]) for d in response.json()["detail"]}
    assert ("body", "seeds") in locs and ("body", "eps") in locs
    json.dumps(response.json())  # strict JSON: no NaN leaked into the error body

"""GET /compare, /compare.html and /compare/profiles.png on a real uvicorn over a real SQLite file.

The studies are tiny noop studies whose trials are trained in this process and stored through the
queue functions (claim, run, complete), as a worker would; the server only reads them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from service.processes import running_server
from studies.db import create_study
from studies.db.queue import WorkerInfo, claim_next_trial, complete_trial, record_evaluation
from studies.spec import StudySpec
from studies.trial import run_trial
from tests.db.util import migrated

from .conftest import TOKEN

WORKER = WorkerInfo(host="compare-test", pid=os.getpid(), device="cpu")


def _spec(name: str, optimizers: list[str], **overrides: Any) -> StudySpec:
    data: dict[str, Any] = {
        "name": name,
        "workload": "noop",
        "workload_config": {"steps_per_epoch": 20, "eval_every": 2},
        "optimizers": optimizers,
        "lr": {"values": [0.01, 0.1, 0.5]},
        "seeds": 2,
        "budget": {"epochs": 1},
    }
    data.update(overrides)
    return StudySpec.model_validate(data)


def _train_everything_queued(db: Any) -> None:
    while (claim := claim_next_trial(db, WORKER, lease_seconds=60)) is not None:
        result = run_trial(
            claim.config, "cpu", report=lambda p: not record_evaluation(db, claim, p)
        )
        assert complete_trial(db, claim, result)


@dataclass
class Lab:
    """A running server over studies: three comparable, one SGD-only, one not started."""

    url: str
    client: httpx.Client
    done: list[int]
    sgd_only: int
    queued: int


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    database_url = f"sqlite:///{tmp_path_factory.mktemp('compare') / 'lab.db'}"
    db = migrated(database_url)
    try:
        done = [create_study(db, _spec(f"noop <{i}>", ["adam", "adamod"])).id for i in range(3)]
        sgd_only = create_study(db, _spec("sgd only", ["sgd"])).id
        _train_everything_queued(db)
        queued = create_study(db, _spec("not started", ["adam", "adamod"])).id
    finally:
        db.dispose()
    log = str(tmp_path_factory.mktemp("log") / "server.log")
    env = {"ADAMOD_LAB_API_TOKENS": TOKEN, "ADAMOD_LAB_PROTECT_READS": "1"}
    with running_server(database_url, env=env, log_path=log) as url:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            yield Lab(url, client, done, sgd_only, queued)
    with open(log, encoding="utf-8", errors="replace") as server_log:
        assert " 500" not in server_log.read()


def _ids(*ids: int) -> dict[str, str]:
    return {"studies": ",".join(map(str, ids))}


def test_compare_json_has_the_studies_table_and_profiles(lab: Lab) -> None:
    a, b, c = lab.done
    response = lab.client.get("/compare", params=_ids(c, a, b))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["study_ids"] == [c, a, b]
    assert [s["name"] for s in body["studies"]] == [f"#{c} noop <2>", f"#{a} noop <0>",
                                                    f"#{b} noop <1>"]  # fmt: skip
    assert all(s["workload"] == "noop" and s["status"] == "completed" for s in body["studies"])
    assert {k["optimizer"] for k in body["configs"]} == {"adam", "adamod"}
    assert len(body["table"]) == 3 * 2
    assert [p["name"] for p in body["profiles"]] == ["steps_to_target", "lr_sensitivity"]
    for profile in body["profiles"]:
        assert len(profile["tau"]) == 301 and len(profile["curves"]) == 2
        for curve in profile["curves"]:
            assert 0.0 <= curve["area"] <= 3.0 + 1e-9
            assert all(0.0 <= r <= 1.0 for r in curve["rho"])
    assert "ratio" in body["definitions"]


def test_compare_html_and_png(lab: Lab) -> None:
    params = _ids(*lab.done[:2])
    page = lab.client.get("/compare.html", params=params)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "noop &lt;0&gt;" in page.text and "noop <0>" not in page.text
    assert "data:image/png;base64," in page.text
    png = lab.client.get("/compare/profiles.png", params=params)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_reads_are_protected_when_the_server_says_so(lab: Lab) -> None:
    with httpx.Client(base_url=lab.url, timeout=30) as anonymous:
        for path in ("/compare", "/compare.html", "/compare/profiles.png"):
            response = anonymous.get(path, params=_ids(*lab.done[:2]))
            assert response.status_code == 401, (path, response.text)


BAD_QUERIES = [
    None,
    "",
    " ",
    "1",
    "1,1",
    "1,2,",
    ",1,2",
    "1,,2",
    "a,b",
    "1;2",
    "-1,2",
    "0,1",
    "+1,2",
    "1.0,2",
    "1e3,2",
    "2147483648,1",
    "9" * 40 + ",1",
    "1," * 50 + "1",
    ",".join(str(i) for i in range(1, 52)),
    "1," * 600,
    "１,２",  # fullwidth digits: int() would take them, the id pattern does not
    "1\x00,2",
]


@pytest.mark.parametrize("value", BAD_QUERIES)
@pytest.mark.parametrize("path", ["/compare", "/compare.html", "/compare/profiles.png"])
def test_bad_study_lists_are_422_naming_studies(lab: Lab, path: str, value: str | None) -> None:
    params = {} if value is None else {"studies": value}
    response = lab.client.get(path, params=params)
    assert response.status_code == 422, (value, response.text)
    (item,) = response.json()["detail"]
    assert item["loc"] == ["query", "studies"]
    if value is None:  # FastAPI's own "missing" error
        assert item["type"] == "missing"
    else:
        assert "studies" in item["msg"]


def test_unknown_ids_are_404_naming_them(lab: Lab) -> None:
    response = lab.client.get("/compare", params=_ids(lab.done[0], 999999))
    assert response.status_code == 404 and response.json()["detail"] == "study 999999 not found"
    response = lab.client.get("/compare.html", params=_ids(888, lab.done[0], 999))
    assert response.status_code == 404 and "888, 999" in response.json()["detail"]


def test_studies_that_share_no_configuration_are_422(lab: Lab) -> None:
    for other in (lab.sgd_only, lab.queued):
        response = lab.client.get("/compare", params=_ids(lab.done[0], other))
        assert response.status_code == 422, response.text
        (item,) = response.json()["detail"]
        assert item["loc"] == ["query", "studies"]
        assert "share no configuration" in item["msg"]

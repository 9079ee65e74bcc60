"""Hostile input against a live server (SQLite and PostgreSQL): every request is a 4xx or a 2xx,
never a 500, and a rejected request leaves the database as it was.

Bodies are sent as raw bytes, so that JSON escapes such as "\\ud800" (a lone surrogate) and
"\\u0000" reach the server exactly as a hostile client would write them.
"""

from __future__ import annotations

import copy
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from service.body import check_text
from service.errors import printable_text
from service.routes.studies import _constraint_error
from service.settings import Settings
from studies.spec import MAX_AXIS_VALUES, MAX_LR_VALUES, StudySpec

from .conftest import Api, row_counts

pytestmark = pytest.mark.slow

SPEC: dict[str, Any] = {
    "name": "hostile",
    "workload": "noop",
    "workload_config": {"steps_per_epoch": 5},
    "optimizers": ["adam", "adamod"],
    "lr": {"values": [0.01, 0.1]},
    "seeds": 1,
    "budget": {"steps": 5},
}


def spec(**changes: Any) -> dict[str, Any]:
    """SPEC with some top-level fields replaced."""
    return {**copy.deepcopy(SPEC), **changes}


def post_raw(api: Api, body: str) -> httpx.Response:
    """POSTs ``body`` as written: json.dumps keeps "\\ud800" as an escape, never as bytes."""
    return api.client.post(
        "/studies", content=body.encode("ascii"), headers={"Content-Type": "application/json"}
    )


def assert_rejected(api: Api, body: str, loc: list[Any], status: int = 422) -> dict[str, Any]:
    """The body is refused with ``status`` naming ``loc``, and nothing is stored."""
    before = row_counts(api.database_url)
    response = post_raw(api, body)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert loc in [item["loc"] for item in detail], detail
    assert row_counts(api.database_url) == before
    return next(item for item in detail if item["loc"] == loc)


# 1. Lone surrogates and NUL: rejected before validation, naming the field, on both backends.

@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (json.dumps(spec(name="\ud800")), ["body", "name"]),
        (json.dumps(spec(name="ok\udfff")), ["body", "name"]),
        (json.dumps(spec(workload="\ud800")), ["body", "workload"]),
        (json.dumps(spec(optimizers=["adam", "\udc00"])), ["body", "optimizers", 1]),
        (json.dumps(spec(workload_config={"steps_per_epoch": "\ud800"})),
         ["body", "workload_config", "steps_per_epoch"]),
        (json.dumps({**spec(), "nam\ud800e": 1}), ["body", "nam\\ud800e"]),
        (json.dumps(spec(workload_config={"x\ud800": 1})), ["body", "workload_config", "x\\ud800"]),
    ],
)
def test_lone_surrogates_are_a_422_naming_the_field(api: Api, body: str, loc: list[Any]) -> None:
    assert "\\ud" in body  # sent as an escape, as a client would
    item = assert_rejected(api, body, loc)
    assert item["type"] == "string_unicode"
    assert "surrogate" in item["msg"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (json.dumps(spec(name="a\u0000b")), ["body", "name"]),
        (json.dumps(spec(workload="noop\u0000")), ["body", "workload"]),
        (json.dumps(spec(reference="adam\u0000")), ["body", "reference"]),
        (json.dumps(spec(warmup_steps=[0, "auto\u0000"])), ["body", "warmup_steps", 1]),
        (json.dumps(spec(workload_config={"k\u0000": 1})), ["body", "workload_config", "k\u0000"]),
    ],
)
def test_nul_in_any_string_is_a_422_naming_the_field(api: Api, body: str, loc: list[Any]) -> None:
    assert "\\u0000" in body
    item = assert_rejected(api, body, loc)
    assert item["type"] == "string_nul"


def test_valid_non_ascii_text_is_stored_and_echoed(api: Api) -> None:
    # A surrogate *pair* is an ordinary character (U+1F600): only lone halves are refused.
    name = "r\u00e9sum\u00e9 \U0001f600 \u4e2d\u6587"
    body = json.dumps(spec(name=name))
    assert "\\ud83d\\ude00" in body
    response = post_raw(api, body)
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name
    assert api.client.get(response.headers["location"]).json()["name"] == name


@pytest.mark.parametrize(
    "path", ["/studies?status=%ED%A0%80", "/studies/%ED%A0%80", "/studies?status=%00"]
)
def test_undecodable_query_and_path_text_is_a_4xx(api: Api, path: str) -> None:
    response = api.client.get(path)
    assert 400 <= response.status_code < 500, response.text
    response.json()  # valid JSON, encodable


def test_escaping_keeps_every_error_encodable() -> None:
    assert printable_text("ok") == "ok"
    assert printable_text("a\ud800b") == "a\\ud800b"
    printable_text("\udfff" * 3).encode("utf-8")
    # Deep nesting is walked without recursion.
    deep: Any = "\ud800"
    for _ in range(5000):
        deep = [deep]
    assert check_text(deep)[0]["type"] == "string_unicode"


# 3. Grids that collapse to the same float, and constraint errors in general.

@pytest.mark.parametrize(
    "lr",
    [
        {"min": 1e-3, "max": 1.0000000000000002e-3, "points": 5},
        {"min": 1e-3, "max": 1.0000000000000004e-3, "points": 40},
    ],
)
def test_lr_range_collapsing_to_equal_floats_is_a_422_at_lr(api: Api, lr: dict) -> None:
    item = assert_rejected(api, json.dumps(spec(lr=lr)), ["body", "lr"])
    assert "distinct" in item["msg"]


def test_lr_values_equal_after_parsing_are_a_422_at_lr_values(api: Api) -> None:
    # Two spellings of one float: equal once decoded, so the same trials twice.
    body = json.dumps(spec()).replace("[0.01, 0.1]", "[0.001, 0.00100000000000000000001]")
    assert "0.00100000000000000000001" in body
    assert_rejected(api, body, ["body", "lr", "values"])


def test_a_unique_constraint_error_becomes_a_4xx() -> None:
    # The safety net behind validation: a grid that still repeats a trial, or a key race.
    trial = IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed: trials.config_key"))
    error = _constraint_error(trial, None)
    assert isinstance(error, RequestValidationError)
    assert [item["loc"] for item in error.errors()] == [("body",)]
    key = IntegrityError("INSERT", {}, Exception("duplicate key uq_studies_idempotency_key"))
    conflict = _constraint_error(key, "k1")
    assert isinstance(conflict, HTTPException) and conflict.status_code == 409


# 4. Strict JSON types: a boolean or a string is never a number.

NUMBER_FIELDS: list[tuple[dict[str, Any], list[Any]]] = [
    ({"lr": {"min": None, "max": 0.1, "points": 3}}, ["body", "lr", "min"]),
    ({"lr": {"min": 0.01, "max": None, "points": 3}}, ["body", "lr", "max"]),
    ({"lr": {"min": 0.01, "max": 0.1, "points": None}}, ["body", "lr", "points"]),
    ({"lr": {"values": [None]}}, ["body", "lr", "values", 0]),
    ({"beta3": [None]}, ["body", "beta3", 0]),
    ({"warmup_steps": [None]}, ["body", "warmup_steps", 0]),
    ({"seeds": None}, ["body", "seeds"]),
    ({"budget": {"steps": None}}, ["body", "budget", "steps"]),
    ({"budget": {"epochs": None}}, ["body", "budget", "epochs"]),
    ({"betas": [None, 0.999]}, ["body", "betas", 0]),
    ({"betas": [0.9, None]}, ["body", "betas", 1]),
    ({"eps": None}, ["body", "eps"]),
    ({"weight_decay": None}, ["body", "weight_decay"]),
    ({"target_loss": None}, ["body", "target_loss"]),
    ({"priority": None}, ["body", "priority"]),
    (
        {"workload_config": {"steps_per_epoch": None}},
        ["body", "workload_config", "steps_per_epoch"],
    ),
]


def _fill(template: Any, value: Any) -> Any:
    if template is None:
        return value
    if isinstance(template, dict):
        return {k: _fill(v, value) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, value) for v in template]
    return template


@pytest.mark.parametrize("value", [True, False, "1", "1e-3", "0"])
@pytest.mark.parametrize(("changes", "loc"), NUMBER_FIELDS)
def test_a_boolean_or_a_string_is_never_a_number(
    api: Api, changes: dict[str, Any], loc: list[Any], value: Any
) -> None:
    assert_rejected(api, json.dumps(spec(**_fill(changes, value))), loc)


# 5. Values that cannot run.

@pytest.mark.parametrize(
    ("changes", "loc", "words"),
    [
        ({"eps": 1e39}, ["body", "eps"], "float32"),
        ({"eps": 1e-50}, ["body", "eps"], "underflows"),
        ({"weight_decay": 3.5e38}, ["body", "weight_decay"], "float32"),
        ({"lr": {"values": [0.01, 1e300]}}, ["body", "lr", "values", 1], "float32"),
        ({"lr": {"values": [1e-46]}}, ["body", "lr", "values", 0], "underflows"),
        ({"lr": {"min": 1e-50, "max": 0.1, "points": 3}}, ["body", "lr", "min"], "underflows"),
        ({"lr": {"min": 1e-3, "max": 1e39, "points": 3}}, ["body", "lr", "max"], "float32"),
        ({"seeds": 2**63}, ["body", "seeds"], ""),
        ({"seeds": 10**30}, ["body", "seeds"], ""),
    ],
)
def test_values_that_cannot_run_are_a_422(
    api: Api, changes: dict[str, Any], loc: list[Any], words: str
) -> None:
    item = assert_rejected(api, json.dumps(spec(**changes)), loc)
    assert words in item["msg"]


def test_float32_extremes_that_can_run_are_accepted() -> None:
    data = spec(eps=1e-40, weight_decay=3.0e38, lr={"values": [1.5e-45, 3.0e38]})
    parsed = StudySpec.model_validate(data)
    assert parsed.lr.values() == [1.5e-45, 3.0e38]


# 8. List lengths bounded consistently with the grid limit (checked before the grid is built).

@pytest.mark.parametrize(
    ("changes", "loc"),
    [
        ({"beta3": [0.5 + i / 1000 for i in range(MAX_AXIS_VALUES + 1)]}, ("beta3",)),
        ({"warmup_steps": list(range(MAX_AXIS_VALUES + 1))}, ("warmup_steps",)),
        ({"optimizers": ["adam"] * 8}, ("optimizers",)),
        ({"lr": {"values": [1e-6 * (i + 1) for i in range(MAX_LR_VALUES + 1)]}},
         ("lr", "values")),
    ],
)
def test_list_lengths_are_bounded(changes: dict[str, Any], loc: tuple[Any, ...]) -> None:
    start = time.perf_counter()
    with pytest.raises(ValidationError) as caught:
        StudySpec.model_validate(spec(**changes))
    assert loc in [error["loc"] for error in caught.value.errors()]
    assert time.perf_counter() - start < 2.0


# 6. Settings: blank tokens and empty database URLs are start-up errors.

@pytest.mark.parametrize("value", [" , ", ",", "   ", " ,, , "])
def test_tokens_that_are_only_blanks_are_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ADAMOD_LAB_API_TOKENS", value)
    with pytest.raises(ValidationError, match="only blanks and commas"):
        Settings()


def test_empty_or_unset_tokens_keep_auth_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAMOD_LAB_API_TOKENS", "")
    assert Settings().api_tokens == []
    monkeypatch.delenv("ADAMOD_LAB_API_TOKENS")
    assert Settings().api_tokens == []
    monkeypatch.setenv("ADAMOD_LAB_API_TOKENS", " a ,, b ")
    assert Settings().api_tokens == ["a", "b"]


def _service(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    for name in ("ADAMOD_LAB_API_TOKENS", "ADAMOD_LAB_DATABASE_URL"):
        if name not in env:
            full_env.pop(name, None)
    root = Path(__file__).resolve().parents[2]
    full_env["PYTHONPATH"] = str(root)
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=full_env, cwd=cwd, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["serve", "--port", "0"], {"ADAMOD_LAB_API_TOKENS": " , "}, "ADAMOD_LAB_API_TOKENS"),
        (["serve", "--port", "0"], {"ADAMOD_LAB_DATABASE_URL": ""}, "ADAMOD_LAB_DATABASE_URL"),
        (["serve", "--port", "0", "--database-url", ""], {}, "ADAMOD_LAB_DATABASE_URL"),
        (["up", "--workers", "0", "--port", "0", "--database-url", ""], {}, "database URL"),
        (["up", "--workers", "0", "--port", "0"], {"ADAMOD_LAB_DATABASE_URL": " "},
         "database URL"),
    ],
)
def test_bad_start_up_settings_stop_the_server_with_a_clear_message(
    tmp_path: Path, args: list[str], env: dict[str, str], words: str
) -> None:
    result = _service(args, env, tmp_path)
    assert result.returncode != 0
    assert words in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no SQLite file appeared in the working directory


# 7. A locked SQLite database: 503 with Retry-After, nothing half-written.

def test_a_locked_sqlite_database_answers_503_with_retry_after(api: Api) -> None:
    if not api.database_url.startswith("sqlite"):
        pytest.skip("SQLite only: PostgreSQL has row locks, not a database write lock")
    before = row_counts(api.database_url)
    path = api.database_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held past the server's busy timeout
    release = threading.Timer(45.0, holder.rollback)
    release.start()
    try:
        response = api.client.post("/studies", json=spec(name="locked"), timeout=120)
    finally:
        release.cancel()
        holder.rollback()
        holder.close()
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert "retry" in response.json()["detail"]
    assert row_counts(api.database_url) == before
    retried = api.client.post("/studies", json=spec(name="locked"))
    assert retried.status_code == 201, retried.text

"""'Did you mean' for mistyped spec fields, floats restored from a stored spec, and the studies
modules importing alone (no spec <-> workloads import cycle)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from studies.spec import StudySpec
from studies.spec_floats import restore_floats, restore_spec_floats
from studies.spec_suggest import closest_field, suggest_fields

BASE: dict[str, Any] = {"name": "s", "workload": "noop", "budget": {"steps": 1}}


def _messages(data: dict[str, Any]) -> dict[tuple[Any, ...], str]:
    with pytest.raises(ValidationError) as info:
        StudySpec.model_validate(data)
    return {tuple(e["loc"]): e["msg"] for e in suggest_fields(info.value.errors(), data)}


@pytest.mark.parametrize(
    ("extra", "loc", "meant"),
    [
        ({"seed": 3}, ("seed",), "seeds"),
        ({"optimizer": ["adam"]}, ("optimizer",), "optimizers"),
        ({"Beta3": [0.9]}, ("Beta3",), "beta3"),
        ({"lr": {"min": 1e-3, "max": 1e-1, "point": 3}}, ("lr", "point"), "points"),
        ({"lr": {"value": [1e-3]}}, ("lr", "value"), "values"),
        ({"budget": {"epoch": 2}}, ("budget", "epoch"), "epochs"),
        ({"workload_config": {"sleep": 0.1}}, ("workload_config", "sleep"), "sleep_s"),
    ],
)
def test_a_mistyped_field_names_the_field_meant(
    extra: dict[str, Any], loc: tuple[str, ...], meant: str
) -> None:
    message = _messages({**BASE, **extra})[loc]
    assert message.startswith("Extra inputs are not permitted")
    assert message.endswith(f"did you mean {meant!r}?")


def test_no_close_field_lists_the_fields_instead() -> None:
    message = _messages({**BASE, "zzqqxx": 1})[("zzqqxx",)]
    assert "the fields here are" in message and "seeds" in message and "lr" in message


def test_other_errors_are_left_as_they_are() -> None:
    data = {**BASE, "seeds": 0}
    with pytest.raises(ValidationError) as info:
        StudySpec.model_validate(data)
    assert suggest_fields(info.value.errors(), data) == [dict(e) for e in info.value.errors()]


def test_an_unknown_workload_gives_no_suggestion_inside_its_config() -> None:
    data = {**BASE, "workload": "nope", "workload_config": {"sleep": 1}}
    with pytest.raises(ValidationError) as info:
        StudySpec.model_validate(data)
    errors = suggest_fields(info.value.errors(), data)
    assert all("did you mean" not in e["msg"] for e in errors)


def test_closest_field() -> None:
    assert closest_field("warmup", ["warmup_steps", "seeds"]) == "warmup_steps"
    assert closest_field("xyz", ["warmup_steps", "seeds"]) is None


def test_stored_spec_gets_its_floats_back() -> None:
    spec = StudySpec.model_validate(
        {
            **BASE,
            "lr": {"values": [1e-3, 1e25]},
            "eps": 1e20,
            "weight_decay": 0.0,
            "workload_config": {"sleep_s": 0.0},
            "warmup_steps": [0, "auto"],
        }
    ).model_dump(mode="json")
    # What PostgreSQL's JSONB hands back: whole-number floats without their fraction.
    stored = {
        **spec,
        "lr": {**spec["lr"], "values": [0.001, 10**25]},
        "eps": 10**20,
        "weight_decay": 0,
        "workload_config": {**spec["workload_config"], "sleep_s": 0},
    }
    restored = restore_spec_floats(stored)
    assert restored == spec
    assert [type(v) for v in restored["lr"]["values"]] == [float, float]
    assert type(restored["eps"]) is float and type(restored["weight_decay"]) is float
    assert type(restored["workload_config"]["sleep_s"]) is float
    assert type(restored["seeds"]) is int and type(restored["priority"]) is int
    assert restored["warmup_steps"] == [0, "auto"] and type(restored["warmup_steps"][0]) is int


def test_restore_floats_follows_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "x": {"anyOf": [{"type": "number"}, {"type": "null"}]},
            "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "number"}]},
            "free": {},
        },
    }
    value = {"n": 3, "x": 4, "pair": [1, 2], "free": 5, "extra": 6}
    assert restore_floats(value, schema) == {
        "n": 3,
        "x": 4.0,
        "pair": [1, 2.0],
        "free": 5,
        "extra": 6,
    }
    assert type(restore_floats(value, schema)["free"]) is int


# The two ends of the former spec <-> workloads cycle (each interpreter imports torch: ~3 s).
@pytest.mark.parametrize("module", ["studies.spec", "studies.workloads.noop"])
def test_each_module_imports_alone(module: str) -> None:
    # A cycle shows as an ImportError (partially initialized module) when the wrong one is first.
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr

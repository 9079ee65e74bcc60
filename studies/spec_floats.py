"""Floats back as floats: a stored spec read from PostgreSQL, where JSONB turned 1e25 into an int.

JSONB keeps numbers as `numeric`, which writes 1e25 as 10000000000000000000000000: Python reads
that back as an int, so `lr.values: [1e25]` came back as an integer on PostgreSQL and as a float on
SQLite. The spec's JSON schema says which places hold numbers (floats) and which integers; this
puts the float back wherever the schema says "number", and leaves every other value alone.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["restore_floats", "restore_spec_floats"]

Schema = dict[str, Any]


@functools.cache
def _spec_schema() -> Schema:
    from studies.spec import StudySpec

    return StudySpec.model_json_schema()


@functools.cache
def _workload_schema(name: str) -> Schema | None:
    from studies.workloads.registry import get_workload

    try:
        return get_workload(name).config_model.model_json_schema()
    except (ValueError, KeyError):  # no longer registered: leave its config as stored
        return None


def _resolve(schema: Schema, defs: Schema) -> Schema:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _resolve(defs.get(ref.removeprefix("#/$defs/"), {}), defs)
    return schema


def _branches(schema: Schema, defs: Schema) -> list[Schema]:
    """The alternatives a schema allows (anyOf / oneOf), each resolved; itself when none."""
    schema = _resolve(schema, defs)
    options = schema.get("anyOf") or schema.get("oneOf")
    if not options:
        return [schema]
    return [branch for option in options for branch in _branches(option, defs)]


def _types(branch: Schema) -> set[str]:
    kind = branch.get("type")
    return set(kind) if isinstance(kind, list) else {kind} if isinstance(kind, str) else set()


def restore_floats(value: Any, schema: Schema, defs: Schema | None = None) -> Any:
    """``value`` with every int where ``schema`` allows a number but no integer made a float."""
    defs = schema.get("$defs", {}) if defs is None else defs
    branches = _branches(schema, defs)
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        kinds = set().union(*(_types(b) for b in branches)) if branches else set()
        return float(value) if "number" in kinds and "integer" not in kinds else value
    if isinstance(value, dict):
        for branch in branches:
            if "object" in _types(branch) or "properties" in branch:
                properties = branch.get("properties", {})
                extra = branch.get("additionalProperties")
                return {
                    key: restore_floats(
                        item, properties.get(key, extra if isinstance(extra, dict) else {}), defs
                    )
                    for key, item in value.items()
                }
        return value
    if isinstance(value, list):
        for branch in branches:
            if "array" in _types(branch):
                prefix = branch.get("prefixItems", [])
                items = branch.get("items", {})
                return [
                    restore_floats(item, prefix[i] if i < len(prefix) else items or {}, defs)
                    for i, item in enumerate(value)
                ]
        return value
    return value


def restore_spec_floats(spec: dict[str, Any]) -> dict[str, Any]:
    """A stored (normalized) StudySpec with its floats as floats, workload_config included."""
    out = restore_floats(spec, _spec_schema())
    workload = spec.get("workload")
    config = spec.get("workload_config")
    if isinstance(workload, str) and isinstance(config, dict):
        schema = _workload_schema(workload)
        if schema is not None:
            out["workload_config"] = restore_floats(config, schema)
    return out

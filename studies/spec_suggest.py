"""'Did you mean …' for a mistyped StudySpec field: pydantic's extra_forbidden errors, annotated.

pydantic says only "Extra inputs are not permitted" for `seed: 3` (the field is `seeds`); this
finds the model the error's path points into (the spec, lr, budget, or the workload's own config
model for `workload_config`) and names its closest field. It works on error dicts, so that the
API's 422 (service.body) and every command-line client that prints it say the same.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

__all__ = ["closest_field", "field_names", "suggest_fields"]

EXTRA_FORBIDDEN = "extra_forbidden"


def field_names(model: type[BaseModel]) -> list[str]:
    """The names a client writes for ``model``'s fields (the alias where there is one)."""
    return [info.alias or name for name, info in model.model_fields.items()]


def closest_field(name: str, candidates: Sequence[str]) -> str | None:
    """The candidate ``name`` most likely meant: same letters in another case, else difflib's."""
    for candidate in candidates:
        if candidate.lower() == name.lower():
            return candidate
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, unions, lists, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    origin = typing.get_origin(annotation)
    if origin is None and not isinstance(annotation, types.UnionType):
        return found
    for arg in typing.get_args(annotation):
        found.extend(m for m in _models_in(arg) if m not in found)
    return found


def _models_at(roots: list[type[BaseModel]], path: Sequence[Any]) -> list[type[BaseModel]]:
    """The models that the location ``path`` (without the unknown key) points into."""
    models = roots
    for part in path:
        if isinstance(part, int):  # a list index: the list's item models are already in hand
            continue
        nxt: list[type[BaseModel]] = []
        for model in models:
            if part == model.__name__:  # pydantic names a union member by its class
                nxt.append(model)
                continue
            for name, info in model.model_fields.items():
                if part in (name, info.alias):
                    nxt.extend(_models_in(info.annotation))
        models = nxt
        if not models:
            break
    return models


def _roots(loc: Sequence[Any], data: Any) -> tuple[list[type[BaseModel]], Sequence[Any]]:
    from studies.spec import StudySpec

    if loc and loc[0] == "workload_config":
        # Validated by the workload's own model; the path continues inside it.
        from studies.workloads.registry import get_workload

        name = data.get("workload") if isinstance(data, dict) else None
        try:
            model = get_workload(name).config_model if isinstance(name, str) else None
        except (ValueError, KeyError):
            model = None
        return ([model] if model is not None else []), loc[1:]
    return [StudySpec], loc


def _suggestion(loc: Sequence[Any], data: Any) -> str | None:
    if not loc or not isinstance(loc[-1], str):
        return None
    roots, path = _roots(loc[:-1], data)
    candidates: list[str] = []
    for model in _models_at(roots, path):
        candidates.extend(n for n in field_names(model) if n not in candidates)
    if not candidates:
        return None
    guess = closest_field(loc[-1], candidates)
    if guess is not None:
        return f"unknown field {loc[-1]!r}; did you mean {guess!r}?"
    return f"unknown field {loc[-1]!r}; the fields here are {', '.join(sorted(candidates))}"


def suggest_fields(errors: Sequence[Any], data: Any = None) -> list[dict[str, Any]]:
    """``errors`` (pydantic's, of StudySpec.model_validate(data)) with each extra_forbidden
    message naming the field the client probably meant; every other error unchanged."""
    out: list[dict[str, Any]] = []
    for error in errors:
        item = dict(error)
        if item.get("type") == EXTRA_FORBIDDEN:
            hint = _suggestion(tuple(item.get("loc", ())), data)
            if hint is not None:
                item["msg"] = f"{item.get('msg', 'Extra inputs are not permitted')}: {hint}"
        out.append(item)
    return out

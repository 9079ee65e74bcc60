"""Parses and validates a StudySpec request body with the server's limits as validation context."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from service.errors import printable_text, validation_details
from studies.spec import StudySpec
from studies.spec_suggest import suggest_fields

# A body with thousands of bad strings needs only the first few named to be fixed.
MAX_TEXT_ERRORS = 20
MAX_REPORTED_ERRORS = 50  # validation errors listed in one 422


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _text_problem(text: str) -> tuple[str, str] | None:
    """Why ``text`` cannot be stored, as (error type, message); None when it can.

    A JSON escape such as "\\ud800" decodes to a lone surrogate, which no UTF-8 response, log
    line or database column can hold; PostgreSQL's text and JSONB cannot hold NUL either. Both
    are refused on every backend, so a spec means the same wherever it is stored.
    """
    if "\x00" in text:
        return "string_nul", "text must not contain NUL characters (\\u0000)"
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start].encode("utf-8", "backslashreplace").decode("ascii")
        return (
            "string_unicode",
            f"text must be valid Unicode: the lone surrogate {bad} at position {exc.start} "
            "(an unpaired \\ud800-\\udfff escape) is not allowed",
        )
    return None


def check_text(data: Any) -> list[dict[str, Any]]:
    """FastAPI-style 422 details for every string (key or value) that cannot be stored.

    Iterative, not recursive: json.loads accepts nesting close to the recursion limit.
    """
    errors: list[dict[str, Any]] = []
    stack: list[tuple[tuple[str | int, ...], Any]] = [(("body",), data)]
    while stack and len(errors) < MAX_TEXT_ERRORS:
        loc, value = stack.pop()
        if isinstance(value, str):
            problem = _text_problem(value)
            if problem is not None:
                errors.append({"loc": loc, "msg": problem[1], "type": problem[0]})
        elif isinstance(value, dict):
            for key, item in value.items():
                problem = _text_problem(key)
                if problem is not None:
                    where = (*loc, printable_text(key))
                    errors.append({"loc": where, "msg": f"key: {problem[1]}", "type": problem[0]})
                    continue
                stack.append(((*loc, key), item))
        elif isinstance(value, list):
            stack.extend(((*loc, index), item) for index, item in enumerate(value))
    return sorted(errors, key=lambda e: [str(part) for part in e["loc"]])


def parse_json(raw: bytes) -> Any:
    """Decodes strict JSON (no NaN/Infinity, no out-of-range numbers, no lone surrogates or NUL
    in any string); 422 naming the place otherwise."""
    try:
        data = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, 5000-digit ints
        msg = "request body is empty" if not raw.strip() else f"invalid JSON: {exc}"[:300]
        raise RequestValidationError(
            [{"loc": ("body",), "msg": msg, "type": "json_invalid"}]
        ) from None
    errors = check_text(data)
    if errors:
        raise RequestValidationError(errors)
    return data


def validate_spec(data: Any, *, max_trials: int) -> StudySpec:
    """A StudySpec from decoded JSON; 422 with each error's path under ``body``."""
    try:
        spec = StudySpec.model_validate(data, context={"max_trials": max_trials})
    except ValidationError as exc:
        # The first MAX_REPORTED_ERRORS only: a 1 MB body of 50,000 unknown keys must not become
        # a 16 MB answer (nor 50,000 "did you mean" searches).
        found = exc.errors()
        errors = suggest_fields(found[:MAX_REPORTED_ERRORS], data)  # "did you mean 'seeds'?"
        details = validation_details(errors, prefix=("body",))
        if len(found) > MAX_REPORTED_ERRORS:
            details.append(
                {
                    "loc": ["body"],
                    "msg": f"and {len(found) - MAX_REPORTED_ERRORS} more errors not shown",
                    "type": "too_many_errors",
                }
            )
        raise RequestValidationError(details) from None
    return spec


def parse_spec(raw: bytes, *, max_trials: int) -> StudySpec:
    """parse_json then validate_spec: CPU work on up to max_body_bytes, run off the event loop."""
    return validate_spec(parse_json(raw), max_trials=max_trials)

"""Parses and validates a StudySpec request body with the server's limits as validation context."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from service.errors import validation_details
from studies.spec import StudySpec


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def parse_json(raw: bytes) -> Any:
    """Decodes strict JSON (no NaN/Infinity, no out-of-range numbers); 422 at ``body`` otherwise."""
    try:
        return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, 5000-digit ints
        msg = "request body is empty" if not raw.strip() else f"invalid JSON: {exc}"[:300]
        raise RequestValidationError(
            [{"loc": ("body",), "msg": msg, "type": "json_invalid"}]
        ) from None


def validate_spec(data: Any, *, max_trials: int) -> StudySpec:
    """A StudySpec from decoded JSON; 422 with each error's path under ``body``."""
    try:
        spec = StudySpec.model_validate(data, context={"max_trials": max_trials})
    except ValidationError as exc:
        raise RequestValidationError(validation_details(exc.errors(), prefix=("body",))) from None
    return spec

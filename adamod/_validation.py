"""Argument checks shared by AdaMod and DiffMod, with messages that name the argument.

The numeric checks also accept member values (1-D tensors, one value per member of a pack):
every element is checked and named like `beta3[3]` (see adamod._members_hyper).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from adamod._members_hyper import per_member

FORMS = ("code", "paper")
VERSIONS = (0, 1, 2)


def _as_float(name: str, value: Any) -> float:
    """Convert value to float or raise a ValueError naming the argument."""
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"Invalid {name}: {value!r} (must be a number)") from None


@per_member
def check_non_negative(name: str, value: Any) -> float:
    """Return value as a float; raise ValueError unless it is a finite number >= 0."""
    number = _as_float(name, value)
    # `not >=` also rejects NaN
    if not (number >= 0.0) or math.isinf(number):
        raise ValueError(f"Invalid {name}: {value} (must be >= 0)")
    return number


@per_member
def check_unit_interval(name: str, value: Any) -> float:
    """Return value as a float; raise ValueError unless 0 <= value < 1."""
    number = _as_float(name, value)
    if not (0.0 <= number < 1.0):
        raise ValueError(f"Invalid {name}: {value} (must be in [0, 1))")
    return number


def check_betas(betas: Any) -> tuple[float | Tensor, float | Tensor]:
    """Return betas as a pair of values in [0, 1) or raise ValueError naming betas[i]."""
    if not isinstance(betas, Sequence) or isinstance(betas, str) or len(betas) != 2:
        raise ValueError(f"Invalid betas: {betas!r} (must be a pair of numbers)")
    return check_unit_interval("betas[0]", betas[0]), check_unit_interval("betas[1]", betas[1])


def check_len_memory(len_memory: Any) -> float | Tensor:
    """Return DiffMod's len_memory (>= 1) as a float or member tensor, or raise ValueError."""
    return _check_at_least_one("len_memory", len_memory)


@per_member
def _check_at_least_one(name: str, value: Any) -> float:
    number = _as_float(name, value)
    if not (number >= 1.0) or math.isinf(number):
        raise ValueError(f"Invalid {name}: {value} (must be >= 1)")
    return number


def check_version(version: Any) -> int:
    """Return DiffMod's friction version (0, 1 or 2) or raise ValueError."""
    if isinstance(version, bool) or version not in VERSIONS:
        raise ValueError(f"Invalid version: {version!r} (must be 0, 1 or 2)")
    return int(version)


def check_form(form: Any) -> str:
    """Return the update form ('code' or 'paper') or raise ValueError."""
    if form not in FORMS:
        raise ValueError(f"Invalid form: {form!r} (must be 'code' or 'paper')")
    return str(form)


def check_foreach_fused(foreach: bool | None, fused: bool | None) -> None:
    """Raise ValueError when both implementation switches are on."""
    if foreach and fused:
        raise ValueError("Invalid foreach and fused: both True (choose at most one)")

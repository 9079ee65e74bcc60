"""What a study is: the StudySpec a user sends, its validation, and its expansion into trials."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from studies.budget import Budget

__all__ = [
    "BOUNDED_OPTIMIZERS",
    "DEFAULT_MAX_TRIALS",
    "OPTIMIZERS",
    "Budget",
    "LrGrid",
    "StudySpec",
    "TrialConfig",
    "expand_grid",
    "load_spec",
]

OPTIMIZERS = ("adam", "adamw", "adamod", "diffmod", "sgd")
BOUNDED_OPTIMIZERS = ("adamod", "diffmod")
DEFAULT_MAX_TRIALS = 5000
MAX_PRIORITY = 2**31 - 1

OptimizerName = Literal["adam", "adamw", "adamod", "diffmod", "sgd"]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Count = Annotated[int, Field(strict=True, ge=1)]
Beta = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]


def _no_duplicates(values: list[Any], what: str) -> list[Any]:
    """Reject a list that names the same value twice (it would run the same trials twice)."""
    seen: list[Any] = []
    for value in values:
        if value in seen:
            raise ValueError(f"{what} lists {value!r} more than once")
        seen.append(value)
    return values


class LrGrid(BaseModel):
    """The learning-rate axis: {"min", "max", "points"} log-spaced (ends included) or {"values"}."""

    model_config = ConfigDict(
        extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    min: PositiveFloat | None = Field(default=None, description="smallest lr (> 0)")
    max: PositiveFloat | None = Field(default=None, description="largest lr (>= min)")
    points: Annotated[int, Field(strict=True, ge=1, le=10_000)] | None = Field(
        default=None, description="number of log-spaced points, both ends included"
    )
    # Stored as `explicit` so that `values()` can be the method DESIGN.md names; it reads and
    # writes as "values" everywhere (JSON, YAML, model_dump).
    explicit: Annotated[list[PositiveFloat], Field(min_length=1)] | None = Field(
        default=None, alias="values", description="explicit learning rates (instead of a range)"
    )

    @model_validator(mode="before")
    @classmethod
    def _one_form(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        ranged = [k for k in ("min", "max", "points") if data.get(k) is not None]
        if data.get("values", data.get("explicit")) is not None:
            if ranged:
                raise ValueError(
                    f"give either 'values' or 'min'/'max'/'points', not both (got {ranged})"
                )
        elif len(ranged) != 3:
            missing = [k for k in ("min", "max", "points") if k not in ranged]
            raise ValueError(f"lr needs 'min', 'max' and 'points' (missing {missing}), or 'values'")
        return data

    @field_validator("max")
    @classmethod
    def _ordered(cls, value: float | None, info: ValidationInfo) -> float | None:
        low = info.data.get("min")
        if value is not None and low is not None and value < low:
            raise ValueError(f"max ({value:g}) must be >= min ({low:g})")
        return value

    @field_validator("points")
    @classmethod
    def _points_fit_range(cls, value: int | None, info: ValidationInfo) -> int | None:
        low, high = info.data.get("min"), info.data.get("max")
        if value is None or low is None or high is None:
            return value
        if value == 1 and low != high:
            raise ValueError("points = 1 needs min == max (or use 'values')")
        if value > 1 and low == high:
            raise ValueError(f"points = {value} needs min < max")
        return value

    @field_validator("explicit")
    @classmethod
    def _distinct(cls, value: list[float] | None) -> list[float] | None:
        return None if value is None else sorted(_no_duplicates(value, "lr.values"))

    @property
    def count(self) -> int:
        """Number of learning rates on the grid (without building them)."""
        return len(self.explicit) if self.explicit is not None else int(self.points or 0)

    def values(self) -> list[float]:  # type: ignore[override]
        """The learning rates in increasing order."""
        if self.explicit is not None:
            return list(self.explicit)
        assert self.min is not None and self.max is not None and self.points is not None
        if self.points == 1:
            return [float(self.min)]
        exps = np.linspace(math.log10(self.min), math.log10(self.max), self.points)
        out = [float(10.0**e) for e in exps]
        out[0], out[-1] = float(self.min), float(self.max)  # exact ends, no round-off
        return out


class StudySpec(BaseModel):
    """A study: one workload, a grid of optimizer × lr × β3 × warmup × seed, one budget."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="a label for people"
    )
    workload: str = Field(description="a registered workload name (see GET /workloads)")
    workload_config: dict[str, Any] = Field(
        default_factory=dict,
        validate_default=True,
        description="validated by the workload's own config schema",
    )
    optimizers: Annotated[list[OptimizerName], Field(min_length=1)] = Field(
        default_factory=lambda: ["adam", "adamod"]
    )
    lr: LrGrid = Field(default_factory=lambda: LrGrid(min=1e-4, max=1e-1, points=7))
    beta3: Annotated[list[Beta], Field(min_length=1)] = Field(
        default_factory=lambda: [0.999], description="AdaMod/DiffMod only; in [0, 1)"
    )
    warmup_steps: Annotated[list[Annotated[int, Field(strict=True, ge=0)]], Field(min_length=1)] = (
        Field(default_factory=lambda: [0], description="linear warmup lengths in steps")
    )
    seeds: Annotated[int, Field(strict=True, ge=1, le=1000)] = Field(
        default=3, description="seeds 0 .. seeds-1"
    )
    budget: Budget | None = Field(default=None, description="workload default when omitted")
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    # A 32-bit column on PostgreSQL: the bound makes a huge value a 422, not a failed INSERT.
    priority: Annotated[int, Field(strict=True, ge=-MAX_PRIORITY, le=MAX_PRIORITY)] = Field(
        default=0, description="higher runs first; FIFO within a priority"
    )

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name must not be blank")
        return value.strip()

    @field_validator("workload")
    @classmethod
    def _workload_registered(cls, value: str) -> str:
        from studies.workloads.registry import get_workload

        get_workload(value)  # raises UnknownWorkloadError (a ValueError) naming the known ones
        return value

    @field_validator("workload_config")
    @classmethod
    def _workload_config_valid(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("workload")
        if name is None:  # the workload itself was invalid; that error is reported already
            return value
        from studies.workloads.registry import get_workload

        model = get_workload(name).config_model
        # A nested ValidationError keeps its locations, prefixed with "workload_config".
        return model.model_validate(value).model_dump(mode="json")

    @field_validator("optimizers")
    @classmethod
    def _optimizers_distinct(cls, value: list[str]) -> list[str]:
        return _no_duplicates(value, "optimizers")

    @field_validator("beta3")
    @classmethod
    def _beta3_distinct(cls, value: list[float]) -> list[float]:
        return _no_duplicates(value, "beta3")

    @field_validator("warmup_steps")
    @classmethod
    def _warmup_distinct(cls, value: list[int]) -> list[int]:
        return _no_duplicates(value, "warmup_steps")

    @model_validator(mode="after")
    def _fill_and_bound(self, info: ValidationInfo) -> StudySpec:
        from studies.workloads.registry import get_workload

        if self.budget is None:
            self.budget = get_workload(self.workload).default_budget
        context = info.context if isinstance(info.context, dict) else {}
        max_trials = int(context.get("max_trials", DEFAULT_MAX_TRIALS))
        n = self.n_trials
        if n > max_trials:
            error = PydanticCustomError(
                "too_many_trials",
                "the grid has {n} trials, more than the maximum of {max_trials}; use fewer lr "
                "points, beta3 values, warmup values, seeds or optimizers",
                {"n": n, "max_trials": max_trials},
            )
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [InitErrorDetails(type=error, loc=("lr",), input=self.lr.model_dump())],
            )
        return self

    @property
    def n_trials(self) -> int:
        """How many trials the grid expands to."""
        per_lr = len(self.warmup_steps) * self.seeds * self.lr.count
        return sum(
            per_lr * (len(self.beta3) if opt in BOUNDED_OPTIMIZERS else 1)
            for opt in self.optimizers
        )


class TrialConfig(BaseModel):
    """One grid point: everything run_trial needs, hashable to a canonical key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workload: str
    workload_config: dict[str, Any] = Field(default_factory=dict)
    optimizer: OptimizerName
    lr: PositiveFloat
    beta3: Beta | None = None
    warmup_steps: Annotated[int, Field(ge=0)] = 0
    seed: Annotated[int, Field(ge=0)] = 0
    budget: Budget
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0

    @model_validator(mode="after")
    def _beta3_matches_optimizer(self) -> TrialConfig:
        if self.optimizer in BOUNDED_OPTIMIZERS and self.beta3 is None:
            raise ValueError(f"optimizer {self.optimizer!r} needs beta3")
        if self.optimizer not in BOUNDED_OPTIMIZERS and self.beta3 is not None:
            raise ValueError(f"optimizer {self.optimizer!r} takes no beta3 (got {self.beta3})")
        return self

    def canonical_json(self) -> str:
        """The configuration as canonical JSON (sorted keys, no spaces, no null budget field)."""
        data = self.model_dump(mode="json")
        data["budget"] = self.budget.model_dump(mode="json", exclude_none=True)
        return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)

    def key(self) -> str:
        """Canonical hash: sha256 hex of the canonical JSON; equal configs give equal keys."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def params(self) -> dict[str, Any]:
        """The flat, JSON-able grid coordinates (for Optuna and the REST trial listing)."""
        return {
            "optimizer": self.optimizer,
            "lr": self.lr,
            "beta3": self.beta3,
            "warmup_steps": self.warmup_steps,
            "seed": self.seed,
        }


def expand_grid(spec: StudySpec) -> list[TrialConfig]:
    """Every trial of a spec, ordered by optimizer, lr, β3 (None if unbounded), warmup, seed."""
    assert spec.budget is not None  # filled in by validation
    common = {
        "workload": spec.workload,
        "budget": spec.budget,
        "betas": spec.betas,
        "eps": spec.eps,
        "weight_decay": spec.weight_decay,
    }
    configs: list[TrialConfig] = []
    for optimizer in spec.optimizers:
        beta3s: list[float | None] = list(spec.beta3) if optimizer in BOUNDED_OPTIMIZERS else [None]
        for lr in spec.lr.values():
            for beta3 in beta3s:
                for warmup in spec.warmup_steps:
                    for seed in range(spec.seeds):
                        # model_construct: every field was validated as part of the spec already,
                        # and a 5000-trial grid must expand in milliseconds.
                        configs.append(
                            TrialConfig.model_construct(
                                optimizer=optimizer,
                                lr=lr,
                                beta3=beta3,
                                warmup_steps=warmup,
                                seed=seed,
                                workload_config=copy.deepcopy(spec.workload_config),
                                **common,
                            )
                        )
    return configs


def load_spec(path: str | Path, *, max_trials: int = DEFAULT_MAX_TRIALS) -> StudySpec:
    """Read and validate a StudySpec from a YAML (or JSON) file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"spec file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"spec file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"spec file {path} must hold a mapping of StudySpec fields")
    return StudySpec.model_validate(data, context={"max_trials": max_trials})

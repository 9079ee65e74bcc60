"""What a study is: the StudySpec a user sends, its validation, and its expansion into trials.

Every number of a spec is a JSON number: a boolean or a string where a number belongs is an error
(pydantic's lax mode would read `true` as 1 and `"1e-8"` as 1e-8, and a client's typo would become
a study). Every list is bounded, so that a request is rejected by its size before the grid is
built, and every error names the field's path.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from studies.budget import Budget

__all__ = [
    "AUTO_WARMUP",
    "BOUNDED_OPTIMIZERS",
    "DEFAULT_MAX_TRIALS",
    "DEFAULT_SEEDS",
    "MAX_AXIS_VALUES",
    "MAX_LR_VALUES",
    "OPTIMIZERS",
    "PACK_MEMBER_AXES",
    "SCHEDULES",
    "Budget",
    "LrGrid",
    "StudySpec",
    "TrialConfig",
    "auto_warmup_steps",
    "expand_grid",
    "load_spec",
    "read_spec_file",
    "resolve_warmup",
]

OPTIMIZERS = ("adam", "adamw", "adamod", "diffmod", "sgd", "radam", "nadamw")
BOUNDED_OPTIMIZERS = ("adamod", "diffmod")
# The grid axes in which the members of one trial pack may differ (TrialConfig.pack_key).
PACK_MEMBER_AXES = ("lr", "beta3", "warmup_steps", "seed")
SCHEDULES = ("constant", "cosine")
AUTO_WARMUP = "auto"
DEFAULT_MAX_TRIALS = 5000
# With n seeds the exact paired sign-flip test cannot go below p = 2/2^n; 6 is the fewest seeds
# for which p <= 0.05 is reachable (2/2^5 = 0.0625 > 0.05, 2/2^6 = 0.031).
DEFAULT_SEEDS = 6
MAX_SEEDS = 1000
# Per-axis list limits. Each is far above what a useful grid needs and low enough that a request
# is refused by its size (cheaply, with the field's name) before the grid is counted; the total
# is bounded by max_trials anyway. lr is the only axis people sweep finely.
MAX_AXIS_VALUES = 64
MAX_LR_VALUES = 10_000
MAX_WARMUP_STEPS = 100_000_000  # the same bound as Budget.steps: a longer warmup never ends
MAX_PRIORITY = 2**31 - 1

OptimizerName = Literal["adam", "adamw", "adamod", "diffmod", "sgd", "radam", "nadamw"]
ScheduleName = Literal["constant", "cosine"]
# strict=True: JSON numbers only (an int is accepted as a float; a bool or a string is not).
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
Count = Annotated[int, Field(strict=True, ge=1)]
# The optimizers hold hyperparameters next to float32 parameters: a value beyond float32's range
# becomes inf there, and a positive one below its smallest subnormal becomes 0 (no step at all).
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _float32_representable(value: float, *, positive: bool) -> float:
    """``value`` if float32 can hold it (and, when ``positive``, not as 0); ValueError otherwise."""
    if abs(value) > FLOAT32_MAX:
        raise ValueError(f"{value:g} is beyond float32's range (at most {FLOAT32_MAX:.4g})")
    if positive and value > 0 and np.float32(value) == 0:
        raise ValueError(f"{value:g} underflows to 0 in float32 (the optimizer would not move)")
    return value


Float32Positive = Annotated[
    PositiveFloat, AfterValidator(functools.partial(_float32_representable, positive=True))
]
Float32NonNegative = Annotated[
    float,
    Field(strict=True, ge=0, allow_inf_nan=False),
    AfterValidator(functools.partial(_float32_representable, positive=False)),
]
Beta = Annotated[float, Field(strict=True, ge=0, lt=1, allow_inf_nan=False)]


def auto_warmup_steps(beta2: float) -> int:
    """The untuned warmup of Ma & Yarats (2021): round(2 / (1 - β2)) steps (2000 at β2 = 0.999).

    Their rule of thumb matches RAdam's implicit warmup; `round` is Python's (half to even),
    which only matters for the β2 where 2 / (1 - β2) is exactly k + 0.5.
    """
    if not 0.0 <= beta2 < 1.0:
        raise ValueError(f"beta2 must be in [0, 1), got {beta2}")
    return round(2.0 / (1.0 - beta2))


def resolve_warmup(value: int | str, beta2: float) -> int:
    """A warmup_steps entry as a number of steps ("auto" -> auto_warmup_steps(beta2))."""
    return auto_warmup_steps(beta2) if value == AUTO_WARMUP else int(value)


def _warmup_entry(value: Any) -> int | str:
    """One warmup_steps entry: an integer >= 0 or the string "auto" (kept as written)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        kind = "boolean" if isinstance(value, bool) else type(value).__name__
        raise ValueError(f"must be an integer >= 0 or {AUTO_WARMUP!r}, got the {kind} {value!r}")
    if isinstance(value, str):
        if value != AUTO_WARMUP:
            raise ValueError(
                f"must be an integer >= 0 or {AUTO_WARMUP!r}, got the string {value!r}"
            )
        return value
    if not 0 <= value <= MAX_WARMUP_STEPS:
        raise ValueError(f"must be between 0 and {MAX_WARMUP_STEPS} steps, got {value}")
    return value


WarmupEntry = Annotated[
    int | str,
    PlainValidator(_warmup_entry),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": MAX_WARMUP_STEPS},
                {"const": AUTO_WARMUP, "description": "round(2 / (1 - betas[1])) steps"},
            ]
        }
    ),
]


def _no_duplicates(values: list[Any], what: str) -> list[Any]:
    """Reject a list that names the same value twice (it would run the same trials twice)."""
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} lists {value!r} more than once")
        seen.add(value)
    return values


def _field_error(
    model: str, loc: tuple[str, ...], kind: str, message: str, value: Any, **ctx: Any
) -> ValidationError:
    """A ValidationError at `loc` from a model-level check (a plain ValueError there would carry
    no field path, and every error must name its field)."""
    error = PydanticCustomError(kind, message, ctx or None)
    return ValidationError.from_exception_data(
        model, [InitErrorDetails(type=error, loc=loc, input=value)]
    )


class LrGrid(BaseModel):
    """The learning-rate axis: {"min", "max", "points"} log-spaced (ends included) or {"values"}."""

    model_config = ConfigDict(
        extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    min: Float32Positive | None = Field(default=None, description="smallest lr (> 0)")
    max: Float32Positive | None = Field(default=None, description="largest lr (>= min)")
    points: Annotated[int, Field(strict=True, ge=1, le=10_000)] | None = Field(
        default=None, description="number of log-spaced points, both ends included"
    )
    # Stored as `explicit` so that `values()` can be the method DESIGN.md names; it reads and
    # writes as "values" everywhere (JSON, YAML, model_dump).
    explicit: (
        Annotated[list[Float32Positive], Field(min_length=1, max_length=MAX_LR_VALUES)] | None
    ) = Field(
        default=None, alias="values", description="explicit learning rates (instead of a range)"
    )

    @model_validator(mode="before")
    @classmethod
    def _one_form(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if set(data) - {"min", "max", "points", "values", "explicit"}:
            # An unknown key (`point`, `value`) is the mistake to report: pydantic's
            # extra_forbidden names it (and spec_suggest the field meant), where the form check
            # would only say that a key is missing.
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

    @model_validator(mode="after")
    def _points_distinct(self) -> LrGrid:
        # min and max a few ulps apart log-space to equal floats: the same trials twice.
        if self.explicit is None and (self.points or 0) > 1:
            values = self.values()
            distinct = len(set(values))
            if distinct != len(values):
                raise ValueError(
                    f"{self.points} log-spaced points between {self.min!r} and {self.max!r} give "
                    f"only {distinct} distinct float values; widen the range or use fewer points"
                )
        return self

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


def _without_negative_zero(value: Any) -> Any:
    """`value` with every -0.0 (in nested dicts and lists too) replaced by 0.0."""
    if isinstance(value, float):
        return 0.0 if value == 0.0 else value
    if isinstance(value, dict):
        return {key: _without_negative_zero(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_negative_zero(item) for item in value]
    return value


class StudySpec(BaseModel):
    """A study: one workload, a grid of optimizer × schedule × lr × β3 × warmup × seed, a budget."""

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
    optimizers: Annotated[list[OptimizerName], Field(min_length=1, max_length=len(OPTIMIZERS))] = (
        Field(default_factory=lambda: ["adam", "adamod"])
    )
    reference: OptimizerName | None = Field(
        default=None,
        description=(
            "the optimizer the others are compared with; one of `optimizers`. Omitted: the report "
            "uses adamw when weight_decay > 0, else adam"
        ),
    )
    lr: LrGrid = Field(default_factory=lambda: LrGrid(min=1e-4, max=1e-1, points=7))
    beta3: Annotated[list[Beta], Field(min_length=1, max_length=MAX_AXIS_VALUES)] = Field(
        default_factory=lambda: [0.999], description="AdaMod/DiffMod only; in [0, 1)"
    )
    warmup_steps: Annotated[list[WarmupEntry], Field(min_length=1, max_length=MAX_AXIS_VALUES)] = (
        Field(
            default_factory=lambda: [0],
            description=(
                'linear warmup lengths in steps; "auto" = round(2 / (1 - betas[1])) '
                "(Ma & Yarats 2021), kept as written here, resolved to steps in each trial's config"
            ),
        )
    )
    schedule: Annotated[list[ScheduleName], Field(min_length=1, max_length=len(SCHEDULES))] = Field(
        default_factory=lambda: ["constant"],
        description="lr schedules after warmup: constant, or cosine decay to 0 over the budget",
    )
    seeds: Annotated[int, Field(strict=True, ge=1, le=MAX_SEEDS)] = Field(
        default=DEFAULT_SEEDS,
        description="seeds 0 .. seeds-1; 6 is the fewest for which a paired test reaches p <= 0.05",
    )
    budget: Budget | None = Field(default=None, description="workload default when omitted")
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: Float32Positive = 1e-8
    weight_decay: Float32NonNegative = 0.0
    target_loss: FiniteFloat | None = Field(
        default=None,
        description=(
            "validation loss that counts as reached (steps to target); omitted: derived from the "
            "reference optimizer's results"
        ),
    )
    # A 32-bit column on PostgreSQL: the bound makes a huge value a 422, not a failed INSERT.
    priority: Annotated[int, Field(strict=True, ge=-MAX_PRIORITY, le=MAX_PRIORITY)] = Field(
        default=0, description="higher runs first; FIFO within a priority"
    )
    reuse: Annotated[bool, Field(strict=True)] = Field(
        default=True,
        description=(
            "complete a trial from an identical earlier trial's result (same config, workload "
            "version, torch version and device type, in any study) instead of training it again"
        ),
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

    @model_validator(mode="before")
    @classmethod
    def _no_negative_zero(cls, data: Any) -> Any:
        """-0.0 is 0.0 here: equal to it in every use, and PostgreSQL's JSONB (numeric) cannot
        store the sign, so keeping it would store one spec two ways on the two backends."""
        return _without_negative_zero(data)

    @field_validator("workload_config")
    @classmethod
    def _workload_config_valid(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("workload")
        if name is None:  # the workload itself was invalid; that error is reported already
            return value
        from studies.workloads.registry import get_workload

        model = get_workload(name).config_model
        try:
            raw = json.dumps(value)
        except (TypeError, ValueError):  # not JSON data (only possible from Python callers)
            return model.model_validate(value).model_dump(mode="json")
        # Strict JSON validation, as the spec's own fields: a string or a boolean where the
        # workload wants a number is an error, lists still fill tuples and dicts nested models.
        # A nested ValidationError keeps its locations, prefixed with "workload_config".
        return model.model_validate_json(raw, strict=True).model_dump(mode="json")

    @field_validator("optimizers")
    @classmethod
    def _optimizers_distinct(cls, value: list[str]) -> list[str]:
        return _no_duplicates(value, "optimizers")

    @field_validator("reference")
    @classmethod
    def _reference_in_study(cls, value: str | None, info: ValidationInfo) -> str | None:
        optimizers = info.data.get("optimizers")
        if value is not None and optimizers is not None and value not in optimizers:
            raise ValueError(
                f"reference {value!r} is not one of the study's optimizers {optimizers}; "
                "add it to optimizers or name one of them"
            )
        return value

    @field_validator("beta3")
    @classmethod
    def _beta3_distinct(cls, value: list[float]) -> list[float]:
        return _no_duplicates(value, "beta3")

    @field_validator("warmup_steps")
    @classmethod
    def _warmup_distinct(cls, value: list[int | str]) -> list[int | str]:
        return _no_duplicates(value, "warmup_steps")

    @field_validator("schedule")
    @classmethod
    def _schedule_distinct(cls, value: list[str]) -> list[str]:
        return _no_duplicates(value, "schedule")

    @model_validator(mode="after")
    def _fill_and_bound(self, info: ValidationInfo) -> StudySpec:
        from studies.workloads.registry import get_workload

        self._check_resolved_warmups()
        if self.budget is None:
            self.budget = get_workload(self.workload).default_budget
        context = info.context if isinstance(info.context, dict) else {}
        max_trials = int(context.get("max_trials", DEFAULT_MAX_TRIALS))
        n = self.n_trials
        if n > max_trials:
            raise _field_error(
                type(self).__name__,
                ("lr",),
                "too_many_trials",
                "the grid has {n} trials, more than the maximum of {max_trials}; use fewer lr "
                "points, beta3 values, warmup values, schedules, seeds or optimizers",
                self.lr.model_dump(),
                n=n,
                max_trials=max_trials,
            )
        return self

    def _check_resolved_warmups(self) -> None:
        """ "auto" may resolve to a length the list already names: the same trials twice."""
        beta2 = self.betas[1]
        seen: dict[int, int | str] = {}
        for entry in self.warmup_steps:
            steps = resolve_warmup(entry, beta2)
            if steps > MAX_WARMUP_STEPS:
                raise _field_error(
                    type(self).__name__,
                    ("warmup_steps",),
                    "warmup_too_long",
                    '"auto" resolves to {steps} steps with betas[1] = {beta2}, more than the '
                    "maximum of {limit}",
                    list(self.warmup_steps),
                    steps=steps,
                    beta2=beta2,
                    limit=MAX_WARMUP_STEPS,
                )
            if steps in seen:
                raise _field_error(
                    type(self).__name__,
                    ("warmup_steps",),
                    "duplicate_warmup",
                    '"auto" resolves to {steps} steps with betas[1] = {beta2}, which the list '
                    "already names ({other} and {entry} are the same warmup); list it once",
                    list(self.warmup_steps),
                    steps=steps,
                    beta2=beta2,
                    other=repr(seen[steps]),
                    entry=repr(entry),
                )
            seen[steps] = entry

    def resolved_warmup_steps(self) -> list[int]:
        """The warmup axis in steps, in the spec's order ("auto" resolved with betas[1])."""
        return [resolve_warmup(w, self.betas[1]) for w in self.warmup_steps]

    @property
    def n_trials(self) -> int:
        """How many trials the grid expands to."""
        per_lr = len(self.schedule) * len(self.warmup_steps) * self.seeds * self.lr.count
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
    warmup_steps: Annotated[int, Field(strict=True, ge=0)] = 0  # "auto" is resolved by expand_grid
    schedule: ScheduleName = "constant"
    seed: Annotated[int, Field(strict=True, ge=0)] = 0
    budget: Budget
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)] = 0.0

    @model_validator(mode="after")
    def _beta3_matches_optimizer(self) -> TrialConfig:
        if self.optimizer in BOUNDED_OPTIMIZERS and self.beta3 is None:
            raise ValueError(f"optimizer {self.optimizer!r} needs beta3")
        if self.optimizer not in BOUNDED_OPTIMIZERS and self.beta3 is not None:
            raise ValueError(f"optimizer {self.optimizer!r} takes no beta3 (got {self.beta3})")
        return self

    def canonical_json(self) -> str:
        """The configuration as canonical JSON (sorted keys, no spaces, no null budget field).

        A constant schedule is left out: it is what every config meant before schedules
        existed, so the keys of stored trials and of resumable local runs stay valid.
        """
        data = self.model_dump(mode="json")
        data["budget"] = self.budget.model_dump(mode="json", exclude_none=True)
        if data.get("schedule") == "constant":
            del data["schedule"]
        return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)

    def key(self) -> str:
        """Canonical hash: sha256 hex of the canonical JSON; equal configs give equal keys."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def pack_key(self) -> str:
        """What trials must share to train in one pack (one vectorized model): the sha256 hex of
        the canonical JSON without the per-member axes lr, beta3, warmup_steps and seed.

        Workload, workload_config, budget, optimizer, schedule, betas, eps and weight decay are
        the same for every member of a pack; equal keys mean the trials can be packed (when the
        workload can be packed at all, see Workload.packable).
        """
        data = json.loads(self.canonical_json())
        for axis in PACK_MEMBER_AXES:
            data.pop(axis, None)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def params(self) -> dict[str, Any]:
        """The flat, JSON-able grid coordinates (for Optuna and the REST trial listing)."""
        return {
            "optimizer": self.optimizer,
            "lr": self.lr,
            "beta3": self.beta3,
            "warmup_steps": self.warmup_steps,
            "schedule": self.schedule,
            "seed": self.seed,
        }


def expand_grid(spec: StudySpec) -> list[TrialConfig]:
    """Every trial of a spec, ordered by optimizer, schedule, lr, β3 (None if unbounded), warmup
    (resolved to steps), seed.

    Schedule comes right after optimizer because a trial pack (one vectorized model) shares
    optimizer and schedule: the trials a worker can pack together are neighbours in grid order,
    which is the order they are queued and claimed in.
    """
    assert spec.budget is not None  # filled in by validation
    common = {
        "workload": spec.workload,
        "budget": spec.budget,
        "betas": spec.betas,
        "eps": spec.eps,
        "weight_decay": spec.weight_decay,
    }
    warmups = spec.resolved_warmup_steps()
    lrs = spec.lr.values()
    configs: list[TrialConfig] = []
    for optimizer in spec.optimizers:
        beta3s: list[float | None] = list(spec.beta3) if optimizer in BOUNDED_OPTIMIZERS else [None]
        for schedule in spec.schedule:
            for lr in lrs:
                for beta3 in beta3s:
                    for warmup in warmups:
                        for seed in range(spec.seeds):
                            # model_construct: every field was validated as part of the spec
                            # already, and a 5000-trial grid must expand in milliseconds.
                            configs.append(
                                TrialConfig.model_construct(
                                    optimizer=optimizer,
                                    lr=lr,
                                    beta3=beta3,
                                    warmup_steps=warmup,
                                    schedule=schedule,
                                    seed=seed,
                                    workload_config=copy.deepcopy(spec.workload_config),
                                    **common,
                                )
                            )
    return configs


# YAML 1.2 / JSON floats: an optional sign, digits with an optional fraction, or a fraction alone,
# then an optional exponent; and .inf / .nan as YAML 1.1 spells them (validation rejects those).
_YAML_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


@functools.cache
def _spec_yaml_loader() -> type:
    """PyYAML's safe loader, reading floats as YAML 1.2 and JSON do.

    PyYAML follows YAML 1.1, where `1e-8` (no dot) is a string: with strict number fields that
    would make `eps: 1e-8` an error in a spec file although it is a number everywhere else.
    """
    import yaml

    class SpecLoader(yaml.SafeLoader):
        pass

    # Resolvers are looked up by first character; replace the float resolver for those.
    resolvers = {
        key: [(tag, regexp) for tag, regexp in entries if tag != "tag:yaml.org,2002:float"]
        for key, entries in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    SpecLoader.yaml_implicit_resolvers = resolvers
    SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML_FLOAT, list("-+0123456789."))
    return SpecLoader


def read_spec_file(path: str | Path) -> Any:
    """The data of a YAML (or JSON) spec file, numbers read as JSON reads them (`1e-8` too).

    Raises FileNotFoundError when there is no such file and ValueError when it is not YAML.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"spec file not found: {path}")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_spec_yaml_loader())
    except yaml.YAMLError as exc:
        raise ValueError(f"spec file {path} is not valid YAML: {exc}") from exc


def load_spec(path: str | Path, *, max_trials: int = DEFAULT_MAX_TRIALS) -> StudySpec:
    """Read and validate a StudySpec from a YAML (or JSON) file."""
    data = read_spec_file(path)
    if not isinstance(data, dict):
        raise ValueError(f"spec file {path} must hold a mapping of StudySpec fields")
    return StudySpec.model_validate(data, context={"max_trials": max_trials})

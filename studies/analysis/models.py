"""The robustness report v2 as pydantic models: `Report.model_dump(mode="json")` is the REST body.

Field names are binding for clients (`../shared/ARCHITECTURE.md`, "Report JSON"); what each number
means is in docs/REPORT.md and, in short, in `Report.definitions`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BestVsBest",
    "BudgetCurve",
    "Comparison",
    "ConfigReport",
    "CurvePoint",
    "ExcludedSeed",
    "Failure",
    "Interval",
    "LrComparison",
    "MissingCell",
    "OpenEnds",
    "Report",
    "SeedDelta",
    "SeedValue",
    "Surface",
    "Target",
    "WarmupComparison",
    "WarmupEntry",
]


class _Frozen(BaseModel):
    """Base of every report model: immutable, no unknown fields (a JSON round trip is exact)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class SeedValue(_Frozen):
    """One seed's result at one lr of a configuration."""

    seed: int
    loss: float = Field(description="capped loss L = min(loss, loss0); loss0 when diverged")
    diverged: bool
    steps_to_target: int | None = None


class CurvePoint(_Frozen):
    """One lr of a configuration's curve: capped-loss statistics over seeds."""

    lr: float
    median: float
    p25: float
    p75: float
    values: list[float] = Field(description="L per seed, seeds ascending")
    seed_values: list[SeedValue]
    n_seeds: int = Field(description="seeds with a result (completed or diverged) at this lr")
    n_diverged: int
    n_failed: int = Field(description="trials of this cell that failed (not results)")
    uncapped_median: float | None = Field(
        description="median of the raw final loss, diverged = +inf; null when not finite"
    )
    steps_to_target: float | None = Field(
        description="median steps to the target, never = +inf; null unless most seeds reach it"
    )


class OpenEnds(_Frozen):
    """Which ends of an interval on the lr grid reach the end of the grid (open there)."""

    low: bool
    high: bool


class ConfigReport(_Frozen):
    """Metrics of one configuration (optimizer, β3, warmup, schedule) along the lr grid."""

    optimizer: str
    beta3: float | None
    warmup_steps: int
    schedule: str
    label: str
    curve: list[CurvePoint]
    best_loss: float = Field(description="L*: the lowest median capped loss on the curve")
    best_lr: float = Field(description="the lr of L* (the smallest such lr on ties)")
    test_loss_at_best: float | None = Field(description="median test loss at best_lr")
    loss0: float | None = Field(description="median loss0 over this configuration's results")
    lr_sensitivity: float
    lr_sensitivity_norm: float | None
    good_lr_decades: float | None
    good_lr_range: tuple[float, float] | None
    good_lr_open: OpenEnds | None
    grid_spacing_decades: float | None = Field(description="largest gap between lrs: resolution")
    target_lr_decades: float | None
    target_lr_range: tuple[float, float] | None = None
    divergence_rate: float
    seed_spread: float | None
    implicit_warmup_steps: float | None
    n_trials: int = Field(description="results (completed or diverged)")
    n_diverged: int
    n_failed: int


class Target(_Frozen):
    """The target loss of time-to-result and where it came from."""

    loss: float | None
    source: str = Field(description="spec | reference | none")
    config: str | None = Field(default=None, description="the reference configuration used")


class Interval(_Frozen):
    """A confidence interval."""

    low: float
    high: float
    level: float = 0.95


class SeedDelta(_Frozen):
    """The per-seed difference d_s of a paired comparison."""

    seed: int
    d: float


class ExcludedSeed(_Frozen):
    """A seed left out of a paired test, and why."""

    seed: int
    reason: str


class MissingCell(_Frozen):
    """A cell (lr, seed) without a result on at least one side: each side's state."""

    lr: float
    seed: int
    challenger: str
    reference: str


class LrComparison(_Frozen):
    """Wins, ties, both-failed and losses over seeds at one lr, with its sign-flip test."""

    lr: float
    n_seeds: int
    wins: int
    ties: int
    both_failed: int
    losses: int
    mean_delta: float | None
    p: float | None
    p_holm: float | None


class Comparison(_Frozen):
    """A challenger configuration against the reference, paired by seed on their common support."""

    kind: str = Field(description="same_warmup | no_warmup_vs_warmup")
    challenger: str
    reference: str
    challenger_optimizer: str
    challenger_beta3: float | None
    reference_optimizer: str
    warmup: int = Field(description="the challenger's warmup")
    reference_warmup: int
    schedule: str
    n_seeds: int = Field(description="seeds in the test (common grid of >= 2 lrs)")
    per_seed_d: list[SeedDelta]
    excluded_seeds: list[ExcludedSeed]
    mean_d: float | None
    share_better: float | None
    p: float | None
    min_possible_p: float
    underpowered: bool
    seeds_needed: int | None
    ci_t: Interval | None
    ci_bootstrap: Interval | None
    per_lr: list[LrComparison]
    missing_cells: list[MissingCell]
    n_missing: int
    headline: str


class BestVsBest(_Frozen):
    """Each configuration at its own best lr against the reference at its best lr, by seed."""

    challenger: str
    reference: str
    challenger_optimizer: str
    reference_optimizer: str
    warmup: int
    schedule: str
    challenger_best_lr: float
    reference_best_lr: float
    n_seeds: int
    per_seed_d: list[SeedDelta]
    mean_d: float | None
    share_better: float | None
    p: float | None
    min_possible_p: float
    underpowered: bool
    seeds_needed: int | None
    ci_t: Interval | None
    ci_bootstrap: Interval | None
    mean_test_delta: float | None
    headline: str


class Surface(_Frozen):
    """Median capped loss on the lr × β3 grid of one bounded optimizer, warmup and schedule."""

    optimizer: str
    warmup_steps: int
    schedule: str
    lrs: list[float]
    beta3s: list[float]
    median_loss: list[list[float | None]] = Field(description="rows: beta3s, columns: lrs")
    best_lr: float
    best_beta3: float
    best_loss: float


class WarmupEntry(_Frozen):
    """One warmup value of a configuration in the warmup comparison."""

    warmup_steps: int
    label: str
    best_loss: float
    best_lr: float
    lr_sensitivity_norm: float | None
    good_lr_decades: float | None
    divergence_rate: float
    implicit_warmup_steps: float | None


class WarmupComparison(_Frozen):
    """The same optimizer (β3, schedule) at several warmups."""

    optimizer: str
    beta3: float | None
    schedule: str
    entries: list[WarmupEntry]
    summary: str


class BudgetCurve(_Frozen):
    """Expected best L after k (lr, seed) trials drawn without replacement (Tang et al. 2020)."""

    label: str
    optimizer: str
    n_trials: int
    k: list[int]
    expected_best: list[float]


class Failure(_Frozen):
    """A failed trial: not a result, listed with its error."""

    trial_id: int | None
    params: dict[str, Any]
    error: str | None


class Report(_Frozen):
    """The whole robustness report of a study (possibly partial)."""

    version: int = 2
    status: str = Field(description="completed | running | queued | cancelled | failed")
    complete: bool
    spec: dict[str, Any] | None
    environment: dict[str, Any]
    reference: str | None = Field(description="the reference optimizer")
    reference_reason: str
    target: Target
    test_split: bool
    counts: dict[str, int]
    failures: list[Failure]
    n_records: int
    n_used: int = Field(description="records analysed (completed or diverged, finite L)")
    optimizers: list[str]
    configs: list[ConfigReport]
    comparisons: list[Comparison]
    best_vs_best: list[BestVsBest]
    surfaces: list[Surface]
    warmup: list[WarmupComparison]
    budget: list[BudgetCurve]
    headline: list[str]
    definitions: dict[str, str]

"""The robustness report as pydantic models: `Report.model_dump(mode="json")` is the REST body."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AdamComparison",
    "BudgetCurve",
    "ConfigReport",
    "CurvePoint",
    "Interval",
    "Report",
    "Surface",
    "WarmupComparison",
    "WarmupEntry",
    "WarmupPair",
]


class _Frozen(BaseModel):
    """Base of every report model: immutable, no unknown fields (a JSON round trip is exact)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class CurvePoint(_Frozen):
    """One lr of a configuration's curve: capped-loss statistics over seeds."""

    lr: float
    median: float
    p25: float
    p75: float
    n_seeds: int = Field(description="seeds with a result at this lr")
    n_diverged: int = Field(description="of those, how many diverged")


class ConfigReport(_Frozen):
    """Metrics of one configuration (optimizer, β3, warmup) along the learning-rate grid."""

    optimizer: str
    beta3: float | None
    warmup_steps: int
    label: str
    curve: list[CurvePoint]
    best_loss: float = Field(description="L*: the lowest median capped loss on the curve")
    best_lr: float = Field(description="the lr of L* (the smallest such lr on ties)")
    loss0: float | None = Field(description="median loss0 over this configuration's trials")
    lr_sensitivity: float
    lr_sensitivity_norm: float | None
    good_lr_decades: float | None
    good_lr_range: tuple[float, float] | None
    divergence_rate: float
    seed_spread: float | None
    n_trials: int
    n_diverged: int


class Surface(_Frozen):
    """Median capped loss on the lr × β3 grid of one bounded optimizer at one warmup value."""

    optimizer: str
    warmup_steps: int
    lrs: list[float]
    beta3s: list[float]
    median_loss: list[list[float | None]] = Field(description="rows: beta3s, columns: lrs")
    best_lr: float
    best_beta3: float
    best_loss: float


class WarmupEntry(_Frozen):
    """One warmup value of an optimizer in the warmup comparison."""

    warmup_steps: int
    best_loss: float
    best_lr: float
    lr_sensitivity: float
    lr_sensitivity_norm: float | None
    good_lr_decades: float | None
    divergence_rate: float


class WarmupComparison(_Frozen):
    """The same optimizer (and β3) with and without warmup."""

    optimizer: str
    beta3: float | None
    entries: list[WarmupEntry]
    summary: str


class Interval(_Frozen):
    """A confidence interval."""

    low: float
    high: float
    level: float = 0.95


class WarmupPair(_Frozen):
    """The candidate and the baseline side by side at one warmup value."""

    warmup_steps: int
    lr_sensitivity: float
    baseline_lr_sensitivity: float
    good_lr_decades: float | None
    baseline_good_lr_decades: float | None
    best_loss: float
    baseline_best_loss: float


class AdamComparison(_Frozen):
    """One optimizer at one β3 against the baseline (Adam), paired on (lr, warmup, seed)."""

    optimizer: str
    beta3: float | None
    baseline: str = "adam"
    pairs: int
    win_rate: float | None = Field(description="share of pairs with Δ = L - L_baseline < 0")
    median_delta: float | None
    wilcoxon_p: float | None = Field(description="two-sided Wilcoxon signed-rank p-value")
    lr_sensitivity_delta: float | None = Field(
        description="mean over common warmups of lr_sensitivity - baseline lr_sensitivity"
    )
    lr_sensitivity_delta_ci: Interval | None = Field(description="bootstrap over seeds")
    n_bootstrap: int
    by_warmup: list[WarmupPair]
    summary: str


class BudgetCurve(_Frozen):
    """Expected best capped loss after k configurations drawn without replacement (Tang et al.)."""

    optimizer: str
    n_configurations: int
    k: list[int]
    expected_best: list[float]


class Report(_Frozen):
    """The whole robustness report of a study (possibly partial)."""

    complete: bool
    n_records: int = Field(description="records given")
    n_used: int = Field(description="records analysed (completed or diverged, with a capped loss)")
    optimizers: list[str]
    configs: list[ConfigReport]
    surfaces: list[Surface]
    warmup: list[WarmupComparison]
    comparisons: list[AdamComparison]
    budget: list[BudgetCurve]
    headline: list[str]

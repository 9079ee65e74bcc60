"""Several studies (one per workload) with the same optimizers, compared: a per-workload table and
two performance profiles (Dolan & Moré 2002, as AlgoPerf scores optimizers).

Pure: report dicts in (each a study's v2 report JSON, `report.model_dump(mode="json")`), a
`Comparison` out. Nothing here reads files, talks to a database or draws; `studies.compare_render`
draws the figure and the page, the CLI and the service only fetch the reports.

Why profiles: a table of per-workload numbers does not say which optimizer is better *across*
workloads whose losses and step counts are not on one scale. A performance profile divides each
configuration's cost on a workload by the best cost there, so every workload counts the same, and
ρ_o(τ) is the share of workloads on which configuration o is within a factor τ of the best.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "PROFILE_NAMES",
    "TAU_MAX",
    "TAU_POINTS",
    "CompareRow",
    "CompareStudy",
    "Comparison",
    "ConfigKey",
    "MissingConfig",
    "PerformanceProfile",
    "ProfileCost",
    "ProfileCurve",
    "compare_reports",
    "profile_ratios",
    "rho_curve",
    "trapezoid_area",
]

TAU_MAX = 4.0
TAU_POINTS = 301  # τ = 1, 1.01, …, 4: a step of 0.01
PROFILE_NAMES = ("steps_to_target", "lr_sensitivity")
# r ≤ τ is tested with this relative slack so that a ratio of exactly 2 counts at the grid point
# τ = 2 even though linspace's 2 and c / m's 2 may differ in the last bit.
_RATIO_RTOL = 1e-9

DEFINITIONS: dict[str, str] = {
    "configuration": "(optimizer, β3, warmup_steps, schedule); matched across studies on exactly "
    "these four (β3 and lr rounded to 12 significant digits); the label is the first study's",
    "profiles": "only configurations present in every study enter the profiles; the others are "
    "listed in not_in_every_study and shown in the table",
    "steps_to_target": "cost of the first profile: the curve's median steps to the study's own "
    "target at the configuration's best_lr (null in the report, i.e. fewer than half the seeds "
    "reach it, counts as ∞)",
    "lr_sensitivity": "cost of the second profile: lr_sensitivity_norm of the configuration (null, "
    "undefined because nothing was learned at any lr, counts as ∞)",
    "ratio": "r(p, o) = c(p, o) / min over o' of c(p, o'); c = ∞ gives r = ∞; when the minimum is "
    "∞ (no configuration reached the target on workload p) every r on p is ∞; when the minimum is "
    "0 (a perfectly flat curve) r = 1 for c = 0 and ∞ for c > 0 (the limit of c/m, no floor); in "
    "the JSON an infinite cost or ratio is null",
    "rho": "ρ_o(τ) = share of workloads p with r(p, o) ≤ τ (relative slack 1e-9), on the grid "
    f"τ = 1 … {TAU_MAX:g} in {TAU_POINTS} evenly spaced points; higher is better; ρ_o(1) is the "
    "share of workloads on which o is (one of) the best",
    "area": f"area under ρ_o from τ = 1 to {TAU_MAX:g} by the trapezoid rule on the τ grid (so a "
    f"jump costs half a grid step), in [0, {TAU_MAX - 1:g}]; area_normalized = area / "
    f"{TAU_MAX - 1:g}, in [0, 1]; 1 means best on every workload",
    "target": "each study's own target (ROBUSTNESS.md: spec target_loss, else the reference's "
    "L* + 10% of its gap to loss0): steps are comparable within a workload, not across",
    "workload": "each study counts as one workload p, whatever its spec.workload (two studies of "
    "one workload count twice)",
}


class _Frozen(BaseModel):
    """Immutable, no unknown fields: a JSON round trip is exact (as studies.analysis.models)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class CompareStudy(_Frozen):
    """One compared study (one workload p of the profiles)."""

    index: int = Field(description="position in the input, 0-based")
    name: str = Field(description="display name (the caller's, else the spec's name)")
    study_name: str | None = Field(description="spec.name")
    workload: str | None = Field(description="spec.workload")
    status: str | None
    complete: bool | None
    target_loss: float | None
    target_source: str | None = Field(description="spec | reference | none")
    n_configs: int


class ConfigKey(_Frozen):
    """A configuration as matched across studies."""

    label: str
    optimizer: str
    beta3: float | None
    warmup_steps: int
    schedule: str


class MissingConfig(_Frozen):
    """A configuration some studies have and others do not: shown in the table, not profiled."""

    label: str
    optimizer: str
    beta3: float | None
    warmup_steps: int
    schedule: str
    in_studies: list[str]
    missing_from: list[str]


class CompareRow(_Frozen):
    """One (study, configuration) of the per-workload table."""

    study: str = Field(description="CompareStudy.name")
    study_index: int
    workload: str | None
    label: str
    optimizer: str
    beta3: float | None
    warmup_steps: int
    schedule: str
    best_loss: float | None = Field(description="L*")
    best_lr: float | None
    lr_sensitivity_norm: float | None
    good_lr_decades: float | None
    target_lr_decades: float | None
    steps_to_target: float | None = Field(description="at best_lr; null: never reached")
    target_loss: float | None
    target_source: str | None
    in_profiles: bool


class ProfileCost(_Frozen):
    """c(p, o) and r(p, o) of one workload and configuration (null = ∞)."""

    study: str
    study_index: int
    label: str
    cost: float | None
    ratio: float | None


class ProfileCurve(_Frozen):
    """ρ_o on the τ grid for one configuration, and the area under it."""

    label: str
    optimizer: str
    beta3: float | None
    warmup_steps: int
    schedule: str
    rho: list[float]
    area: float = Field(description=f"trapezoid area under ρ from τ = 1 to {TAU_MAX:g}")
    area_normalized: float = Field(description=f"area / {TAU_MAX - 1:g}, in [0, 1]")
    n_best: int = Field(description="workloads with r = 1")
    n_finite: int = Field(description="workloads with a finite r")


class PerformanceProfile(_Frozen):
    """One performance profile: a cost per (workload, configuration), ratios, ρ curves."""

    name: str = Field(description=" | ".join(PROFILE_NAMES))
    title: str
    cost: str = Field(description="what c(p, o) is")
    tau: list[float]
    curves: list[ProfileCurve]
    costs: list[ProfileCost] = Field(description="studies in input order, configurations within")
    no_finite_best: list[str] = Field(
        description="studies on which every configuration's cost is ∞ (every r is ∞ there)"
    )


class Comparison(_Frozen):
    """Several studies compared: the studies, the table, the two profiles, the definitions."""

    version: int = 1
    studies: list[CompareStudy]
    configs: list[ConfigKey] = Field(description="the configurations in every study (profiled)")
    not_in_every_study: list[MissingConfig]
    table: list[CompareRow]
    profiles: list[PerformanceProfile]
    tau_max: float = TAU_MAX
    notes: list[str]
    definitions: dict[str, str]


# --------------------------------------------------------------------------- maths


def profile_ratios(costs: Sequence[float]) -> list[float]:
    """r = c / min(c) for one workload's costs (∞ allowed), with the documented edge cases.

    min = ∞ (nobody reached the target): every r is ∞. min = 0: r = 1 for c = 0, ∞ for c > 0.
    """
    if not costs:
        return []
    best = min(costs)
    if math.isinf(best):
        return [math.inf] * len(costs)
    if best == 0.0:
        return [1.0 if c == 0.0 else math.inf for c in costs]
    return [math.inf if math.isinf(c) else c / best for c in costs]


def rho_curve(ratios: Sequence[float], tau: Sequence[float]) -> list[float]:
    """ρ(τ) = share of the ratios ≤ τ (relative slack 1e-9), for every τ of the grid."""
    n = len(ratios)
    if n == 0:
        return [0.0] * len(tau)
    r = np.asarray(ratios, dtype=float)
    t = np.asarray(tau, dtype=float)
    hits = (r[None, :] <= t[:, None] * (1.0 + _RATIO_RTOL)).sum(axis=1)
    return [float(h) / n for h in hits]


def trapezoid_area(y: Sequence[float], x: Sequence[float]) -> float:
    """The trapezoid rule on the given grid (why not the exact step integral: ρ is only known on
    the grid the JSON carries, and a reader can recompute this from it)."""
    total = 0.0
    for i in range(1, len(x)):
        total += 0.5 * (y[i] + y[i - 1]) * (x[i] - x[i - 1])
    return total


def tau_grid() -> list[float]:
    """τ = 1 … TAU_MAX in TAU_POINTS evenly spaced points."""
    return [float(t) for t in np.linspace(1.0, TAU_MAX, TAU_POINTS)]


# --------------------------------------------------------------------------- reading reports


def _round12(x: float) -> float:
    """Rounded to 12 significant digits: how docs/REPORT.md matches lrs (and here β3)."""
    return float(f"{x:.12g}")


def _finite(value: Any) -> float | None:
    """A finite float, else None (null, NaN, ±∞, or not a number at all)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    x = float(value)
    return x if math.isfinite(x) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


_Key = tuple[str, float | None, int, str]


def _key(config: Mapping[str, Any], where: str) -> _Key:
    """(optimizer, β3, warmup_steps, schedule) of one config dict; ValueError naming `where`."""
    optimizer = config.get("optimizer")
    if not isinstance(optimizer, str) or not optimizer:
        raise ValueError(f"{where}.optimizer must be a non-empty string, got {optimizer!r}")
    raw_beta3 = config.get("beta3")
    beta3 = _finite(raw_beta3)
    if raw_beta3 is not None and beta3 is None:
        raise ValueError(f"{where}.beta3 must be a number or null, got {raw_beta3!r}")
    warmup = config.get("warmup_steps", 0)
    if isinstance(warmup, bool) or not isinstance(warmup, int):
        if isinstance(warmup, float) and warmup.is_integer():
            warmup = int(warmup)
        else:
            raise ValueError(f"{where}.warmup_steps must be an integer, got {warmup!r}")
    schedule = config.get("schedule", "constant")  # v1 reports had no schedule axis
    if not isinstance(schedule, str):
        raise ValueError(f"{where}.schedule must be a string, got {schedule!r}")
    return (optimizer, None if beta3 is None else _round12(beta3), warmup, schedule)


def _default_label(key: _Key) -> str:
    optimizer, beta3, warmup, schedule = key
    parts = [optimizer + ("" if beta3 is None else f" β3={beta3:g}"), f"warmup {warmup}"]
    if schedule != "constant":
        parts.append(schedule)
    return ", ".join(parts)


def steps_at_best_lr(config: Mapping[str, Any]) -> float | None:
    """The curve's `steps_to_target` at `best_lr` (lrs matched to 12 digits); None = never."""
    best_lr = _finite(config.get("best_lr"))
    curve = config.get("curve")
    if best_lr is None or not isinstance(curve, list):
        return None
    for point in curve:
        if isinstance(point, Mapping):
            lr = _finite(point.get("lr"))
            if lr is not None and _round12(lr) == _round12(best_lr):
                steps = _finite(point.get("steps_to_target"))
                return None if steps is None or steps < 0 else steps
    return None


class _Study:
    """One report dict, checked and indexed by configuration key."""

    def __init__(self, index: int, report: Any, name: str | None) -> None:
        where = f"reports[{index}]"
        if not isinstance(report, Mapping):
            raise ValueError(f"{where} must be a report dict, got {type(report).__name__}")
        configs = report.get("configs")
        if not isinstance(configs, list):
            raise ValueError(f"{where}.configs must be a list (is this a study report?)")
        spec = report.get("spec") if isinstance(report.get("spec"), Mapping) else {}
        target = report.get("target") if isinstance(report.get("target"), Mapping) else {}
        self.index = index
        self.study_name = _text(spec.get("name"))
        self.workload = _text(spec.get("workload"))
        self.name = name or self.study_name or f"study {index + 1}"
        self.status = _text(report.get("status"))
        complete = report.get("complete")
        self.complete = complete if isinstance(complete, bool) else None
        self.target_loss = _finite(target.get("loss"))
        self.target_source = _text(target.get("source"))
        self.configs: dict[_Key, Mapping[str, Any]] = {}
        for j, config in enumerate(configs):
            if not isinstance(config, Mapping):
                raise ValueError(f"{where}.configs[{j}] must be a dict")
            key = _key(config, f"{where}.configs[{j}]")
            if key in self.configs:
                raise ValueError(f"{where}.configs[{j}] repeats configuration {key}")
            self.configs[key] = config

    def ref(self) -> CompareStudy:
        return CompareStudy(
            index=self.index, name=self.name, study_name=self.study_name, workload=self.workload,
            status=self.status, complete=self.complete, target_loss=self.target_loss,
            target_source=self.target_source, n_configs=len(self.configs),
        )  # fmt: skip


# --------------------------------------------------------------------------- the comparison


def _profile(
    name: str,
    title: str,
    cost_text: str,
    studies: Sequence[_Study],
    keys: Sequence[_Key],
    labels: Mapping[_Key, str],
    cost_of: Any,
) -> PerformanceProfile:
    """Costs → ratios per workload → ρ curves and areas, for the configurations in `keys`."""
    tau = tau_grid()
    matrix: list[list[float]] = []  # [study][config], ∞ for "never" / undefined
    costs_out: list[ProfileCost] = []
    no_finite_best: list[str] = []
    for study in studies:
        costs = [cost_of(study.configs[k]) for k in keys]
        costs = [math.inf if c is None else c for c in costs]
        ratios = profile_ratios(costs)
        if all(math.isinf(c) for c in costs):
            no_finite_best.append(study.name)
        matrix.append(ratios)
        for k, c, r in zip(keys, costs, ratios, strict=True):
            costs_out.append(
                ProfileCost(
                    study=study.name, study_index=study.index, label=labels[k],
                    cost=None if math.isinf(c) else c, ratio=None if math.isinf(r) else r,
                )
            )  # fmt: skip
    curves = []
    for j, k in enumerate(keys):
        ratios = [row[j] for row in matrix]
        rho = rho_curve(ratios, tau)
        area = trapezoid_area(rho, tau)
        optimizer, beta3, warmup, schedule = k
        curves.append(
            ProfileCurve(
                label=labels[k], optimizer=optimizer, beta3=beta3, warmup_steps=warmup,
                schedule=schedule, rho=rho, area=area, area_normalized=area / (TAU_MAX - 1.0),
                n_best=sum(1 for r in ratios if r <= 1.0 + _RATIO_RTOL),
                n_finite=sum(1 for r in ratios if math.isfinite(r)),
            )
        )  # fmt: skip
    return PerformanceProfile(
        name=name, title=title, cost=cost_text, tau=tau, curves=curves, costs=costs_out,
        no_finite_best=no_finite_best,
    )  # fmt: skip


def _sensitivity(config: Mapping[str, Any]) -> float | None:
    value = _finite(config.get("lr_sensitivity_norm"))
    return None if value is None or value < 0 else value


def compare_reports(reports: Sequence[dict], names: Sequence[str] | None = None) -> Comparison:
    """Compares several studies' reports (one per workload) configuration by configuration.

    `reports` are v2 report dicts; `names` optional display names, one per report (default: each
    spec's name). Configurations are matched on (optimizer, β3, warmup_steps, schedule); those in
    every study enter two performance profiles: steps to target at the best lr, and
    lr_sensitivity_norm. See DEFINITIONS (also the output's `definitions`) for every edge case:
    an ∞ cost (never reached, undefined sensitivity), a workload where nobody reached the target
    (every ratio ∞), a minimum of 0 (ratio 1 for 0, ∞ otherwise).

    ValueError (naming `reports` or `names`): fewer than 2 reports, a report that is not a report
    dict, or reports that share no configuration.
    """
    if isinstance(reports, str | bytes | Mapping) or not isinstance(reports, Sequence):
        raise ValueError(
            f"reports must be a sequence of report dicts, got {type(reports).__name__}"
        )
    if len(reports) < 2:
        raise ValueError(f"reports must hold at least 2 study reports, got {len(reports)}")
    if names is not None:
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise ValueError("names must be a sequence of strings, one per report")
        if len(names) != len(reports):
            raise ValueError(
                f"names must have one entry per report: {len(names)} != {len(reports)}"
            )
        if not all(isinstance(n, str) and n.strip() for n in names):
            raise ValueError("names must be non-empty strings")
        if len(set(names)) != len(names):
            raise ValueError("names must be distinct")
    studies = [_Study(i, r, None if names is None else names[i]) for i, r in enumerate(reports)]
    if names is None:  # two studies of the same name: tell them apart by position
        seen: dict[str, int] = {}
        for s in studies:
            seen[s.name] = seen.get(s.name, 0) + 1
        for s in studies:
            if seen[s.name] > 1:
                s.name = f"{s.name} [{s.index + 1}]"

    # Presentation order: every configuration in order of first appearance, first study first.
    order: list[_Key] = []
    labels: dict[_Key, str] = {}
    for s in studies:
        for k, config in s.configs.items():
            if k not in labels:
                order.append(k)
                label = config.get("label")
                labels[k] = label if isinstance(label, str) and label else _default_label(k)
    common = [k for k in order if all(k in s.configs for s in studies)]
    if not common:
        empty = [s.name for s in studies if not s.configs]
        why = f" ({', '.join(empty)} have no configuration with results yet)" if empty else ""
        raise ValueError(
            "reports share no configuration (optimizer, beta3, warmup_steps, schedule)" + why
        )
    in_common = set(common)
    missing = [
        MissingConfig(
            label=labels[k], optimizer=k[0], beta3=k[1], warmup_steps=k[2], schedule=k[3],
            in_studies=[s.name for s in studies if k in s.configs],
            missing_from=[s.name for s in studies if k not in s.configs],
        )
        for k in order
        if k not in in_common
    ]  # fmt: skip

    table = []
    for s in studies:
        for k in order:
            config = s.configs.get(k)
            if config is None:
                continue
            table.append(
                CompareRow(
                    study=s.name, study_index=s.index, workload=s.workload, label=labels[k],
                    optimizer=k[0], beta3=k[1], warmup_steps=k[2], schedule=k[3],
                    best_loss=_finite(config.get("best_loss")),
                    best_lr=_finite(config.get("best_lr")),
                    lr_sensitivity_norm=_finite(config.get("lr_sensitivity_norm")),
                    good_lr_decades=_finite(config.get("good_lr_decades")),
                    target_lr_decades=_finite(config.get("target_lr_decades")),
                    steps_to_target=steps_at_best_lr(config),
                    target_loss=s.target_loss, target_source=s.target_source,
                    in_profiles=k in in_common,
                )
            )  # fmt: skip

    profiles = [
        _profile(
            "steps_to_target",
            "Steps to target at each configuration's best lr",
            "median steps to the study's target at best_lr (∞ when never reached)",
            studies, common, labels, steps_at_best_lr,
        ),
        _profile(
            "lr_sensitivity",
            "Normalized lr sensitivity",
            "lr_sensitivity_norm (∞ when undefined)",
            studies, common, labels, _sensitivity,
        ),
    ]  # fmt: skip

    notes = []
    for s in studies:
        if s.complete is False:
            notes.append(f"{s.name} is not complete (status {s.status}): its numbers may change")
        if s.target_loss is None:
            notes.append(f"{s.name} has no target loss: nobody reaches it there")
    for p in profiles:
        if p.no_finite_best:
            notes.append(
                f"{p.name}: every configuration's cost is ∞ on {', '.join(p.no_finite_best)}, "
                "so every ratio there is ∞"
            )
    if missing:
        notes.append(
            f"{len(missing)} configuration(s) are not in every study and are left out of the "
            "profiles (see not_in_every_study)"
        )
    workloads = [s.workload for s in studies if s.workload]
    if len(set(workloads)) < len(workloads):
        notes.append("some studies share a workload: each study still counts as one workload")

    return Comparison(
        studies=[s.ref() for s in studies],
        configs=[
            ConfigKey(label=labels[k], optimizer=k[0], beta3=k[1], warmup_steps=k[2], schedule=k[3])
            for k in common
        ],
        not_in_every_study=missing,
        table=table,
        profiles=profiles,
        notes=notes,
        definitions=dict(DEFINITIONS),
    )

"""build_report: the robustness report v2 (ROBUSTNESS.md, docs/REPORT.md) from trial records.

Pure: records in, a pydantic Report out; partial data gives a partial report, never an error.
The pieces live in studies/analysis (tables → curves → paired comparisons); this module chooses
the reference and the target, assembles the sections and writes the headline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from studies.analysis.curves import config_report
from studies.analysis.models import (
    BestVsBest,
    BudgetCurve,
    Comparison,
    ConfigReport,
    Failure,
    Report,
    Surface,
    Target,
    WarmupComparison,
    WarmupEntry,
)
from studies.analysis.names import config_label, display_name, warmup_words
from studies.analysis.paired import adjust_holm, best_vs_best, compare
from studies.analysis.stats import GOOD_GAP, N_BOOTSTRAP, budget_ks, expected_best_of_k
from studies.analysis.tables import (
    ADAM_FAMILY,
    BOUNDED,
    ConfigTable,
    group_records,
    optimizer_rank,
)

__all__ = [
    "DEFINITIONS",
    "Report",
    "build_report",
    "config_label",
    "display_name",
    "reference_optimizer",
]

#: Upper bound on bootstrap resamples (memory grows as resamples × seeds per comparison).
MAX_BOOTSTRAP = 100_000
_STATES = ("completed", "diverged", "failed", "cancelled", "queued", "running")
STUDY_STATUSES = ("queued", "running", "completed", "cancelled", "failed")

#: What the numbers mean, in short (docs/REPORT.md has the whole text).
DEFINITIONS = {
    "L": "capped validation loss min(loss, loss0); a diverged trial has L = loss0",
    "result": "a completed or diverged trial; failed, cancelled and pending trials are not",
    "best_loss": "L*: the lowest median L over seeds along the lr grid (ties: the smaller lr)",
    "lr_sensitivity_norm": "mean over the grid of (median L − L*) / (loss0 − L*), in [0, 1]",
    "good_lr_decades": (
        f"width in decades of the interval around the best lr where (L − L*)/(loss0 − L*) ≤ "
        f"{GOOD_GAP:g}, edges interpolated linearly in log10 lr; open where it reaches the grid end"
    ),
    "target": "spec target_loss, else L*_ref + 0.1·(loss0_ref − L*_ref) of the reference",
    "steps_to_target": "first evaluation step with validation loss ≤ target; median over seeds",
    "per_seed_d": (
        "per seed: normalized lr sensitivity of the challenger minus the reference's, each on "
        "that seed's common grid with its own L*"
    ),
    "p": (
        "two-sided paired sign-flip permutation test of the mean over seeds: exact over all 2^n "
        "sign vectors for n ≤ 16, else 100,000 random ones"
    ),
    "underpowered": "the smallest possible p with n seeds, 2/2^n, exceeds 0.05 (needs ≥ 6 seeds)",
    "intervals": "95% t-interval and percentile bootstrap (10,000 resamples) from ≥ 5 seeds only",
    "per_lr": (
        "wins / ties / both failed to learn (both diverged or both at loss0) / losses over "
        "seeds; p_holm: Holm-adjusted over every per-lr test of the report"
    ),
    "common_support": "only (lr, seed) cells where both sides have a result; others listed",
    "reference": "adamw when weight_decay > 0, else adam, unless the spec names one",
    "best_vs_best": "each configuration at its own best lr vs the reference at its best lr",
    "budget": "expected best L of k (lr, seed) trials drawn without replacement (Tang et al.)",
}


def reference_optimizer(spec: dict[str, Any] | None) -> tuple[str, str]:
    """The reference optimizer and why: the spec's `reference`, else AdamW with decay, else Adam."""
    spec = spec or {}
    if spec.get("reference"):
        return str(spec["reference"]), "named by the spec"
    wd = spec.get("weight_decay") or 0.0
    if isinstance(wd, int | float) and wd > 0:
        return "adamw", f"weight_decay = {wd:g} > 0: AdaMod's decay is decoupled, as AdamW's"
    return "adam", "no weight decay"


def _counts(records: Sequence[Any]) -> dict[str, int]:
    counts = dict.fromkeys(_STATES, 0)
    for r in records:
        counts[r.state] = counts.get(r.state, 0) + 1
    counts["total"] = len(records)
    return counts


def _derive_status(counts: dict[str, int]) -> str:
    if counts.get("queued", 0) or counts.get("running", 0):
        return "running"
    if counts.get("cancelled", 0):
        return "cancelled"
    if counts.get("failed", 0) and not (counts["completed"] or counts["diverged"]):
        return "failed"
    return "completed"


def _target(
    spec: dict[str, Any] | None, ref_configs: Sequence[ConfigReport]
) -> tuple[float | None, str, str | None]:
    """(target loss, source, reference configuration label) per ROBUSTNESS.md "The target"."""
    given = (spec or {}).get("target_loss")
    if isinstance(given, int | float) and not isinstance(given, bool) and math.isfinite(given):
        return float(given), "spec", None
    candidates = [c for c in ref_configs if c.loss0 is not None]
    if not candidates:
        return None, "none", None
    best = min(candidates, key=lambda c: c.best_loss)  # first on ties: presentation order
    assert best.loss0 is not None
    return best.best_loss + GOOD_GAP * (best.loss0 - best.best_loss), "reference", best.label


def _environment(records: Sequence[Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    torch_versions = sorted({r.torch_version for r in records if getattr(r, "torch_version", None)})
    devices = sorted({r.device for r in records if getattr(r, "device", None)})
    data: dict[str, list[Any]] = {}
    for r in records:
        for k, v in (getattr(r, "data", None) or {}).items():
            if v not in data.setdefault(k, []):
                data[k].append(v)
    env: dict[str, Any] = {"torch": torch_versions, "devices": devices, "data": data}
    env.update(extra or {})
    return env


def build_surfaces(configs: Sequence[ConfigReport]) -> list[Surface]:
    """lr × β3 grids of median L, one per bounded optimizer, warmup and schedule."""
    groups: dict[tuple[str, int, str], list[ConfigReport]] = {}
    for c in configs:
        if c.optimizer in BOUNDED and c.beta3 is not None:
            groups.setdefault((c.optimizer, c.warmup_steps, c.schedule), []).append(c)
    out = []
    for (opt, warmup, schedule), cs in sorted(
        groups.items(), key=lambda kv: (optimizer_rank(kv[0][0]), kv[0][2], kv[0][1])
    ):
        lrs = sorted({p.lr for c in cs for p in c.curve})
        beta3s = sorted({c.beta3 for c in cs if c.beta3 is not None})
        col = {lr: j for j, lr in enumerate(lrs)}
        grid: list[list[float | None]] = [[None] * len(lrs) for _ in beta3s]
        for c in cs:
            row = beta3s.index(c.beta3)
            for p in c.curve:
                grid[row][col[p.lr]] = p.median
        cells = [
            (v, b, lr)
            for b, r in zip(beta3s, grid, strict=True)
            for lr, v in zip(lrs, r, strict=True)
            if v is not None
        ]
        best_v, best_b, best_lr = min(cells, key=lambda t: t[0])  # first: smallest β3, then lr
        out.append(
            Surface(
                optimizer=opt,
                warmup_steps=warmup,
                schedule=schedule,
                lrs=lrs,
                beta3s=beta3s,
                median_loss=grid,
                best_lr=best_lr,
                best_beta3=best_b,
                best_loss=best_v,
            )
        )
    return out


def _good_words(x: float | None) -> str:
    return "no lr made progress" if x is None else f"good over {x:.2g} decades of lr"


def build_warmup(configs: Sequence[ConfigReport]) -> list[WarmupComparison]:
    """Per (optimizer, β3, schedule) run at several warmups: one entry per warmup."""
    groups: dict[tuple[str, float | None, str], list[ConfigReport]] = {}
    for c in configs:
        groups.setdefault((c.optimizer, c.beta3, c.schedule), []).append(c)
    out = []
    for (opt, beta3, schedule), cs in groups.items():
        if len(cs) < 2:
            continue
        cs = sorted(cs, key=lambda c: c.warmup_steps)
        entries = [
            WarmupEntry(
                warmup_steps=c.warmup_steps,
                label=c.label,
                best_loss=c.best_loss,
                best_lr=c.best_lr,
                lr_sensitivity_norm=c.lr_sensitivity_norm,
                good_lr_decades=c.good_lr_decades,
                divergence_rate=c.divergence_rate,
                implicit_warmup_steps=c.implicit_warmup_steps,
            )
            for c in cs
        ]
        name = display_name(opt) + ("" if beta3 is None else f" β3={beta3:g}")
        parts = [
            f"{warmup_words(e.warmup_steps)}: {_good_words(e.good_lr_decades)}, best L "
            f"{e.best_loss:.3g}, {e.divergence_rate:.0%} diverged"
            for e in entries
        ]
        out.append(
            WarmupComparison(
                optimizer=opt,
                beta3=beta3,
                schedule=schedule,
                entries=entries,
                summary=f"{name} ({schedule} schedule): " + "; ".join(parts) + ".",
            )
        )
    return out


def build_budget(
    tables: Sequence[ConfigTable], configs: Sequence[ConfigReport]
) -> list[BudgetCurve]:
    """Per configuration: expected best L after k of its (lr, seed) trials (Tang et al. 2020)."""
    out = []
    for t, c in zip(tables, configs, strict=True):
        values = t.loss[t.has_result]
        ks = budget_ks(values.size, max_points=256)
        if values.size > 256:
            ks = sorted({int(k) for k in np.round(np.geomspace(1, values.size, 100))})
        out.append(
            BudgetCurve(
                label=c.label,
                optimizer=c.optimizer,
                n_trials=int(values.size),
                k=ks,
                expected_best=expected_best_of_k(values.tolist(), ks),
            )
        )
    return out


def _comparisons(
    pairs: Sequence[tuple[ConfigTable, ConfigReport]], reference: str, seed: int, n_bootstrap: int
) -> tuple[list[Comparison], list[BestVsBest]]:
    """Per-lr comparisons (Adam family) and best-vs-best (all) against the reference configs."""
    refs = {
        (t.key.warmup_steps, t.key.schedule): (t, c)
        for t, c in pairs
        if t.key.optimizer == reference
    }
    comparisons: list[Comparison] = []
    bests: list[BestVsBest] = []
    for t, c in pairs:
        if t.key.optimizer == reference:
            continue
        same = refs.get((t.key.warmup_steps, t.key.schedule))
        lr_comparable = t.key.optimizer in ADAM_FAMILY and reference in ADAM_FAMILY
        if same is not None:
            bests.append(best_vs_best(t, c, *same, seed=seed, n_bootstrap=n_bootstrap))
            if lr_comparable:
                comparisons.append(
                    compare(t, c, *same, kind="same_warmup", seed=seed, n_bootstrap=n_bootstrap)
                )
        if lr_comparable and t.key.optimizer in BOUNDED and t.key.warmup_steps == 0:
            for (w, schedule), ref in sorted(refs.items()):
                if w > 0 and schedule == t.key.schedule:
                    comparisons.append(
                        compare(
                            t,
                            c,
                            *ref,
                            kind="no_warmup_vs_warmup",
                            seed=seed,
                            n_bootstrap=n_bootstrap,
                        )
                    )
    return adjust_holm(comparisons), bests


def _headline(
    status: str,
    configs: Sequence[ConfigReport],
    comparisons: Sequence[Comparison],
    bests: Sequence[BestVsBest],
    reference: str,
    counts: dict[str, int],
) -> list[str]:
    lines = []
    if status != "completed":
        pending = counts.get("queued", 0) + counts.get("running", 0)
        lines.append(
            f"Study {status}: partial report ({pending} trials still queued or running, "
            f"{counts.get('cancelled', 0)} cancelled, {counts.get('failed', 0)} failed)."
        )
    elif counts.get("failed", 0):
        lines.append(f"{counts['failed']} trials failed: excluded from every comparison.")
    if not configs:
        return [*lines, "No completed or diverged trials yet: nothing to analyse."]
    if not any(c.optimizer == reference for c in configs):
        lines.append(f"The study has no {display_name(reference)} results: no comparison.")
    lines += [c.headline + "." for c in comparisons]
    # Across families best-vs-best is the only comparison, so it makes the headline.
    lines += [
        b.headline + "."
        for b in bests
        if not (b.challenger_optimizer in ADAM_FAMILY and reference in ADAM_FAMILY)
    ]
    return lines


def build_report(
    records: Sequence[Any],
    *,
    spec: dict[str, Any] | None = None,
    status: str | None = None,
    environment: dict[str, Any] | None = None,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    complete: bool | None = None,
) -> Report:
    """The robustness report v2 of a study's trial records (every state; see docs/REPORT.md).

    `spec`: the normalized StudySpec as a dict (target_loss, reference, weight_decay are read).
    `status`: the study's status; derived from the records' states when None. `seed` fixes the
    random parts (bootstrap, sign flips above 16 seeds); `n_bootstrap` resamples (10,000 as
    ROBUSTNESS.md asks; 0 leaves the bootstrap intervals out). `complete=False` (the v1
    argument) means "running".
    """
    if isinstance(records, str | bytes) or not hasattr(records, "__iter__"):
        raise ValueError(f"records must be a sequence of TrialRecord, got {type(records).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if spec is not None and not isinstance(spec, dict):
        raise ValueError(
            f"spec must be a dict (the normalized StudySpec), got {type(spec).__name__}"
        )
    if status is not None and status not in STUDY_STATUSES:
        raise ValueError(f"status must be one of {', '.join(STUDY_STATUSES)}, got {status!r}")
    if (
        isinstance(n_bootstrap, bool)
        or not isinstance(n_bootstrap, int)
        or not 0 <= n_bootstrap <= MAX_BOOTSTRAP
    ):
        raise ValueError(f"n_bootstrap must be an int in [0, {MAX_BOOTSTRAP}], got {n_bootstrap!r}")
    if complete is not None and not isinstance(complete, bool):
        raise ValueError(f"complete must be a bool, got {complete!r}")
    records = list(records)
    tables = group_records(records)
    counts = _counts(records)
    if status is None:
        status = _derive_status(counts)
        if complete is False and status == "completed":
            status = "running"
    reference, reason = reference_optimizer(spec)

    # The target needs the reference's L*, which does not depend on the target: two passes.
    untargeted = [config_report(t, None) for t in tables if t.key.optimizer == reference]
    ref_configs = [c for c in untargeted if c is not None]
    target, source, target_config = _target(spec, ref_configs)
    pairs = [(t, config_report(t, target)) for t in tables]
    pairs = [(t, c) for t, c in pairs if c is not None]
    configs = [c for _, c in pairs]

    comparisons, bests = _comparisons(pairs, reference, seed, n_bootstrap)
    failures = [
        Failure(
            trial_id=r.trial_id,
            params={
                "optimizer": r.optimizer,
                "lr": r.lr,
                "beta3": r.beta3,
                "warmup_steps": r.warmup_steps,
                "schedule": r.schedule,
                "seed": r.seed,
            },
            error=r.error,
        )
        for r in records
        if r.state == "failed"
    ]
    headline = _headline(status, configs, comparisons, bests, reference, counts)
    return Report(
        status=status,
        complete=status == "completed",
        spec=spec,
        environment=_environment(records, environment),
        reference=reference,
        reference_reason=reason,
        target=Target(loss=target, source=source, config=target_config),
        test_split=any(c.test_loss_at_best is not None for c in configs),
        counts=counts,
        failures=failures,
        n_records=len(records),
        n_used=sum(c.n_trials for c in configs),
        optimizers=sorted({c.optimizer for c in configs}, key=optimizer_rank),
        configs=configs,
        comparisons=comparisons,
        best_vs_best=bests,
        surfaces=build_surfaces(configs),
        warmup=build_warmup(configs),
        budget=build_budget([t for t, _ in pairs], configs),
        headline=headline,
        definitions=DEFINITIONS,
    )

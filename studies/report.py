"""build_report: the robustness report of ROBUSTNESS.md computed from trial records (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from studies.analysis.models import (
    AdamComparison,
    BudgetCurve,
    ConfigReport,
    CurvePoint,
    Interval,
    Report,
    Surface,
    WarmupComparison,
    WarmupEntry,
    WarmupPair,
)
from studies.analysis.stats import (
    GOOD_GAP,
    bootstrap_indices,
    bootstrap_lr_sensitivity,
    budget_ks,
    expected_best_of_k,
    good_lr_run,
    lr_sensitivity,
    lr_sensitivity_norm,
    nan_quantiles,
    normalized_gaps,
    paired_deltas,
    percentile_interval,
    seed_spread,
    wilcoxon_p,
)
from studies.analysis.tables import (
    BOUNDED,
    ConfigKey,
    ConfigTable,
    align_seeds,
    group_records,
    optimizer_rank,
)

__all__ = [
    "BASELINE",
    "GOOD_GAP",
    "MAX_BOOTSTRAP",
    "Report",
    "build_budget",
    "build_comparisons",
    "build_report",
    "build_surfaces",
    "build_warmup",
    "config_report",
    "display_name",
    "expected_best_of_k",
    "good_lr_run",
    "lr_sensitivity",
    "lr_sensitivity_norm",
    "seed_spread",
    "wilcoxon_p",
]

#: The optimizer every other one is compared with.
BASELINE = "adam"
#: Upper bound on bootstrap resamples: memory grows as lrs × resamples × seeds per configuration.
MAX_BOOTSTRAP = 100_000
_NAMES = {"adam": "Adam", "adamw": "AdamW", "adamod": "AdaMod", "diffmod": "DiffMod", "sgd": "SGD"}


def display_name(optimizer: str) -> str:
    """How an optimizer is written for people (AdaMod, not adamod)."""
    return _NAMES.get(optimizer, optimizer)


def config_label(optimizer: str, beta3: float | None, warmup_steps: int) -> str:
    """A short human label of a configuration, e.g. 'AdaMod β3=0.999, warmup 0'."""
    name = display_name(optimizer)
    if beta3 is not None:
        name += f" β3={beta3:g}"
    return f"{name}, warmup {warmup_steps}"


def _fmt(x: float | None, digits: int = 3) -> str:
    """A number for a sentence; 'n/a' for None."""
    return "n/a" if x is None else f"{x:.{digits}g}"


def _warmup_words(steps: int) -> str:
    """'no warmup' or 'N warmup steps'."""
    return "no warmup" if steps == 0 else f"{steps} warmup steps"


def _good_range(x: float | None) -> str:
    """good_lr_decades for a sentence: 'good over 1.5 decades of lr'."""
    if x is None:
        return "no lr made progress"
    return f"good over {x:.2g} decade{'' if x == 1 else 's'} of lr"


# --------------------------------------------------------------------------- per configuration


def config_report(table: ConfigTable) -> ConfigReport:
    """Curve, best, lr_sensitivity (and normalized), good_lr_decades, divergence, seed spread."""
    p25, med, p75 = nan_quantiles(table.values, [0.25, 0.5, 0.75], axis=1)
    n_seeds = np.sum(~np.isnan(table.values), axis=1)
    best_i = int(np.argmin(med))  # first minimum: the smallest lr on ties
    best = float(med[best_i])
    sens = float(lr_sensitivity(med))
    run = good_lr_run(table.lrs.tolist(), normalized_gaps(med, table.loss0))
    key = table.key
    n_div = int(table.n_diverged.sum())
    curve = [
        CurvePoint(
            lr=float(lr),
            median=float(m),
            p25=float(a),
            p75=float(b),
            n_seeds=int(n),
            n_diverged=int(d),
        )
        for lr, m, a, b, n, d in zip(
            table.lrs, med, p25, p75, n_seeds, table.n_diverged, strict=True
        )
    ]
    return ConfigReport(
        optimizer=key.optimizer,
        beta3=key.beta3,
        warmup_steps=key.warmup_steps,
        label=config_label(key.optimizer, key.beta3, key.warmup_steps),
        curve=curve,
        best_loss=best,
        best_lr=float(table.lrs[best_i]),
        loss0=table.loss0,
        lr_sensitivity=sens,
        lr_sensitivity_norm=lr_sensitivity_norm(sens, table.loss0, best),
        good_lr_decades=None if run is None else math.log10(run[1] / run[0]),
        good_lr_range=run,
        divergence_rate=n_div / table.n_trials,
        seed_spread=seed_spread(p25, p75),
        n_trials=table.n_trials,
        n_diverged=n_div,
    )


# --------------------------------------------------------------------------- surfaces and warmup


def build_surfaces(configs: Sequence[ConfigReport]) -> list[Surface]:
    """lr × β3 grids of median capped loss, one per bounded optimizer and warmup value."""
    groups: dict[tuple[str, int], list[ConfigReport]] = {}
    for c in configs:
        if c.optimizer in BOUNDED and c.beta3 is not None:
            groups.setdefault((c.optimizer, c.warmup_steps), []).append(c)
    out = []
    ordered = sorted(groups.items(), key=lambda kv: (optimizer_rank(kv[0][0]), kv[0][1]))
    for (opt, warmup), cs in ordered:
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
                lrs=lrs,
                beta3s=beta3s,
                median_loss=grid,
                best_lr=best_lr,
                best_beta3=best_b,
                best_loss=best_v,
            )
        )
    return out


def build_warmup(configs: Sequence[ConfigReport]) -> list[WarmupComparison]:
    """Metrics per warmup of every (optimizer, β3) run both with warmup 0 and with some > 0."""
    groups: dict[tuple[str, float | None], list[ConfigReport]] = {}
    for c in configs:
        groups.setdefault((c.optimizer, c.beta3), []).append(c)
    out = []
    for (opt, beta3), cs in groups.items():
        warmups = {c.warmup_steps for c in cs}
        if 0 not in warmups or max(warmups) == 0:
            continue
        cs = sorted(cs, key=lambda c: c.warmup_steps)
        entries = [
            WarmupEntry(
                warmup_steps=c.warmup_steps,
                best_loss=c.best_loss,
                best_lr=c.best_lr,
                lr_sensitivity=c.lr_sensitivity,
                lr_sensitivity_norm=c.lr_sensitivity_norm,
                good_lr_decades=c.good_lr_decades,
                divergence_rate=c.divergence_rate,
            )
            for c in cs
        ]
        name = display_name(opt) + ("" if beta3 is None else f" β3={beta3:g}")
        parts = [
            f"{_warmup_words(e.warmup_steps)}: {_good_range(e.good_lr_decades)}, "
            f"best L {_fmt(e.best_loss)}, "
            f"{e.divergence_rate:.0%} diverged"
            for e in entries
        ]
        out.append(
            WarmupComparison(
                optimizer=opt,
                beta3=beta3,
                entries=entries,
                summary=f"{name}: " + "; ".join(parts) + ".",
            )
        )
    return out


# --------------------------------------------------------------------------- comparison with Adam


class _BootstrapCache:
    """Bootstrap replicates of lr_sensitivity per (configuration, seed set), computed once.

    The resampling indices depend only on the number of seeds and the seed, so Adam's replicates
    are shared by every comparison instead of being recomputed for each.
    """

    def __init__(self, n_bootstrap: int, seed: int) -> None:
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self._idx: dict[int, np.ndarray] = {}
        self._sens: dict[tuple[ConfigKey, bytes], np.ndarray] = {}

    def sensitivities(self, table: ConfigTable, seeds: np.ndarray) -> np.ndarray:
        """(n_bootstrap,) lr_sensitivity of `table` with its seed columns resampled over `seeds`."""
        key = (table.key, seeds.tobytes())
        if key not in self._sens:
            if seeds.size not in self._idx:
                self._idx[seeds.size] = bootstrap_indices(seeds.size, self.n_bootstrap, self.seed)
            matrix = align_seeds(table, seeds)
            self._sens[key] = bootstrap_lr_sensitivity(matrix, self._idx[seeds.size])
        return self._sens[key]


def _comparison(
    key: tuple[str, float | None],
    cand: dict[int, tuple[ConfigTable, ConfigReport]],
    base: dict[int, tuple[ConfigTable, ConfigReport]],
    boot: _BootstrapCache,
) -> AdamComparison | None:
    """Pairs on (lr, warmup, seed), Wilcoxon p and bootstrap CI of the lr_sensitivity difference."""
    warmups = sorted(set(cand) & set(base))
    if not warmups:
        return None
    seeds = np.unique(np.concatenate([t.seeds for w in warmups for t in (cand[w][0], base[w][0])]))
    deltas = []
    by_warmup = []
    for w in warmups:
        (tc, rc), (tb, rb) = cand[w], base[w]
        mc, mb = align_seeds(tc, seeds), align_seeds(tb, seeds)
        _, ic, ib = np.intersect1d(tc.lrs, tb.lrs, return_indices=True)
        d = (mc[ic] - mb[ib]).ravel()
        deltas.append(d[~np.isnan(d)])
        by_warmup.append(
            WarmupPair(
                warmup_steps=w,
                lr_sensitivity=rc.lr_sensitivity,
                baseline_lr_sensitivity=rb.lr_sensitivity,
                good_lr_decades=rc.good_lr_decades,
                baseline_good_lr_decades=rb.good_lr_decades,
                best_loss=rc.best_loss,
                baseline_best_loss=rb.best_loss,
            )
        )
    d = np.concatenate(deltas)
    pairs, win_rate, median_delta = paired_deltas(d)
    p = wilcoxon_p(d)
    sens_delta = float(np.mean([x.lr_sensitivity - x.baseline_lr_sensitivity for x in by_warmup]))
    # A seed-level interval needs at least two seeds that both optimizers ran; otherwise every
    # resample repeats the same single pairing and the "interval" would be a point.
    shared = np.intersect1d(
        np.concatenate([cand[w][0].seeds for w in warmups]),
        np.concatenate([base[w][0].seeds for w in warmups]),
    )
    ci = None
    if shared.size >= 2 and boot.n_bootstrap > 0:
        replicates = np.mean(
            [
                boot.sensitivities(cand[w][0], seeds) - boot.sensitivities(base[w][0], seeds)
                for w in warmups
            ],
            axis=0,
        )
        ci = percentile_interval(replicates)
    opt, beta3 = key
    return AdamComparison(
        optimizer=opt,
        beta3=beta3,
        baseline=BASELINE,
        pairs=pairs,
        win_rate=win_rate,
        median_delta=median_delta,
        wilcoxon_p=p,
        lr_sensitivity_delta=sens_delta,
        lr_sensitivity_delta_ci=None if ci is None else Interval(low=ci[0], high=ci[1]),
        n_bootstrap=boot.n_bootstrap,
        by_warmup=by_warmup,
        summary=_comparison_summary(
            opt, beta3, by_warmup[0], pairs, win_rate, median_delta, p, sens_delta, ci
        ),
    )


def _comparison_summary(
    opt: str,
    beta3: float | None,
    first: WarmupPair,
    pairs: int,
    win_rate: float | None,
    median_delta: float | None,
    p: float | None,
    sens_delta: float,
    ci: tuple[float, float] | None,
) -> str:
    """One plain-language sentence, e.g. 'AdaMod β3=0.999 vs Adam: good over 1.5 decades vs 0.5'."""
    name = display_name(opt) + ("" if beta3 is None else f" β3={beta3:g}")
    base = display_name(BASELINE)
    text = (
        f"{name} vs {base} ({_warmup_words(first.warmup_steps)}): "
        f"{_good_range(first.good_lr_decades)} vs "
        + (
            f"{first.baseline_good_lr_decades:.2g} for {base}"
            if first.baseline_good_lr_decades is not None
            else f"none for {base} (no lr made progress)"
        )
    )
    if pairs:
        text += (
            f"; lower capped loss in {win_rate:.0%} of {pairs} matched runs "
            f"(median Δ {median_delta:+.3g}, Wilcoxon p {'n/a' if p is None else f'= {p:.2g}'})"
        )
    text += f"; lr sensitivity Δ {sens_delta:+.3g}"
    if ci is not None:
        text += f" (95% CI {ci[0]:+.3g} to {ci[1]:+.3g})"
    return text + "."


def build_comparisons(
    tables: Sequence[ConfigTable],
    configs: Sequence[ConfigReport],
    *,
    n_bootstrap: int,
    seed: int,
) -> list[AdamComparison]:
    """Every other optimizer (per β3) against Adam, when both have trials at a common warmup."""
    by_key: dict[tuple[str, float | None], dict[int, tuple[ConfigTable, ConfigReport]]] = {}
    for t, c in zip(tables, configs, strict=True):
        by_key.setdefault((t.key.optimizer, t.key.beta3), {})[t.key.warmup_steps] = (t, c)
    base = by_key.get((BASELINE, None))
    if base is None:
        return []
    out = []
    boot = _BootstrapCache(n_bootstrap, seed)
    for key, cand in by_key.items():
        if key[0] == BASELINE:
            continue
        comp = _comparison(key, cand, base, boot)
        if comp is not None:
            out.append(comp)
    return out


# --------------------------------------------------------------------------- tuning budget


def build_budget(configs: Sequence[ConfigReport]) -> list[BudgetCurve]:
    """Per optimizer: expected best median capped loss after k grid points (lr, β3, warmup)."""
    values: dict[str, list[float]] = {}
    for c in configs:
        values.setdefault(c.optimizer, []).extend(p.median for p in c.curve)
    out = []
    for opt, vs in values.items():
        ks = budget_ks(len(vs))
        out.append(
            BudgetCurve(
                optimizer=opt,
                n_configurations=len(vs),
                k=ks,
                expected_best=expected_best_of_k(vs, ks),
            )
        )
    return out


# --------------------------------------------------------------------------- the report


def _headline(
    complete: bool,
    configs: Sequence[ConfigReport],
    comparisons: Sequence[AdamComparison],
    warmup: Sequence[WarmupComparison],
) -> list[str]:
    """Plain-language findings, most important first."""
    lines = [] if complete else ["Partial report: the study has trials still to run."]
    if not configs:
        return [*lines, "No completed or diverged trials yet: nothing to analyse."]
    lines += [c.summary for c in comparisons]
    if not comparisons:
        lines += [
            f"{c.label}: {_good_range(c.good_lr_decades)}, best L "
            f"{_fmt(c.best_loss)} at lr {c.best_lr:.3g}, {c.divergence_rate:.0%} diverged."
            for c in configs
        ]
    lines += [w.summary for w in warmup]
    return lines


def build_report(
    records: Sequence[Any],
    *,
    complete: bool = True,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> Report:
    """The robustness report of ROBUSTNESS.md from trial records; partial data → partial report.

    Only completed and diverged records are analysed. `complete` is passed through (False while the
    study runs). `n_bootstrap` resamples of seeds give the CI of the lr_sensitivity difference;
    `seed` makes them deterministic.
    """
    if not isinstance(complete, bool):
        raise ValueError(f"complete must be a bool, got {complete!r}")
    if (
        isinstance(n_bootstrap, bool)
        or not isinstance(n_bootstrap, int)
        or not 0 <= n_bootstrap <= MAX_BOOTSTRAP
    ):
        raise ValueError(f"n_bootstrap must be an int in [0, {MAX_BOOTSTRAP}], got {n_bootstrap!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if isinstance(records, (str, bytes)) or not hasattr(records, "__iter__"):
        raise ValueError(f"records must be a sequence of TrialRecord, got {type(records).__name__}")
    records = list(records)
    tables, used = group_records(records)
    configs = [config_report(t) for t in tables]
    warmup = build_warmup(configs)
    comparisons = build_comparisons(tables, configs, n_bootstrap=n_bootstrap, seed=seed)
    return Report(
        complete=complete,
        n_records=len(records),
        n_used=used,
        optimizers=sorted({c.optimizer for c in configs}, key=optimizer_rank),
        configs=configs,
        surfaces=build_surfaces(configs),
        warmup=warmup,
        comparisons=comparisons,
        budget=build_budget(configs),
        headline=_headline(complete, configs, comparisons, warmup),
    )

"""Paired comparisons with the reference: the seed is the unit, on the common support only.

A seed gives the same initialization and data order to every optimizer, so the seed is the
pairing key; pairs pooled over lrs share their seed and are never tested as if independent. Each
comparison tests one number per seed (d_s) with an exact sign-flip test, counts wins, ties,
"both failed to learn" and losses per lr, and lists every cell one side lacks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from studies.analysis.models import (
    BestVsBest,
    Comparison,
    ConfigReport,
    ExcludedSeed,
    Interval,
    LrComparison,
    MissingCell,
    SeedDelta,
)
from studies.analysis.names import display_name, warmup_words
from studies.analysis.stats import (
    ALPHA,
    N_BOOTSTRAP,
    bootstrap_mean_interval,
    holm,
    min_possible_p,
    seeds_needed,
    sign_flip_p,
    t_interval,
)
from studies.analysis.tables import ConfigTable

__all__ = ["MIN_SEEDS_FOR_INTERVAL", "adjust_holm", "best_vs_best", "compare"]

#: Intervals of a mean over seeds are shown only from this many seeds on (ROBUSTNESS.md).
MIN_SEEDS_FOR_INTERVAL = 5
_TIE_TOL = 1e-12


@dataclass(frozen=True)
class _Side:
    """One side of a comparison on the union grid (lrs × seeds) of both sides."""

    loss: np.ndarray
    loss0: np.ndarray
    diverged: np.ndarray
    state: np.ndarray


def _on_grid(table: ConfigTable, lrs: np.ndarray, seeds: np.ndarray) -> _Side:
    """`table`'s matrices re-indexed onto the lrs × seeds grid (NaN / "missing" elsewhere)."""
    shape = (lrs.size, seeds.size)
    rows = np.searchsorted(lrs, table.lrs)
    cols = np.searchsorted(seeds, table.seeds)
    ix = np.ix_(rows, cols)
    loss, loss0 = np.full(shape, np.nan), np.full(shape, np.nan)
    diverged = np.zeros(shape, dtype=bool)
    state = np.full(shape, "missing", dtype=object)
    loss[ix], loss0[ix], diverged[ix], state[ix] = (
        table.loss,
        table.loss0,
        table.diverged,
        table.state,
    )
    return _Side(loss, loss0, diverged, state)


def _interval(pair: tuple[float, float] | None) -> Interval | None:
    return None if pair is None else Interval(low=pair[0], high=pair[1])


@dataclass(frozen=True)
class _SeedTest:
    """The statistics of one number per seed."""

    mean: float | None
    share_better: float | None
    p: float | None
    min_p: float
    underpowered: bool
    needed: int | None
    ci_t: Interval | None
    ci_bootstrap: Interval | None

    def fields(self) -> dict[str, Any]:
        """The report fields every seed-level test shares (Comparison and BestVsBest)."""
        return {
            "mean_d": self.mean,
            "share_better": self.share_better,
            "p": self.p,
            "min_possible_p": self.min_p,
            "underpowered": self.underpowered,
            "seeds_needed": self.needed,
            "ci_t": self.ci_t,
            "ci_bootstrap": self.ci_bootstrap,
        }

    def words(self, d: Sequence[float], what: str, empty: str) -> str:
        """The verdict part of a headline: no test, underpowered, or the result with its p."""
        n = len(d)
        if n == 0:
            return f"{empty}: no test (underpowered: needs ≥ {self.needed} seeds)"
        if self.underpowered:
            return _power_words(self, n, d)
        return _verdict_words(self, n, what)


def _seed_test(d: Sequence[float], seed: int, n_bootstrap: int = N_BOOTSTRAP) -> _SeedTest:
    """Mean, share below zero, exact sign-flip p, power and intervals (from 5 seeds) of d."""
    arr = np.asarray(d, dtype=float)
    n = arr.size
    min_p = min_possible_p(n)
    underpowered = min_p > ALPHA
    enough = n >= MIN_SEEDS_FOR_INTERVAL
    return _SeedTest(
        mean=float(arr.mean()) if n else None,
        share_better=float(np.mean(arr < 0)) if n else None,
        p=sign_flip_p(arr, seed=seed),
        min_p=min_p,
        underpowered=underpowered,
        needed=seeds_needed(ALPHA) if underpowered else None,
        ci_t=_interval(t_interval(arr)) if enough else None,
        ci_bootstrap=_interval(bootstrap_mean_interval(arr, n_resamples=n_bootstrap, seed=seed))
        if enough
        else None,
    )


def _normalized_sensitivity(loss: np.ndarray, loss0: np.ndarray) -> float | None:
    """One seed's lr_sensitivity_norm on its common grid; None when it learned nothing."""
    best = float(loss.min())
    base = float(np.median(loss0))
    if not base - best > 0:
        return None
    return float(min(1.0, max(0.0, float(np.mean((loss - best) / (base - best))))))


def _fmt_p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.2g}"


def _power_words(test: _SeedTest, n: int, d: Sequence[float]) -> str:
    """'underpowered: 2 seeds, smallest possible p = 0.5, needs ≥ 6 seeds (per-seed Δ …)'."""
    values = ", ".join(f"{x:+.3g}" for x in d) or "none"
    return (
        f"underpowered: {n} seed{'s' if n != 1 else ''}, smallest possible p = {test.min_p:.2g}, "
        f"needs ≥ {test.needed} seeds (per-seed Δ: {values})"
    )


def _verdict_words(test: _SeedTest, n: int, what: str) -> str:
    """'lower normalized lr sensitivity on 5 of 6 seeds (mean Δ -0.12, 95% CI …, p = 0.03)'."""
    assert test.mean is not None and test.share_better is not None
    better = round(test.share_better * n)
    text = f"{what} on {better} of {n} seeds (mean Δ {test.mean:+.3g}"
    if test.ci_t is not None:
        text += f", 95% t-interval {test.ci_t.low:+.3g} to {test.ci_t.high:+.3g}"
    return text + f", sign-flip p = {_fmt_p(test.p)})"


def _setting_words(warmup: int, ref_warmup: int, schedule: str) -> str:
    if warmup == ref_warmup:
        return f"{warmup_words(warmup)}, {schedule} schedule"
    return f"{warmup_words(warmup)} vs {warmup_words(ref_warmup)}, {schedule} schedule"


def compare(
    challenger: ConfigTable,
    chal_report: ConfigReport,
    reference: ConfigTable,
    ref_report: ConfigReport,
    *,
    kind: str,
    seed: int,
    n_bootstrap: int = N_BOOTSTRAP,
) -> Comparison:
    """The challenger against the reference, per seed and per lr, on their common support.

    `p_holm` is left None and the headline's Holm clause out: `adjust_holm` fills them in once
    every comparison of the report is known (the family is all per-lr tests of the study).
    """
    lrs = np.union1d(challenger.lrs, reference.lrs)
    seeds = np.union1d(challenger.seeds, reference.seeds)
    c, r = _on_grid(challenger, lrs, seeds), _on_grid(reference, lrs, seeds)
    common = ~np.isnan(c.loss) & ~np.isnan(r.loss)
    recorded = (c.state != "missing") | (r.state != "missing")
    missing = [
        MissingCell(
            lr=float(lrs[i]),
            seed=int(seeds[j]),
            challenger=str(c.state[i, j]),
            reference=str(r.state[i, j]),
        )
        for i, j in zip(*np.nonzero(recorded & ~common), strict=True)
    ]

    per_seed: list[SeedDelta] = []
    excluded: list[ExcludedSeed] = []
    for j, s in enumerate(seeds):
        rows = common[:, j]
        if np.count_nonzero(rows) < 2:
            excluded.append(ExcludedSeed(seed=int(s), reason="fewer than 2 common lrs"))
            continue
        sc = _normalized_sensitivity(c.loss[rows, j], c.loss0[rows, j])
        sr = _normalized_sensitivity(r.loss[rows, j], r.loss0[rows, j])
        if sc is None or sr is None:
            who = "challenger" if sc is None else "reference"
            excluded.append(ExcludedSeed(seed=int(s), reason=f"{who} learned nothing at any lr"))
            continue
        per_seed.append(SeedDelta(seed=int(s), d=sc - sr))
    d = [x.d for x in per_seed]
    test = _seed_test(d, seed, n_bootstrap)

    per_lr: list[LrComparison] = []
    for i in np.nonzero(common.any(axis=1))[0]:
        cols = common[i]
        lc, lr_ = c.loss[i, cols], r.loss[i, cols]
        delta = lc - lr_
        failed = (c.diverged[i, cols] & r.diverged[i, cols]) | (
            (lc == c.loss0[i, cols]) & (lr_ == r.loss0[i, cols])
        )
        tie = ~failed & (np.abs(delta) <= _TIE_TOL * np.maximum(1.0, np.abs(lr_)))
        decided = ~failed & ~tie
        per_lr.append(
            LrComparison(
                lr=float(lrs[i]),
                n_seeds=int(cols.sum()),
                wins=int(np.count_nonzero(decided & (delta < 0))),
                ties=int(np.count_nonzero(tie)),
                both_failed=int(np.count_nonzero(failed)),
                losses=int(np.count_nonzero(decided & (delta > 0))),
                mean_delta=float(delta.mean()),
                p=sign_flip_p(delta, seed=seed),
                p_holm=None,
            )
        )

    chal_name, ref_name = chal_report.label, ref_report.label
    key = challenger.key
    n = len(d)
    setting = _setting_words(key.warmup_steps, reference.key.warmup_steps, key.schedule)
    headline = (
        f"{_short(chal_report)} vs {_short(ref_report)} ({setting}; {n} seeds, "
        f"{len(per_lr)} common lrs): "
    )
    headline += test.words(
        d,
        "lower normalized lr sensitivity",
        "no seed has two common lrs with results on both sides",
    )
    if missing:
        headline += f"; {len(missing)} cell{'s' if len(missing) != 1 else ''} missing"
    return Comparison(
        kind=kind,
        challenger=chal_name,
        reference=ref_name,
        challenger_optimizer=key.optimizer,
        challenger_beta3=key.beta3,
        reference_optimizer=reference.key.optimizer,
        warmup=key.warmup_steps,
        reference_warmup=reference.key.warmup_steps,
        schedule=key.schedule,
        n_seeds=n,
        per_seed_d=per_seed,
        excluded_seeds=excluded,
        **test.fields(),
        per_lr=per_lr,
        missing_cells=missing,
        n_missing=len(missing),
        headline=headline,
    )


def _short(config: ConfigReport) -> str:
    """'AdaMod β3=0.999' (the warmup and schedule are said once, in the setting)."""
    name = display_name(config.optimizer)
    return name if config.beta3 is None else f"{name} β3={config.beta3:g}"


def adjust_holm(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """Fill `p_holm` over every per-lr test of the report and add the per-lr clause to headlines."""
    flat = [
        (ci, li, pl.p)
        for ci, comp in enumerate(comparisons)
        for li, pl in enumerate(comp.per_lr)
        if pl.p is not None
    ]
    adjusted = holm([p for _, _, p in flat])
    by_cell = {(ci, li): a for (ci, li, _), a in zip(flat, adjusted, strict=True)}
    out = []
    for ci, comp in enumerate(comparisons):
        per_lr = [
            pl.model_copy(update={"p_holm": by_cell.get((ci, li))})
            for li, pl in enumerate(comp.per_lr)
        ]
        w = sum(p.wins for p in per_lr)
        t = sum(p.ties for p in per_lr)
        f = sum(p.both_failed for p in per_lr)
        lo = sum(p.losses for p in per_lr)
        sig = sum(1 for p in per_lr if p.p_holm is not None and p.p_holm <= ALPHA)
        clause = (
            f"; per lr: {w} wins, {t} ties, {f} both failed to learn, {lo} losses; "
            f"{sig} of {len(per_lr)} lrs differ at Holm-adjusted p ≤ {ALPHA:g}"
        )
        out.append(comp.model_copy(update={"per_lr": per_lr, "headline": comp.headline + clause}))
    return out


def best_vs_best(
    challenger: ConfigTable,
    chal_report: ConfigReport,
    reference: ConfigTable,
    ref_report: ConfigReport,
    *,
    seed: int,
    n_bootstrap: int = N_BOOTSTRAP,
) -> BestVsBest:
    """Each side at its own best lr, paired by seed: the only fair comparison across families."""
    ci = int(np.searchsorted(challenger.lrs, chal_report.best_lr))
    ri = int(np.searchsorted(reference.lrs, ref_report.best_lr))
    seeds = np.intersect1d(challenger.seeds, reference.seeds)
    cj = np.searchsorted(challenger.seeds, seeds)
    rj = np.searchsorted(reference.seeds, seeds)
    lc, lr_ = challenger.loss[ci, cj], reference.loss[ri, rj]
    both = ~np.isnan(lc) & ~np.isnan(lr_)
    per_seed = [
        SeedDelta(seed=int(s), d=float(a - b))
        for s, a, b, ok in zip(seeds, lc, lr_, both, strict=True)
        if ok
    ]
    d = [x.d for x in per_seed]
    test = _seed_test(d, seed, n_bootstrap)
    tc, tr = challenger.test[ci, cj], reference.test[ri, rj]
    tests = both & ~np.isnan(tc) & ~np.isnan(tr)
    n = len(d)
    key = challenger.key
    headline = (
        f"{_short(chal_report)} at its best lr ({chal_report.best_lr:.3g}) vs "
        f"{_short(ref_report)} at its best lr ({ref_report.best_lr:.3g}) "
        f"({warmup_words(key.warmup_steps)}, {key.schedule} schedule; {n} seeds): "
    )
    headline += test.words(d, "lower validation loss", "no seed has a result on both sides")
    mean_test = float(np.mean(tc[tests] - tr[tests])) if tests.any() else None
    if mean_test is not None:
        headline += f"; test loss Δ {mean_test:+.3g}"
    return BestVsBest(
        challenger=chal_report.label,
        reference=ref_report.label,
        challenger_optimizer=key.optimizer,
        reference_optimizer=reference.key.optimizer,
        warmup=key.warmup_steps,
        schedule=key.schedule,
        challenger_best_lr=chal_report.best_lr,
        reference_best_lr=ref_report.best_lr,
        n_seeds=n,
        per_seed_d=per_seed,
        **test.fields(),
        mean_test_delta=mean_test if mean_test is None or math.isfinite(mean_test) else None,
        headline=headline,
    )

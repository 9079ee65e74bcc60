"""Per-configuration metrics along the lr grid: curve, L*, sensitivity, good and target ranges."""

from __future__ import annotations

import math

import numpy as np

from studies.analysis.models import ConfigReport, CurvePoint, OpenEnds, SeedValue
from studies.analysis.names import config_label
from studies.analysis.stats import GOOD_GAP, interval_around, lr_sensitivity, nan_quantiles
from studies.analysis.tables import ConfigTable

__all__ = ["config_report", "steps_matrix"]


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def steps_matrix(table: ConfigTable, target: float | None) -> np.ndarray:
    """Steps to the target per cell: +inf when never reached, NaN where no result."""
    out = np.full(table.loss.shape, np.nan)
    for (i, j), rec in np.ndenumerate(table.records):
        if rec is None:
            continue
        reached = None if target is None else rec.steps_to(target)
        out[i, j] = math.inf if reached is None else float(reached)
    return out


def _median_or_none(values: np.ndarray) -> float | None:
    """Median of the non-NaN values (+inf allowed); None when empty or not finite."""
    v = values[~np.isnan(values)]
    if v.size == 0:
        return None
    with np.errstate(invalid="ignore"):
        m = float(np.median(v))
    return m if math.isfinite(m) else None


def _median(values: np.ndarray) -> float | None:
    v = values[~np.isnan(values)]
    return float(np.median(v)) if v.size else None


def config_report(table: ConfigTable, target: float | None) -> ConfigReport | None:
    """Every ROBUSTNESS.md per-configuration quantity; None when the configuration has no result."""
    rows = np.nonzero(table.has_result.any(axis=1))[0]
    if rows.size == 0:
        return None
    lrs = table.lrs[rows]
    loss = table.loss[rows]
    p25, med, p75 = nan_quantiles(loss, [0.25, 0.5, 0.75], axis=1)
    steps = steps_matrix(table, target)[rows]
    best_i = int(np.argmin(med))  # first minimum: the smallest lr on ties
    best = float(med[best_i])
    loss0 = _median(table.loss0[table.has_result])
    sens = float(lr_sensitivity(med))
    x = np.log10(lrs)

    norm = good = good_range = good_open = None
    if loss0 is not None and loss0 - best > 0:
        norm = float(min(1.0, max(0.0, sens / (loss0 - best))))
        gaps = (med - best) / (loss0 - best)
        found = interval_around(x, gaps - GOOD_GAP, best_i)
        if found is not None:
            lo, hi, open_lo, open_hi = found
            good, good_range = hi - lo, (10.0**lo, 10.0**hi)
            good_open = OpenEnds(low=open_lo, high=open_hi)

    target_decades = target_range = None
    if target is not None:
        reach = nan_quantiles(table.lowest[rows], [0.5], axis=1)[0]
        found = interval_around(x, reach - target, best_i)
        if found is not None:
            target_decades, target_range = found[1] - found[0], (10.0 ** found[0], 10.0 ** found[1])

    curve = []
    for k, i in enumerate(rows):
        present = table.has_result[i]
        seed_values = [
            SeedValue(
                seed=int(s),
                loss=float(table.loss[i, j]),
                diverged=bool(table.diverged[i, j]),
                steps_to_target=None if not math.isfinite(steps[k, j]) else int(steps[k, j]),
            )
            for j, s in enumerate(table.seeds)
            if present[j]
        ]
        curve.append(
            CurvePoint(
                lr=float(lrs[k]),
                median=float(med[k]),
                p25=float(p25[k]),
                p75=float(p75[k]),
                values=[v.loss for v in seed_values],
                seed_values=seed_values,
                n_seeds=len(seed_values),
                n_diverged=int(np.count_nonzero(table.diverged[i])),
                n_failed=int(table.n_failed[i]),
                uncapped_median=_median_or_none(table.raw[i]),
                steps_to_target=_median_or_none(steps[k]) if target is not None else None,
            )
        )
    n_results = table.n_results
    n_div = int(np.count_nonzero(table.diverged))
    iqr = p75 - p25
    key = table.key
    return ConfigReport(
        optimizer=key.optimizer,
        beta3=key.beta3,
        warmup_steps=key.warmup_steps,
        schedule=key.schedule,
        label=config_label(key.optimizer, key.beta3, key.warmup_steps, key.schedule),
        curve=curve,
        best_loss=best,
        best_lr=float(lrs[best_i]),
        test_loss_at_best=_median(table.test[rows[best_i]]),
        loss0=loss0,
        lr_sensitivity=sens,
        lr_sensitivity_norm=norm,
        good_lr_decades=good,
        good_lr_range=good_range,
        good_lr_open=good_open,
        grid_spacing_decades=float(np.max(np.diff(x))) if x.size > 1 else None,
        target_lr_decades=target_decades,
        target_lr_range=target_range,
        divergence_rate=n_div / n_results,
        seed_spread=float(np.median(iqr)) if iqr.size else None,
        implicit_warmup_steps=float(np.median(table.release_steps))
        if table.release_steps
        else None,
        n_trials=n_results,
        n_diverged=n_div,
        n_failed=int(table.n_failed.sum()),
    )

"""Numeric building blocks of the robustness report: pure, vectorized, NaN-aware numpy functions."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

__all__ = [
    "GOOD_GAP",
    "bootstrap_indices",
    "bootstrap_lr_sensitivity",
    "bootstrap_sensitivity_delta",
    "budget_ks",
    "expected_best_of_k",
    "good_lr_run",
    "lr_sensitivity",
    "lr_sensitivity_norm",
    "nan_quantiles",
    "normalized_gaps",
    "paired_deltas",
    "percentile_interval",
    "seed_spread",
    "wilcoxon_p",
]

#: A grid point is "good" when its normalized gap (L - L*) / (loss0 - L*) is at most this.
GOOD_GAP = 0.1
# Float noise allowance when comparing a normalized gap with GOOD_GAP.
_GAP_TOL = 1e-12


def nan_quantiles(values: np.ndarray, qs: Sequence[float], axis: int = -1) -> np.ndarray:
    """Quantiles along `axis` ignoring NaN (numpy's "linear" method); all-NaN slices give NaN.

    Returns an array with a new leading axis of length len(qs). Sorting once and interpolating is
    much faster than np.nanpercentile on the many small slices the bootstrap produces.
    """
    a = np.moveaxis(np.asarray(values, dtype=float), axis, -1)
    ordered = np.sort(a, axis=-1)  # NaN sorts last
    count = np.sum(~np.isnan(a), axis=-1)
    out = np.full((len(qs), *a.shape[:-1]), np.nan)
    if a.shape[-1] == 0:
        return out
    valid = count > 0
    for j, q in enumerate(qs):
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"qs must lie in [0, 1], got {q}")
        pos = q * np.maximum(count - 1, 0)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, np.maximum(count - 1, 0))
        frac = pos - lo
        v_lo = np.take_along_axis(ordered, lo[..., None], axis=-1)[..., 0]
        v_hi = np.take_along_axis(ordered, hi[..., None], axis=-1)[..., 0]
        # v_lo + frac * (v_hi - v_lo) would give NaN*0 when v_hi is NaN; hi is clamped, so fine.
        out[j] = np.where(valid, v_lo + frac * (v_hi - v_lo), np.nan)
    return out


def lr_sensitivity(medians: np.ndarray) -> np.ndarray:
    """Mean over the lr grid of (median L(lr) - L*), Wortsman et al. 2023; NaN grid points skipped.

    `medians` has the lr grid on its last axis; leading axes (e.g. bootstrap replicates) are kept.
    A slice with no finite point gives NaN.
    """
    m = np.asarray(medians, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are expected here
        best = np.nanmin(m, axis=-1)
        return np.nanmean(m - best[..., None], axis=-1)


def lr_sensitivity_norm(sensitivity: float, loss0: float | None, best: float) -> float | None:
    """lr_sensitivity / (loss0 - L*), clipped to [0, 1]; None when loss0 is unknown or loss0 <= L*.

    loss0 <= L* means no lr made any progress (e.g. every trial diverged): the ratio is undefined.
    """
    if loss0 is None or not math.isfinite(loss0) or loss0 - best <= 0:
        return None
    return float(min(1.0, max(0.0, sensitivity / (loss0 - best))))


def normalized_gaps(medians: np.ndarray, loss0: float | None) -> np.ndarray | None:
    """(L - L*) / (loss0 - L*) per grid point; None when undefined (loss0 unknown or <= L*)."""
    m = np.asarray(medians, dtype=float)
    if m.size == 0 or loss0 is None or not math.isfinite(loss0):
        return None
    best = float(np.min(m))
    if loss0 - best <= 0:
        return None
    return (m - best) / (loss0 - best)


def good_lr_run(lrs: Sequence[float], gaps: np.ndarray | None) -> tuple[float, float] | None:
    """(lr_lo, lr_hi) of the contiguous run of good grid points spanning the most decades.

    `lrs` ascending, `gaps` the normalized gaps at those points. The best point always has gap 0,
    so there is a run whenever gaps are defined; None otherwise. Ties keep the lowest-lr run.
    """
    if gaps is None or len(lrs) == 0:
        return None
    good = np.asarray(gaps) <= GOOD_GAP + _GAP_TOL
    best_run: tuple[float, float] | None = None
    best_span = -1.0
    start: int | None = None
    for i, ok in enumerate([*good.tolist(), False]):
        if ok and start is None:
            start = i
        elif not ok and start is not None:
            span = math.log10(lrs[i - 1] / lrs[start])
            if span > best_span + 1e-12:
                best_span, best_run = span, (float(lrs[start]), float(lrs[i - 1]))
            start = None
    return best_run


def seed_spread(p25: np.ndarray, p75: np.ndarray) -> float | None:
    """Median over the lr grid of the interquartile range across seeds; None for an empty grid."""
    iqr = np.asarray(p75, dtype=float) - np.asarray(p25, dtype=float)
    iqr = iqr[~np.isnan(iqr)]
    return float(np.median(iqr)) if iqr.size else None


def paired_deltas(deltas: np.ndarray) -> tuple[int, float | None, float | None]:
    """(pairs, win_rate, median_delta) of paired differences Δ = L_candidate - L_baseline."""
    d = np.asarray(deltas, dtype=float)
    if d.size == 0:
        return 0, None, None
    return int(d.size), float(np.mean(d < 0)), float(np.median(d))


def wilcoxon_p(deltas: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired differences; never raises.

    Fewer than 2 pairs: None (no test possible). Every difference exactly 0: 1.0 (the two optimizers
    gave identical results, no evidence of a difference). Any scipy failure or NaN: None.
    """
    d = np.asarray(deltas, dtype=float)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return None
    if np.all(d == 0):
        return 1.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = float(sps.wilcoxon(d, alternative="two-sided").pvalue)
    except (ValueError, FloatingPointError):
        return None
    return p if math.isfinite(p) else None


def bootstrap_indices(n_seeds: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """(n_bootstrap, n_seeds) seed columns drawn with replacement; the same for the same inputs."""
    return np.random.default_rng(seed).integers(0, n_seeds, size=(n_bootstrap, n_seeds))


def bootstrap_lr_sensitivity(matrix: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """lr_sensitivity of every resample: `matrix` is (n_lr, n_seeds), `idx` from bootstrap_indices.

    Returns (n_bootstrap,); NaN for a resample in which no lr has any seed.
    """
    resampled = matrix[:, idx]  # (n_lr, B, n_seeds)
    medians = nan_quantiles(resampled, [0.5], axis=-1)[0]  # (n_lr, B)
    return lr_sensitivity(medians.T)


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval of the finite bootstrap replicates; None when there are none."""
    reps = np.asarray(replicates, dtype=float)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return None
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_sensitivity_delta(
    pairs_of_matrices: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    n_bootstrap: int,
    seed: int,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of mean_w [lr_sensitivity(cand_w) - lr_sensitivity(base_w)].

    Each element of `pairs_of_matrices` is (candidate, baseline) for one warmup value: capped-loss
    matrices of shape (n_lr, n_seeds) with NaN where a seed is missing, their seed columns aligned.
    Seeds are resampled with replacement, the same draw for both optimizers (paired by seed) and
    every warmup. Deterministic for a given `seed`. None with fewer than 2 seeds or no valid draw.
    """
    if n_bootstrap < 1 or not pairs_of_matrices:
        return None
    n_seeds = pairs_of_matrices[0][0].shape[1]
    if n_seeds < 2:
        return None
    idx = bootstrap_indices(n_seeds, n_bootstrap, seed)
    total = np.zeros(n_bootstrap)
    for cand, base in pairs_of_matrices:
        total += bootstrap_lr_sensitivity(cand, idx) - bootstrap_lr_sensitivity(base, idx)
    return percentile_interval(total / len(pairs_of_matrices), level)


def _log_factorials(n: int) -> np.ndarray:
    """log(i!) for i = 0..n."""
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=float)))])


def budget_ks(n: int, max_points: int = 256) -> list[int]:
    """The k values of a tuning-budget curve: every k up to `max_points`, else log-spaced ones."""
    if n <= max_points:
        return list(range(1, n + 1))
    ks = np.unique(np.round(np.geomspace(1, n, max_points)).astype(int))
    return [int(k) for k in ks]


def expected_best_of_k(values: Sequence[float], ks: Sequence[int] | None = None) -> list[float]:
    """Expected minimum of k values drawn without replacement from `values`, for each k.

    The unbiased estimator of Tang et al. 2020 for Dodge et al.'s expected validation performance:
    with v_(1) <= ... <= v_(N), E[min of k] = Σ_i v_(i) C(N-i, k-1) / C(N, k), the probability that
    the i-th smallest value is the smallest of the k drawn. Binomials via log-factorials, so no
    overflow.
    """
    v = np.sort(np.asarray(values, dtype=float))
    n = v.size
    if n == 0:
        return []
    ks_arr = np.asarray(list(range(1, n + 1)) if ks is None else ks, dtype=int)
    if ks_arr.size and (ks_arr.min() < 1 or ks_arr.max() > n):
        raise ValueError(f"ks must lie in [1, {n}], got {ks_arr.min()}..{ks_arr.max()}")
    lf = _log_factorials(n)
    i = np.arange(1, n + 1)[None, :]  # (1, N)
    k = ks_arr[:, None]  # (K, 1)
    top = n - i  # choose k-1 of the N-i values above v_(i)
    feasible = top >= k - 1
    top_c = np.where(feasible, top, 0)
    rest = np.where(feasible, top - (k - 1), 0)
    log_w = (lf[top_c] - lf[k - 1] - lf[rest]) - (lf[n] - lf[k] - lf[n - k])
    w = np.where(feasible, np.exp(log_w), 0.0)
    return [float(x) for x in w @ v]

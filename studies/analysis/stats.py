"""Numeric building blocks of the robustness report: pure, vectorized, NaN-aware numpy functions."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

__all__ = [
    "ALPHA",
    "EXACT_MAX_SEEDS",
    "GOOD_GAP",
    "N_BOOTSTRAP",
    "N_RANDOM_FLIPS",
    "bootstrap_mean_interval",
    "budget_ks",
    "expected_best_of_k",
    "holm",
    "interval_around",
    "lr_sensitivity",
    "min_possible_p",
    "nan_quantiles",
    "seeds_needed",
    "sign_flip_p",
    "t_interval",
]

#: A grid point is "good" when its normalized gap (L - L*) / (loss0 - L*) is at most this.
GOOD_GAP = 0.1
#: The significance level the report's "underpowered" refers to.
ALPHA = 0.05
#: Up to this many seeds the sign-flip test enumerates all 2^n sign vectors exactly.
EXACT_MAX_SEEDS = 16
#: Random sign vectors of the sign-flip test above EXACT_MAX_SEEDS seeds.
N_RANDOM_FLIPS = 100_000
#: Resamples of the percentile bootstrap over seeds.
N_BOOTSTRAP = 10_000
# Relative float allowance: |mean of a flip| counts as "as extreme" within this of the observed.
_TIE_TOL = 1e-12


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


def _sign_matrix(n: int) -> np.ndarray:
    """All 2^n sign vectors as rows of a (2^n, n) matrix of ±1 (row 0 is the identity)."""
    codes = np.arange(2**n, dtype=np.int64)[:, None]
    bits = (codes >> np.arange(n, dtype=np.int64)[None, :]) & 1
    return 1.0 - 2.0 * bits


_SIGNS: dict[int, np.ndarray] = {}


def sign_flip_p(deltas: Sequence[float] | np.ndarray, *, seed: int = 0) -> float | None:
    """Two-sided paired sign-flip permutation p-value of the mean of `deltas`.

    Under the null hypothesis each paired difference is as likely to have either sign, so every
    sign vector ε gives an equally likely mean(ε·d). p is the share of them at least as extreme
    as the observed |mean(d)|: all 2^n vectors (the identity included) when n <= 16; otherwise
    100,000 random vectors from `default_rng(seed)` with p = (1 + hits) / (1 + 100,000). With n
    differences the smallest possible p is 2 / 2^n. None for no differences; 1 when all are 0.
    """
    d = np.asarray(deltas, dtype=float)
    if d.ndim != 1:
        raise ValueError(f"deltas must be one-dimensional, got shape {d.shape}")
    if d.size == 0 or not np.all(np.isfinite(d)):
        return None
    if np.all(d == 0):
        return 1.0
    n = d.size
    observed = abs(float(d.mean()))
    threshold = observed - _TIE_TOL * max(1.0, observed)
    if n <= EXACT_MAX_SEEDS:
        signs = _SIGNS.get(n)
        if signs is None:
            signs = _SIGNS.setdefault(n, _sign_matrix(n))
        means = np.abs(signs @ d) / n
        return float(np.count_nonzero(means >= threshold)) / signs.shape[0]
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, N_RANDOM_FLIPS, 10_000):  # chunks keep memory at 10,000 × n
        size = min(10_000, N_RANDOM_FLIPS - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(size, n))
        hits += int(np.count_nonzero(np.abs(signs @ d) / n >= threshold))
    return (1.0 + hits) / (1.0 + N_RANDOM_FLIPS)


def min_possible_p(n: int) -> float:
    """The smallest p the exact two-sided sign-flip test can give with n seeds: 2 / 2^n."""
    return 1.0 if n <= 0 else min(1.0, 2.0 / 2.0**n)


def seeds_needed(alpha: float = ALPHA) -> int:
    """The fewest seeds for which the exact sign-flip test can reach p <= alpha (6 at 0.05)."""
    n = 1
    while min_possible_p(n) > alpha:
        n += 1
    return n


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error), in the order given.

    Sorted ascending, p̃_(i) = max over j <= i of min(1, (m - j + 1) · p_(j)).
    """
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.maximum.accumulate(scaled)
    out = np.empty(m)
    out[order] = adjusted
    return [float(x) for x in out]


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval of the mean: mean ± t_{(1+level)/2, n-1} · sd / √n; None when n < 2."""
    v = np.asarray(values, dtype=float)
    n = v.size
    if n < 2:
        return None
    mean = float(v.mean())
    half = float(sps.t.ppf((1.0 + level) / 2.0, n - 1)) * float(v.std(ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def bootstrap_mean_interval(
    values: Sequence[float], *, n_resamples: int = N_BOOTSTRAP, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean over seeds (resampled with replacement).

    Indices come from `default_rng(seed).integers(0, n, (n_resamples, n))`, so the interval is
    reproducible. None with no values or no resamples.
    """
    v = np.asarray(values, dtype=float)
    n = v.size
    if n == 0 or n_resamples < 1:
        return None
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    means = v[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def interval_around(
    x: Sequence[float], h: Sequence[float], center: int
) -> tuple[float, float, bool, bool] | None:
    """The interval around x[center] on which h <= 0, with its edges interpolated linearly.

    `x` ascending (log10 lr), `h` the signed distance to the threshold at each point (inside where
    h <= 0), `center` an index with h[center] <= 0. Walking right, the first point with h > 0
    places the edge where the straight line between it and its left neighbour crosses 0; with no
    such point the edge is the last point and the interval is open there. The same to the left.
    Returns (low, high, open_low, open_high), or None when h[center] > 0.
    """
    xs = np.asarray(x, dtype=float)
    hs = np.asarray(h, dtype=float)
    if not 0 <= center < xs.size or not hs[center] <= 0:
        return None

    def edge(step: int) -> tuple[float, bool]:
        i = center
        while 0 <= i + step < xs.size:
            j = i + step
            if hs[j] > 0:
                frac = (0.0 - hs[i]) / (hs[j] - hs[i])  # h[i] <= 0 < h[j]: frac in [0, 1)
                return float(xs[i] + frac * (xs[j] - xs[i])), False
            i = j
        return float(xs[i]), True

    high, open_high = edge(+1)
    low, open_low = edge(-1)
    return low, high, open_low, open_high


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

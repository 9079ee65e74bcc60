"""The report's statistical building blocks against brute force, scipy and hand-worked cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from studies.analysis.stats import (
    N_RANDOM_FLIPS,
    bootstrap_mean_interval,
    budget_ks,
    expected_best_of_k,
    holm,
    interval_around,
    lr_sensitivity,
    min_possible_p,
    nan_quantiles,
    seeds_needed,
    sign_flip_p,
    t_interval,
)


def brute_force_expected_min(values, k):
    """Mean of min over every k-subset (positions, so ties count separately)."""
    subsets = list(itertools.combinations(values, k))
    return sum(min(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("values", [[3.0], [0.5, 0.5, 0.2], [1.0, 0.3, 0.7, 0.3, 2.0, 0.9, 1.1]])
def test_expected_best_of_k_equals_enumeration_of_all_subsets(values):
    expected = [brute_force_expected_min(values, k) for k in range(1, len(values) + 1)]
    assert expected_best_of_k(values) == pytest.approx(expected, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 10.0), min_size=1, max_size=8))
def test_expected_best_of_k_random_grids(values):
    n = len(values)
    got = expected_best_of_k(values)
    assert got == pytest.approx([brute_force_expected_min(values, k) for k in range(1, n + 1)])
    assert got[0] == pytest.approx(np.mean(values)) and got[-1] == pytest.approx(min(values))


def test_expected_best_of_k_large_grid_has_no_overflow_and_is_monotone():
    values = np.random.default_rng(0).uniform(0, 1, 3000)
    ks = budget_ks(3000)
    got = expected_best_of_k(values, ks)
    assert len(ks) <= 256 and ks[0] == 1 and ks[-1] == 3000
    assert all(math.isfinite(x) for x in got)
    assert np.all(np.diff(got) <= 1e-12) and got[-1] == pytest.approx(values.min())
    with pytest.raises(ValueError, match="ks"):
        expected_best_of_k([1.0, 2.0], [3])
    assert expected_best_of_k([]) == []


def test_budget_ks_small_grid_is_every_k():
    assert budget_ks(5) == [1, 2, 3, 4, 5]


def test_nan_quantiles_match_numpy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(7, 9, 5))
    a[rng.random(a.shape) < 0.3] = np.nan
    a[0, 0, :] = np.nan
    got = nan_quantiles(a, [0.25, 0.5, 0.75], axis=-1)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        ref = np.nanpercentile(a, [25, 50, 75], axis=-1)
    np.testing.assert_allclose(got, ref, equal_nan=True)
    with pytest.raises(ValueError, match="qs"):
        nan_quantiles(a, [1.5])


def test_lr_sensitivity_over_leading_axes_skips_nan():
    m = np.array([[1.0, 0.5, 2.0], [np.nan, 0.2, 0.4], [np.nan, np.nan, np.nan]])
    got = lr_sensitivity(m)
    np.testing.assert_allclose(got, [(0.5 + 0 + 1.5) / 3, 0.1, np.nan], equal_nan=True)


def brute_force_sign_flip(d):
    """Share of all 2^n sign vectors whose |mean| is at least the observed one (exact)."""
    observed = abs(sum(d) / len(d))
    hits = total = 0
    for signs in itertools.product((-1.0, 1.0), repeat=len(d)):
        total += 1
        hits += abs(sum(s * x for s, x in zip(signs, d, strict=True)) / len(d)) >= observed - 1e-12
    return hits / total


def test_sign_flip_hand_worked_case():
    # d = 1, 2, 3: the eight sums are ±6, ±4, ±2, 0, 0; only ±6 reach |6|: p = 2/8.
    assert sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(0.25)
    # d = 1, -1: sums 0, 0, 2, -2 and observed mean 0: every vector is as extreme.
    assert sign_flip_p([1.0, -1.0]) == 1.0
    assert sign_flip_p([0.0, 0.0]) == 1.0
    assert sign_flip_p([]) is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-3.0, 3.0, allow_subnormal=False), min_size=1, max_size=10))
def test_sign_flip_equals_brute_force_enumeration(d):
    if all(x == 0 for x in d):
        assert sign_flip_p(d) == 1.0
    else:
        assert sign_flip_p(d) == pytest.approx(brute_force_sign_flip(d), abs=1e-12)


def test_sign_flip_ties_in_magnitude_count_as_extreme():
    # Equal magnitudes: every vector with the same number of minus signs ties; p = 2 * C(4,0)/16.
    assert sign_flip_p([0.1, 0.1, 0.1, 0.1]) == pytest.approx(2 / 16)
    assert sign_flip_p([0.1] * 6) == pytest.approx(min_possible_p(6))


def test_sign_flip_above_sixteen_seeds_is_monte_carlo_and_reproducible():
    d = np.random.default_rng(3).normal(0.3, 1.0, 20)
    p1, p2 = sign_flip_p(d, seed=0), sign_flip_p(d, seed=0)
    assert p1 == p2 and p1 != sign_flip_p(d, seed=1)
    assert p1 >= 1 / (1 + N_RANDOM_FLIPS)
    # The exact p of a 20-value vector, by enumerating the 2^20 flips in blocks here.
    signs = 1.0 - 2.0 * ((np.arange(2**20)[:, None] >> np.arange(20)) & 1)
    exact = np.mean(np.abs(signs @ d) / 20 >= abs(d.mean()) - 1e-12)
    assert abs(p1 - exact) < 4 * math.sqrt(exact * (1 - exact) / N_RANDOM_FLIPS) + 1e-4


def test_min_possible_p_and_seeds_needed():
    assert [min_possible_p(n) for n in (0, 1, 2, 5, 6)] == [1.0, 1.0, 0.5, 0.0625, 0.03125]
    assert seeds_needed(0.05) == 6 and seeds_needed(0.01) == 8


def test_holm_by_hand():
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; running max
    # 0.02, 0.03, 0.06, 0.06; back in the given order:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_t_interval_against_scipy_and_by_hand():
    v = [0.1, -0.2, 0.05, 0.3, -0.1]
    lo, hi = t_interval(v)
    ref = sps.t.interval(0.95, 4, loc=np.mean(v), scale=sps.sem(v))
    assert (lo, hi) == pytest.approx(ref)
    mean, sd = sum(v) / 5, math.sqrt(sum((x - sum(v) / 5) ** 2 for x in v) / 4)
    assert hi - lo == pytest.approx(2 * 2.7764451052 * sd / math.sqrt(5))
    assert lo < mean < hi
    assert t_interval([1.0]) is None


def test_bootstrap_interval_recipe_and_determinism():
    v = np.array([0.1, -0.2, 0.05, 0.3, -0.1, 0.0])
    idx = np.random.default_rng(7).integers(0, 6, size=(10_000, 6))
    means = sorted(v[row].mean() for row in idx)  # one replicate at a time
    lo, hi = bootstrap_mean_interval(v, seed=7)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert bootstrap_mean_interval(v, seed=7) == (lo, hi)
    assert bootstrap_mean_interval([], seed=7) is None


def test_interval_around_interpolates_and_marks_open_ends():
    x = [-4.0, -3.0, -2.0, -1.0, 0.0]
    # h crosses 0 halfway between -3 and -2 (from 0.5 to -0.5) and a quarter of the way from
    # -1 to 0 (from -0.1 to 0.3).
    assert interval_around(x, [1.0, 0.5, -0.5, -0.1, 0.3], 2) == pytest.approx(
        (-2.5, -0.75, False, False)
    )
    assert interval_around(x, [-1.0, -1.0, -0.5, -1.0, -1.0], 2) == (-4.0, 0.0, True, True)
    assert interval_around(x, [1.0, 1.0, 0.0, 1.0, 1.0], 2) == (-2.0, -2.0, False, False)
    assert interval_around(x, [0.0, 0.0, 0.1, 0.0, 0.0], 2) is None  # centre outside

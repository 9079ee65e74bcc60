"""The numeric building blocks of the report against slow, obviously-correct references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from studies.analysis.stats import (
    bootstrap_sensitivity_delta,
    budget_ks,
    expected_best_of_k,
    good_lr_run,
    lr_sensitivity,
    lr_sensitivity_norm,
    nan_quantiles,
    normalized_gaps,
    paired_deltas,
    seed_spread,
    wilcoxon_p,
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


def test_lr_sensitivity_norm_guards():
    assert lr_sensitivity_norm(0.3, 2.0, 0.5) == pytest.approx(0.2)
    assert lr_sensitivity_norm(0.3, 0.5, 0.5) is None  # no progress anywhere
    assert lr_sensitivity_norm(0.3, 0.4, 0.5) is None
    assert lr_sensitivity_norm(0.3, None, 0.5) is None
    assert lr_sensitivity_norm(5.0, 2.0, 0.5) == 1.0  # clipped


def test_good_lr_run_picks_the_widest_contiguous_run():
    lrs = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    assert good_lr_run(lrs, np.array([0.05, 0.5, 0.0, 0.1, 0.1])) == (1e-2, 1.0)
    assert good_lr_run(lrs, np.array([0.0, 0.05, 0.5, 0.05, 0.0])) == (1e-4, 1e-3)  # tie: lowest
    assert good_lr_run(lrs, np.array([0.2, 0.2, 0.0, 0.2, 0.2])) == (1e-2, 1e-2)
    assert good_lr_run(lrs, None) is None


def test_normalized_gaps():
    np.testing.assert_allclose(normalized_gaps(np.array([1.2, 0.5, 2.0]), 2.0), [0.7 / 1.5, 0, 1])
    assert normalized_gaps(np.array([2.0, 2.0]), 2.0) is None
    assert normalized_gaps(np.array([]), 2.0) is None


def test_seed_spread_and_paired_deltas():
    assert seed_spread(np.array([1.0, 0.5, 1.5]), np.array([1.2, 0.6, 2.0])) == pytest.approx(0.2)
    assert seed_spread(np.array([]), np.array([])) is None
    assert paired_deltas(np.array([])) == (0, None, None)
    assert paired_deltas(np.array([-1.0, 0.0, 2.0, -3.0])) == (4, 0.5, -0.5)


def test_wilcoxon_p_edge_cases_never_raise():
    d = np.array([-0.4, -0.58, -0.76, 0.1, 0.1, -0.1, -1.36, -1.3])
    assert wilcoxon_p(d) == pytest.approx(sps.wilcoxon(d).pvalue)
    assert wilcoxon_p(np.array([])) is None
    assert wilcoxon_p(np.array([0.3])) is None
    assert wilcoxon_p(np.zeros(5)) == 1.0
    assert wilcoxon_p(np.array([0.0, 0.0, 0.2])) == pytest.approx(
        sps.wilcoxon([0.0, 0.0, 0.2]).pvalue
    )
    assert wilcoxon_p(np.array([np.nan, 1.0])) is None  # one finite pair left


def reference_bootstrap(pairs, n_bootstrap, seed):
    """The same resampling as bootstrap_sensitivity_delta, one replicate at a time with numpy."""
    n = pairs[0][0].shape[1]
    idx = np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))
    reps = []
    for row in idx:
        diffs = []
        for cand, base in pairs:
            sens = []
            for m in (cand, base):
                with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
                    __import__("warnings").simplefilter("ignore")
                    med = np.nanmedian(m[:, row], axis=1)
                    med = med[~np.isnan(med)]
                sens.append(np.mean(med - med.min()) if med.size else np.nan)
            diffs.append(sens[0] - sens[1])
        reps.append(np.mean(diffs))
    reps = np.array(reps)
    reps = reps[np.isfinite(reps)]
    return tuple(np.quantile(reps, [0.025, 0.975]))


def test_bootstrap_matches_a_replicate_by_replicate_reference():
    rng = np.random.default_rng(3)
    cand, base = rng.uniform(0, 2, (5, 6)), rng.uniform(0, 2, (5, 6))
    cand[1, 2] = np.nan  # a missing seed
    base[:, 5] = np.nan  # a seed the baseline never ran
    pairs = [(cand, base), (rng.uniform(0, 2, (3, 6)), rng.uniform(0, 2, (4, 6)))]
    got = bootstrap_sensitivity_delta(pairs, n_bootstrap=200, seed=7)
    assert got == pytest.approx(reference_bootstrap(pairs, 200, 7))


def test_bootstrap_degenerate_inputs():
    one_seed = [(np.ones((3, 1)), np.ones((3, 1)))]
    assert bootstrap_sensitivity_delta(one_seed, n_bootstrap=100, seed=0) is None
    assert bootstrap_sensitivity_delta([], n_bootstrap=100, seed=0) is None
    two = [(np.ones((3, 2)), np.ones((3, 2)))]
    assert bootstrap_sensitivity_delta(two, n_bootstrap=0, seed=0) is None
    assert bootstrap_sensitivity_delta(two, n_bootstrap=10, seed=0) == (0.0, 0.0)

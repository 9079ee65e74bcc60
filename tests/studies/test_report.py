"""Every report metric on hand-made trial records whose answers were worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from studies.analysis.models import Report
from studies.records import TrialRecord
from studies.report import build_report


def rec(opt, lr, seed, loss, *, beta3=None, warmup=0, state="completed", loss0=2.0):
    """One trial record; beta3 defaults to 0.999 for the bounded optimizers."""
    if beta3 is None and opt in ("adamod", "diffmod"):
        beta3 = 0.999
    return TrialRecord(opt, lr, beta3, warmup, seed, state, loss, loss0)


# Adam: lr 1e-1 has one diverged seed and one seed that ended above loss0 (capped to 2.0).
ADAM = [
    rec("adam", 1e-3, 0, 1.0), rec("adam", 1e-3, 1, 1.2), rec("adam", 1e-3, 2, 1.4),
    rec("adam", 1e-2, 0, 0.5), rec("adam", 1e-2, 1, 0.5), rec("adam", 1e-2, 2, 0.7),
    rec("adam", 1e-1, 0, None, state="diverged"), rec("adam", 1e-1, 1, 2.5),
    rec("adam", 1e-1, 2, 1.0),
]  # fmt: skip
# AdaMod: seed 2 is missing at lr 1e-1; all three seeds tie at lr 1e-2.
ADAMOD = [
    rec("adamod", 1e-3, 0, 0.6), rec("adamod", 1e-3, 1, 0.62), rec("adamod", 1e-3, 2, 0.64),
    rec("adamod", 1e-2, 0, 0.6), rec("adamod", 1e-2, 1, 0.6), rec("adamod", 1e-2, 2, 0.6),
    rec("adamod", 1e-1, 0, 0.64), rec("adamod", 1e-1, 1, 0.70),
]  # fmt: skip


def config(report: Report, opt: str, warmup: int = 0):
    """The ConfigReport of `opt` at `warmup` (β3 as in rec())."""
    (c,) = [c for c in report.configs if c.optimizer == opt and c.warmup_steps == warmup]
    return c


def test_adam_curve_and_metrics_by_hand():
    c = config(build_report(ADAM), "adam")
    assert [p.lr for p in c.curve] == [1e-3, 1e-2, 1e-1]
    assert [p.median for p in c.curve] == pytest.approx([1.2, 0.5, 2.0])
    assert [p.p25 for p in c.curve] == pytest.approx([1.1, 0.5, 1.5])
    assert [p.p75 for p in c.curve] == pytest.approx([1.3, 0.6, 2.0])
    assert [p.n_seeds for p in c.curve] == [3, 3, 3]
    assert [p.n_diverged for p in c.curve] == [0, 0, 1]
    assert (c.best_loss, c.best_lr) == (pytest.approx(0.5), 1e-2)
    assert c.loss0 == 2.0
    assert c.lr_sensitivity == pytest.approx((0.7 + 0.0 + 1.5) / 3)
    assert c.lr_sensitivity_norm == pytest.approx((2.2 / 3) / 1.5)
    assert c.good_lr_decades == 0.0  # only lr 1e-2 is within 10% of the gap
    assert c.good_lr_range == (1e-2, 1e-2)
    assert c.divergence_rate == pytest.approx(1 / 9)
    assert c.seed_spread == pytest.approx(0.2)  # median of IQRs 0.2, 0.1, 0.5
    assert (c.n_trials, c.n_diverged) == (9, 1)


def test_adamod_ties_and_missing_seed_by_hand():
    c = config(build_report(ADAMOD), "adamod")
    assert c.beta3 == 0.999
    assert [p.median for p in c.curve] == pytest.approx([0.62, 0.6, 0.67])
    assert [p.n_seeds for p in c.curve] == [3, 3, 2]
    assert (c.curve[2].p25, c.curve[2].p75) == (pytest.approx(0.655), pytest.approx(0.685))
    assert c.lr_sensitivity == pytest.approx(0.03)
    assert c.lr_sensitivity_norm == pytest.approx(0.03 / 1.4)
    assert c.good_lr_decades == pytest.approx(2.0)  # every point within 10%: 1e-3 .. 1e-1
    assert c.seed_spread == pytest.approx(0.02)  # median of IQRs 0.02, 0.0, 0.03
    assert c.divergence_rate == 0.0


def test_comparison_with_adam_by_hand():
    report = build_report(ADAM + ADAMOD, n_bootstrap=200)
    (cmp,) = report.comparisons
    assert (cmp.optimizer, cmp.beta3, cmp.baseline) == ("adamod", 0.999, "adam")
    deltas = [-0.4, -0.58, -0.76, 0.1, 0.1, -0.1, -1.36, -1.3]  # AdaMod − Adam, 8 matched pairs
    assert cmp.pairs == 8
    assert cmp.win_rate == pytest.approx(6 / 8)
    assert cmp.median_delta == pytest.approx(-0.49)
    assert cmp.wilcoxon_p == pytest.approx(sps.wilcoxon(deltas).pvalue)
    assert cmp.lr_sensitivity_delta == pytest.approx(0.03 - 2.2 / 3)
    ci = cmp.lr_sensitivity_delta_ci
    assert ci is not None and ci.low <= ci.high and ci.level == 0.95
    assert [w.warmup_steps for w in cmp.by_warmup] == [0]
    assert "AdaMod β3=0.999 vs Adam" in cmp.summary and "2 decades" in cmp.summary


def test_single_lr_point():
    c = config(build_report([rec("adam", 1e-3, 0, 1.0), rec("adam", 1e-3, 1, 1.5)]), "adam")
    assert c.lr_sensitivity == 0.0
    assert c.lr_sensitivity_norm == 0.0
    assert c.good_lr_decades == 0.0
    assert c.seed_spread == pytest.approx(0.25)


def test_all_diverged_gives_undefined_normalized_metrics():
    records = [rec("adam", lr, s, None, state="diverged") for lr in (1e-2, 1e-1) for s in (0, 1)]
    report = build_report(records)
    c = config(report, "adam")
    assert c.best_loss == 2.0 and c.lr_sensitivity == 0.0
    assert c.lr_sensitivity_norm is None and c.good_lr_decades is None
    assert c.divergence_rate == 1.0
    assert "no lr made progress" in " ".join(report.headline)


def test_missing_loss0_leaves_normalized_metrics_undefined():
    c = config(build_report([rec("sgd", 1e-2, 0, 1.0, loss0=None)]), "sgd")
    assert c.loss0 is None and c.lr_sensitivity_norm is None and c.good_lr_decades is None


def test_other_states_and_bad_values_are_ignored():
    records = [
        *ADAM,
        rec("adam", 1e-2, 3, 0.1, state="running"),
        rec("adam", 1e-2, 4, 0.1, state="failed"),
        rec("adam", 1e-2, 5, None, state="queued"),
        rec("adam", 0.0, 6, 0.1),  # non-positive lr cannot sit on a log axis
        rec("adam", 1e-2, 7, float("nan"), loss0=None),  # no finite capped loss
    ]
    report = build_report(records)
    assert (report.n_records, report.n_used) == (len(records), len(ADAM))
    assert config(report, "adam") == config(build_report(ADAM), "adam")


def test_empty_and_single_optimizer_reports_are_partial_not_errors():
    empty = build_report([], complete=False)
    assert empty.complete is False and empty.configs == [] and empty.comparisons == []
    assert empty.budget == [] and empty.surfaces == [] and empty.warmup == []
    assert empty.headline[0].startswith("Partial report")
    only = build_report(ADAMOD)
    assert only.complete is True and only.optimizers == ["adamod"]
    assert only.comparisons == [] and len(only.surfaces) == 1 and len(only.budget) == 1
    assert not any(line.startswith("Partial") for line in only.headline)


def test_surface_grid_with_a_missing_cell_and_best_cell():
    records = [
        rec("adamod", 1e-3, 0, 0.9, beta3=0.99), rec("adamod", 1e-2, 0, 0.4, beta3=0.99),
        rec("adamod", 1e-3, 0, 0.5, beta3=0.9999),
    ]  # fmt: skip
    (s,) = build_report(records).surfaces
    assert (s.optimizer, s.warmup_steps, s.lrs, s.beta3s) == (
        "adamod",
        0,
        [1e-3, 1e-2],
        [0.99, 0.9999],
    )
    assert s.median_loss == [[0.9, 0.4], [0.5, None]]
    assert (s.best_lr, s.best_beta3, s.best_loss) == (1e-2, 0.99, 0.4)


def test_warmup_comparison_only_when_both_present():
    no_warmup = [rec("adam", 1e-3, 0, 1.0), rec("adam", 1e-2, 0, 0.5)]
    assert build_report(no_warmup).warmup == []
    both = [
        *no_warmup,
        rec("adam", 1e-3, 0, 0.6, warmup=100),
        rec("adam", 1e-2, 0, 0.5, warmup=100),
    ]
    (w,) = build_report(both).warmup
    assert (w.optimizer, w.beta3) == ("adam", None)
    assert [e.warmup_steps for e in w.entries] == [0, 100]
    assert [e.lr_sensitivity for e in w.entries] == pytest.approx([0.25, 0.05])


def test_comparison_pairs_only_matching_lr_warmup_seed():
    records = [
        rec("adam", 1e-3, 0, 1.0), rec("adam", 1e-3, 1, 1.0, warmup=10),
        rec("adamod", 1e-3, 0, 0.5), rec("adamod", 1e-3, 1, 0.5),  # seed 1 at warmup 0: no match
        rec("adamod", 1e-2, 0, 0.5),  # lr with no Adam counterpart
    ]  # fmt: skip
    (cmp,) = build_report(records).comparisons
    assert (cmp.pairs, cmp.win_rate, cmp.median_delta) == (1, 1.0, pytest.approx(-0.5))
    assert cmp.wilcoxon_p is None  # fewer than 2 pairs
    assert cmp.lr_sensitivity_delta_ci is None  # only seed 0 was run by both: no seed to resample


def test_identical_optimizers_give_p_one_and_zero_delta():
    twin = [rec("adamw", r.lr, r.seed, r.loss, state=r.state) for r in ADAM]
    (cmp,) = build_report(ADAM + twin).comparisons
    assert cmp.optimizer == "adamw" and cmp.beta3 is None
    assert cmp.wilcoxon_p == 1.0 and cmp.median_delta == 0.0 and cmp.win_rate == 0.0
    assert cmp.lr_sensitivity_delta == 0.0
    assert cmp.lr_sensitivity_delta_ci is not None
    assert (cmp.lr_sensitivity_delta_ci.low, cmp.lr_sensitivity_delta_ci.high) == (0.0, 0.0)


def test_bootstrap_is_deterministic_and_depends_on_seed():
    rng = np.random.default_rng(0)
    records = [
        rec(opt, lr, s, float(rng.uniform(0.2, 1.9)))
        for opt in ("adam", "adamod") for lr in (1e-3, 1e-2, 1e-1) for s in range(8)
    ]  # fmt: skip
    a = build_report(records, seed=1, n_bootstrap=300).comparisons[0]
    b = build_report(records, seed=1, n_bootstrap=300).comparisons[0]
    c = build_report(records, seed=2, n_bootstrap=300).comparisons[0]
    assert a.lr_sensitivity_delta_ci == b.lr_sensitivity_delta_ci
    assert a.lr_sensitivity_delta_ci != c.lr_sensitivity_delta_ci
    assert build_report(ADAM + ADAMOD, n_bootstrap=0).comparisons[0].lr_sensitivity_delta_ci is None


def test_budget_curve_of_an_optimizer():
    (b,) = build_report(ADAM).budget
    assert b.optimizer == "adam" and b.n_configurations == 3 and b.k == [1, 2, 3]
    # medians 1.2, 0.5, 2.0: E[min of 1] = mean; of 2 = (0.5 + 0.5 + 1.2) / 3; of 3 = 0.5
    assert b.expected_best == pytest.approx([3.7 / 3, 2.2 / 3, 0.5])


def test_json_round_trip_is_exact():
    report = build_report(ADAM + ADAMOD + [rec("adam", 1e-3, 0, 0.9, warmup=50)], n_bootstrap=50)
    body = json.loads(json.dumps(report.model_dump(mode="json")))
    assert Report.model_validate(body) == report
    assert body["complete"] is True and isinstance(body["configs"][0]["curve"], list)
    assert all(
        v is None or math.isfinite(v) for c in body["configs"] for v in (c["lr_sensitivity_norm"],)
    )


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_bootstrap": -1}, "n_bootstrap"),
        ({"n_bootstrap": 1.5}, "n_bootstrap"),
        ({"n_bootstrap": 10**6}, "n_bootstrap"),
        ({"seed": -3}, "seed"),
        ({"complete": "yes"}, "complete"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        build_report(ADAM, **kwargs)


def test_bad_records_name_the_argument():
    with pytest.raises(ValueError, match="records"):
        build_report("adam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"records\[1\]"):
        build_report([ADAM[0], object()])


def test_report_interval_is_the_seed_bootstrap_of_the_hand_matrices():
    from studies.analysis.stats import bootstrap_sensitivity_delta

    adam = np.array([[1.0, 1.2, 1.4], [0.5, 0.5, 0.7], [2.0, 2.0, 1.0]])  # lr × seed, capped
    adamod = np.array([[0.6, 0.62, 0.64], [0.6, 0.6, 0.6], [0.64, 0.70, np.nan]])
    expected = bootstrap_sensitivity_delta([(adamod, adam)], n_bootstrap=500, seed=5)
    ci = build_report(ADAM + ADAMOD, n_bootstrap=500, seed=5).comparisons[0].lr_sensitivity_delta_ci
    assert ci is not None and (ci.low, ci.high) == pytest.approx(expected)


_loss = st.one_of(st.none(), st.floats(0.0, 5.0), st.sampled_from([math.nan, math.inf]))
_record = st.builds(
    TrialRecord,
    optimizer=st.sampled_from(["adam", "adamw", "adamod", "diffmod", "sgd"]),
    lr=st.sampled_from([1e-4, 1e-3, 1e-2, 1e-1, 0.0]),
    beta3=st.sampled_from([None, 0.9, 0.999]),
    warmup_steps=st.sampled_from([0, 100]),
    seed=st.integers(0, 3),
    state=st.sampled_from(["completed", "diverged", "running", "failed"]),
    loss=_loss,
    loss0=st.one_of(st.none(), st.floats(0.5, 5.0)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_record, max_size=40), st.booleans())
def test_any_partial_data_gives_a_report_that_round_trips(records, complete):
    report = build_report(records, complete=complete, n_bootstrap=20)
    assert report.complete is complete and report.n_records == len(records)
    body = json.loads(json.dumps(report.model_dump(mode="json"), allow_nan=False))
    assert Report.model_validate(body) == report
    for c in report.configs:
        assert c.best_loss == min(p.median for p in c.curve)
        assert c.lr_sensitivity >= 0 and 0 <= c.divergence_rate <= 1
        assert c.lr_sensitivity_norm is None or 0 <= c.lr_sensitivity_norm <= 1
        assert all(p.p25 <= p.median <= p.p75 for p in c.curve)
    for cmp in report.comparisons:
        assert cmp.wilcoxon_p is None or 0 <= cmp.wilcoxon_p <= 1

"""Report v2 on hand-made trial records whose answers were worked out by hand (docs/REPORT.md).

The randomized comparison against an independent re-implementation is test_report_v2.py; here
every expected number is written out (or computed in plain arithmetic beside the case).
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from studies.analysis.models import Report
from studies.records import TrialRecord
from studies.report import build_report


def rec(opt, lr, seed, loss, *, beta3=None, warmup=0, state="completed", loss0=2.0, **kw):
    """One trial record; beta3 defaults to 0.999 for the bounded optimizers."""
    if beta3 is None and opt in ("adamod", "diffmod"):
        beta3 = 0.999
    return TrialRecord(opt, lr, beta3, warmup, seed, state, loss, loss0, **kw)


# Adam: lr 1e-1 has one diverged seed and one seed that ended above loss0 (capped to 2.0).
ADAM = [
    rec("adam", 1e-3, 0, 1.0), rec("adam", 1e-3, 1, 1.2), rec("adam", 1e-3, 2, 1.4),
    rec("adam", 1e-2, 0, 0.5), rec("adam", 1e-2, 1, 0.5), rec("adam", 1e-2, 2, 0.7),
    rec("adam", 1e-1, 0, None, state="diverged"), rec("adam", 1e-1, 1, 2.5),
    rec("adam", 1e-1, 2, 1.0),
]  # fmt: skip


def config(report: Report, opt: str, warmup: int = 0):
    """The ConfigReport of `opt` at `warmup`."""
    (c,) = [c for c in report.configs if c.optimizer == opt and c.warmup_steps == warmup]
    return c


def test_adam_curve_and_metrics_by_hand():
    c = config(build_report(ADAM), "adam")
    assert [p.lr for p in c.curve] == [1e-3, 1e-2, 1e-1]
    assert [p.median for p in c.curve] == pytest.approx([1.2, 0.5, 2.0])
    assert [p.p25 for p in c.curve] == pytest.approx([1.1, 0.5, 1.5])
    assert [p.p75 for p in c.curve] == pytest.approx([1.3, 0.6, 2.0])
    assert c.curve[2].values == [2.0, 2.0, 1.0]  # seeds 0, 1, 2: diverged and capped at loss0
    assert [p.n_diverged for p in c.curve] == [0, 0, 1]
    # Uncapped: the diverged seed counts as +inf, so the median of (inf, 2.5, 1.0) is 2.5.
    assert [p.uncapped_median for p in c.curve] == pytest.approx([1.2, 0.5, 2.5])
    assert (c.best_loss, c.best_lr, c.loss0) == (pytest.approx(0.5), 1e-2, 2.0)
    assert c.lr_sensitivity == pytest.approx((0.7 + 0.0 + 1.5) / 3)
    assert c.lr_sensitivity_norm == pytest.approx((2.2 / 3) / 1.5)
    # Gaps (L - L*)/(loss0 - L*): 0.7/1.5, 0, 1. Right edge where 0 -> 1 crosses 0.1: 0.1 of
    # the decade; left edge where 0 -> 0.4667 crosses 0.1: 0.1/0.4667 = 0.2143 of the decade.
    left, right = 0.1 / (0.7 / 1.5), 0.1
    assert c.good_lr_decades == pytest.approx(left + right)
    assert c.good_lr_range == pytest.approx((10 ** (-2 - left), 10 ** (-2 + right)))
    assert c.good_lr_open is not None and not c.good_lr_open.low and not c.good_lr_open.high
    assert c.grid_spacing_decades == pytest.approx(1.0)
    assert c.divergence_rate == pytest.approx(1 / 9)
    assert c.seed_spread == pytest.approx(0.2)  # median of IQRs 0.2, 0.1, 0.5
    assert (c.n_trials, c.n_diverged, c.n_failed) == (9, 1, 0)


def test_good_range_open_at_the_grid_end():
    # Medians 0.5, 0.55, 1.7 with loss0 2: gaps 0, 0.0333, 0.8 -> open at the low end; right
    # edge between x=-2 (0.0333) and x=-1 (0.8): -2 + (0.1 - 0.0333)/(0.8 - 0.0333).
    records = [rec("adam", lr, s, v) for lr, v in ((1e-3, 0.5), (1e-2, 0.55), (1e-1, 1.7))
               for s in range(3)]  # fmt: skip
    c = config(build_report(records), "adam")
    g1, g2 = 0.05 / 1.5, 1.2 / 1.5
    assert c.good_lr_decades == pytest.approx(1 + (0.1 - g1) / (g2 - g1))
    assert c.good_lr_open.low and not c.good_lr_open.high


def test_steps_to_target_and_target_lr_decades_by_hand():
    # Every trial's curve is evaluated at steps 10, 20, 30. Target 1.0 (from the spec).
    def curve_rec(lr, seed, losses):
        return rec("adam", lr, seed, losses[-1], curve_steps=(10, 20, 30), curve_losses=losses)

    records = [
        *(curve_rec(1e-3, s, (1.8, 1.5, 1.2)) for s in range(3)),  # never reaches 1.0
        *(curve_rec(1e-2, s, (1.5, 0.9, 0.6)) for s in range(3)),  # reaches at step 20
        curve_rec(1e-1, 0, (0.95, 0.8, 0.7)),  # step 10
        curve_rec(1e-1, 1, (1.2, 1.1, 0.9)),  # step 30
        curve_rec(1e-1, 2, (1.9, 1.8, 1.7)),  # never
    ]
    report = build_report(records, spec={"target_loss": 1.0})
    assert (report.target.loss, report.target.source) == (1.0, "spec")
    c = config(report, "adam")
    assert [p.steps_to_target for p in c.curve] == [None, 20.0, 30.0]
    assert [v.steps_to_target for v in c.curve[2].seed_values] == [10, 30, None]
    # Lowest loss per trial, median per lr: 1.2, 0.6, 0.9 -> minus target: 0.2, -0.4, -0.1.
    # Best lr 1e-2 (L* 0.6). Left edge: -2 - 0.4/0.6 decades; right: open at 1e-1.
    assert c.best_lr == 1e-2
    assert c.target_lr_decades == pytest.approx(1 + 0.4 / 0.6)


def test_target_from_the_reference_ten_percent_band():
    report = build_report(ADAM)
    assert report.target.source == "reference"
    assert report.target.loss == pytest.approx(0.5 + 0.1 * (2.0 - 0.5))
    assert report.target.config == "Adam, warmup 0"


def _pair_records(n_seeds: int) -> list[TrialRecord]:
    """Adam and AdaMod on lrs 1e-3, 1e-2 with loss0 2: Adam's S_s = 1/6, AdaMod's varies."""
    out = []
    for s in range(n_seeds):
        out += [rec("adam", 1e-3, s, 1.0), rec("adam", 1e-2, s, 0.5)]
        out += [rec("adamod", 1e-3, s, 0.6 + 0.01 * s), rec("adamod", 1e-2, s, 0.5)]
    return out


def test_per_seed_robustness_and_exact_test_by_hand():
    report = build_report(_pair_records(6))
    (cmp,) = report.comparisons
    # S_s = mean over the 2 lrs of (L - L*)/(loss0 - L*): Adam 0.5/1.5/2, AdaMod (0.1+0.01s)/3.
    expected = [(0.1 + 0.01 * s) / 3 - 0.5 / 3 for s in range(6)]
    assert [x.seed for x in cmp.per_seed_d] == list(range(6))
    assert [x.d for x in cmp.per_seed_d] == pytest.approx(expected)
    assert cmp.mean_d == pytest.approx(sum(expected) / 6)
    assert cmp.share_better == 1.0
    # All six d_s negative: only the identity and the all-flipped vector are as extreme.
    assert cmp.p == pytest.approx(2 / 64)
    assert cmp.min_possible_p == pytest.approx(2 / 64)
    assert not cmp.underpowered and cmp.seeds_needed is None
    # 95% t-interval by hand: t_{0.975, 5} = 2.570582, sd of 0.01*s/3 over s = 0..5.
    mean = sum(expected) / 6
    sd = math.sqrt(sum((x - mean) ** 2 for x in expected) / 5)
    half = 2.5705818366 * sd / math.sqrt(6)
    assert (cmp.ci_t.low, cmp.ci_t.high) == pytest.approx((mean - half, mean + half))
    assert cmp.ci_bootstrap is not None
    assert min(expected) <= cmp.ci_bootstrap.low <= cmp.ci_bootstrap.high <= max(expected)
    # Per lr: AdaMod wins at 1e-3 on every seed; ties exactly at 1e-2.
    lr3, lr2 = cmp.per_lr
    assert (lr3.wins, lr3.ties, lr3.both_failed, lr3.losses) == (6, 0, 0, 0)
    assert (lr2.wins, lr2.ties, lr2.both_failed, lr2.losses) == (0, 6, 0, 0)
    assert lr2.p == 1.0 and lr2.mean_delta == 0.0
    # Holm over the two per-lr tests: 2/64 * 2 and max(that, 1.0).
    assert lr3.p_holm == pytest.approx(2 * 2 / 64) and lr2.p_holm == 1.0
    assert "sign-flip p = 0.031" in cmp.headline and "6 seeds" in cmp.headline


def test_two_seeds_are_underpowered_with_no_interval():
    report = build_report(_pair_records(2))
    (cmp,) = report.comparisons
    assert cmp.underpowered and cmp.seeds_needed == 6
    assert cmp.min_possible_p == 0.5
    assert cmp.ci_t is None and cmp.ci_bootstrap is None
    assert len(cmp.per_seed_d) == 2
    assert "underpowered: 2 seeds, smallest possible p = 0.5, needs ≥ 6 seeds" in cmp.headline
    assert any("underpowered" in line for line in report.headline)


def test_both_failed_to_learn_is_its_own_kind_of_tie():
    records = _pair_records(6)
    records += [rec("adam", 1e-1, s, None, state="diverged") for s in range(6)]
    records += [rec("adamod", 1e-1, s, 2.5) for s in range(3)]  # above loss0: capped at loss0
    records += [rec("adamod", 1e-1, s, None, state="diverged") for s in range(3, 6)]
    (cmp,) = build_report(records).comparisons
    top = cmp.per_lr[-1]
    assert top.lr == 1e-1 and (top.wins, top.ties, top.both_failed, top.losses) == (0, 0, 6, 0)


def test_missing_cells_are_listed_and_kept_out_of_the_test():
    records = _pair_records(6)
    # AdaMod seed 5 failed at 1e-2 and seed 4 is still queued there: they leave the support.
    records = [
        dataclasses.replace(r, state="failed", loss=None, error="CUDA error", trial_id=99)
        if (r.optimizer, r.lr, r.seed) == ("adamod", 1e-2, 5)
        else dataclasses.replace(r, state="queued", loss=None)
        if (r.optimizer, r.lr, r.seed) == ("adamod", 1e-2, 4)
        else r
        for r in records
    ]
    report = build_report(records)
    (cmp,) = report.comparisons
    cells = {(m.lr, m.seed): (m.challenger, m.reference) for m in cmp.missing_cells}
    assert cells == {(1e-2, 5): ("failed", "completed"), (1e-2, 4): ("queued", "completed")}
    assert cmp.n_missing == 2 and "2 cells missing" in cmp.headline
    # Seeds 4 and 5 have one common lr left: excluded, so the test has 4 seeds (underpowered).
    assert [e.seed for e in cmp.excluded_seeds] == [4, 5] and cmp.n_seeds == 4
    assert cmp.underpowered
    assert report.status == "running" and not report.complete
    assert report.counts["failed"] == 1 and report.counts["queued"] == 1
    (failure,) = report.failures
    assert failure.trial_id == 99 and failure.error == "CUDA error"
    assert failure.params["optimizer"] == "adamod" and failure.params["seed"] == 5
    assert config(report, "adamod").curve[1].n_failed == 1


def test_weight_decay_makes_adamw_the_reference_and_sgd_is_best_vs_best_only():
    records = []
    for opt in ("adam", "adamw", "adamod", "sgd"):
        for s in range(6):
            records += [rec(opt, 1e-3, s, 1.0 - 0.01 * s), rec(opt, 1e-2, s, 0.8)]
    report = build_report(records, spec={"weight_decay": 0.01})
    assert report.reference == "adamw" and "weight_decay" in report.reference_reason
    assert {c.reference_optimizer for c in report.comparisons} == {"adamw"}
    assert {c.challenger_optimizer for c in report.comparisons} == {"adam", "adamod"}
    assert {b.challenger_optimizer for b in report.best_vs_best} == {"adam", "adamod", "sgd"}
    assert any(line.startswith("SGD at its best lr") for line in report.headline)
    named = build_report(records, spec={"weight_decay": 0.01, "reference": "adam"})
    assert named.reference == "adam" and named.reference_reason == "named by the spec"
    assert build_report(records).reference == "adam"


def test_adamod_without_warmup_is_compared_with_the_reference_with_warmup():
    records = _pair_records(6)
    records += [dataclasses.replace(r, warmup_steps=100) for r in records if r.optimizer == "adam"]
    report = build_report(records)
    kinds = {(c.kind, c.warmup, c.reference_warmup) for c in report.comparisons}
    assert kinds == {("same_warmup", 0, 0), ("no_warmup_vs_warmup", 0, 100)}
    (paper,) = [c for c in report.comparisons if c.kind == "no_warmup_vs_warmup"]
    assert "no warmup vs 100 warmup steps" in paper.headline
    (w,) = report.warmup
    assert w.optimizer == "adam" and [e.warmup_steps for e in w.entries] == [0, 100]


def test_cancelled_study_is_never_complete():
    records = _pair_records(6)
    records[-1] = dataclasses.replace(records[-1], state="cancelled", loss=None)
    derived = build_report(records)
    assert derived.status == "cancelled" and derived.complete is False
    assert derived.headline[0].startswith("Study cancelled")
    given_status = build_report(_pair_records(6), status="cancelled")
    assert given_status.status == "cancelled" and not given_status.complete
    assert build_report(_pair_records(6)).complete


def test_budget_is_per_configuration_over_lr_and_seed_trials():
    report = build_report(_pair_records(6))
    adam = next(b for b in report.budget if b.optimizer == "adam")
    assert adam.n_trials == 12 and adam.k == list(range(1, 13))
    assert adam.expected_best[0] == pytest.approx((6 * 1.0 + 6 * 0.5) / 12)  # mean of all
    assert adam.expected_best[-1] == pytest.approx(0.5)


def test_test_loss_at_the_selected_point_and_environment():
    records = [
        dataclasses.replace(r, test_loss=r.loss + 0.1, torch_version="2.13.0", device="cpu",
                            data={"data_sha256": "abc"})
        for r in _pair_records(6)
    ]  # fmt: skip
    report = build_report(records)
    assert report.test_split
    assert config(report, "adam").test_loss_at_best == pytest.approx(0.6)
    assert report.environment == {"torch": ["2.13.0"], "devices": ["cpu"],
                                  "data": {"data_sha256": ["abc"]}}  # fmt: skip
    assert not build_report(_pair_records(6)).test_split


def test_json_round_trip_is_exact():
    report = build_report(ADAM + _pair_records(6), spec={"name": "x"})
    body = json.loads(json.dumps(report.model_dump(mode="json"), allow_nan=False))
    assert Report.model_validate(body) == report
    for name in ("status", "complete", "spec", "environment", "target", "counts", "failures",
                 "configs", "comparisons", "best_vs_best", "surfaces", "warmup", "budget",
                 "headline"):  # fmt: skip
        assert name in body


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"seed": -3}, "seed"),
        ({"n_bootstrap": -1}, "n_bootstrap"),
        ({"n_bootstrap": 1.5}, "n_bootstrap"),
        ({"complete": "yes"}, "complete"),
        ({"status": "done"}, "status"),
        ({"spec": "x"}, "spec"),
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


_loss = st.one_of(st.none(), st.floats(0.0, 5.0), st.sampled_from([math.nan, math.inf]))
_record = st.builds(
    TrialRecord,
    optimizer=st.sampled_from(["adam", "adamw", "adamod", "diffmod", "radam", "sgd"]),
    lr=st.sampled_from([1e-4, 1e-3, 1e-2, 1e-1, 0.0]),
    beta3=st.sampled_from([None, 0.9, 0.999]),
    warmup_steps=st.sampled_from([0, 100]),
    seed=st.integers(0, 3),
    state=st.sampled_from(["completed", "diverged", "running", "failed", "cancelled"]),
    loss=_loss,
    loss0=st.one_of(st.none(), st.floats(0.5, 5.0)),
    schedule=st.sampled_from(["constant", "cosine"]),
    curve_steps=st.just((10, 20)),
    curve_losses=st.tuples(_loss.filter(lambda x: x is not None), st.floats(0.0, 5.0)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_record, max_size=40))
def test_any_partial_data_gives_a_report_that_round_trips(records):
    report = build_report(records)
    assert report.n_records == len(records) and report.counts["total"] == len(records)
    body = json.loads(json.dumps(report.model_dump(mode="json"), allow_nan=False))
    assert Report.model_validate(body) == report
    for c in report.configs:
        assert c.best_loss == min(p.median for p in c.curve)
        assert c.lr_sensitivity >= 0 and 0 <= c.divergence_rate <= 1
        assert c.lr_sensitivity_norm is None or 0 <= c.lr_sensitivity_norm <= 1
        assert all(p.p25 <= p.median <= p.p75 for p in c.curve)
    for cmp in report.comparisons:
        assert cmp.p is None or 0 < cmp.p <= 1
        assert all(p.p_holm is None or p.p <= p.p_holm <= 1 for p in cmp.per_lr)

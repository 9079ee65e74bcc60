"""Report v2 checked against an independent float64 re-implementation (tests/studies/reference_v2).

`reference_v2` is written from docs/REPORT.md alone and never calls the code under test; here
every number of `build_report(...).model_dump(mode="json")` is compared with it on randomized
synthetic studies (tests/studies/synthetic_v2), and the reference itself is checked against brute
force and hand-worked cases. Tolerances: rtol 1e-9 (atol 1e-12) for every float, exact for counts.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.studies import reference_v2 as ref
from tests.studies.synthetic_v2 import Study, make_study, rec

try:
    from studies.report import build_report

    V2 = "spec" in inspect.signature(build_report).parameters
except ImportError:  # pragma: no cover - the module always exists; v2 may not yet
    build_report, V2 = None, False

needs_v2 = pytest.mark.skipif(not V2, reason="build_report v2 (spec=..., status=...) not landed")

RTOL, ATOL = 1e-9, 1e-12
MC_ATOL = 0.01  # Monte Carlo p (n > 16): 100,000 flips give a standard error below 0.0016


# ----------------------------------------------------------------------------- comparison helpers


def close(a: Any, b: Any, rtol: float = RTOL, atol: float = ATOL) -> bool:
    """Floats within tolerance; None only equals None; lists and dicts element-wise."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) >= set(b) and all(close(a[k], b[k], rtol, atol) for k in b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(close(x, y, rtol, atol) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return a == b
    a, b = float(a), float(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * abs(b)


class Diff:
    """Collects every disagreement (path, got, expected) so that one failure shows them all."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def check(self, path: str, got: Any, expected: Any, rtol: float = RTOL, atol: float = ATOL):
        if not close(got, expected, rtol, atol):
            self.items.append(f"{path}: got {got!r}, expected {expected!r}")

    def require(self, path: str, ok: bool, note: str = "") -> None:
        if not ok:
            self.items.append(f"{path}: {note}")

    def assert_empty(self, context: str = "") -> None:
        shown = "\n".join(self.items[:40])
        more = f"\n... and {len(self.items) - 40} more" if len(self.items) > 40 else ""
        assert not self.items, f"{len(self.items)} disagreement(s) {context}\n{shown}{more}"


def key_of(cfg: dict[str, Any]) -> ref.Key:
    beta3 = cfg["beta3"]
    return (cfg["optimizer"], None if beta3 is None else float(beta3), cfg["warmup_steps"],
            cfg["schedule"])  # fmt: skip


def report_json(study: Study, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("spec", study.spec)
    return build_report(study.records, **kwargs).model_dump(mode="json")


def both(study: Study, *, status=None, n_bootstrap=10_000, seed=0, spec="study"):
    """(report JSON, reference) on the same inputs; the reference breaks target ties like the
    report's presentation order (the order of its `configs`)."""
    spec = study.spec if spec == "study" else spec
    data = build_report(
        study.records, spec=spec, status=status, n_bootstrap=n_bootstrap, seed=seed
    ).model_dump(mode="json")
    order = [key_of(c) for c in data["configs"]]
    expected = ref.reference_report(
        study.records, spec=spec, status=status, n_bootstrap=n_bootstrap, seed=seed,
        config_order=order,
    )  # fmt: skip
    return data, expected


def compare_configs(data: dict[str, Any], exp: dict[str, Any], diff: Diff) -> dict[str, ref.Key]:
    """Every per-configuration number; returns label → key."""
    labels = {c["label"]: key_of(c) for c in data["configs"]}
    diff.require("configs.label", len(labels) == len(data["configs"]), "labels are not unique")
    got = {key_of(c): c for c in data["configs"]}
    diff.require(
        "configs", set(got) == set(exp["configs"]),
        f"keys {sorted(got, key=repr)} != {sorted(exp['configs'], key=repr)}",
    )  # fmt: skip
    for key in set(got) & set(exp["configs"]):
        c, e = got[key], exp["configs"][key]
        at = f"config{key}"
        diff.check(f"{at}.curve.lr", [p["lr"] for p in c["curve"]], [p["lr"] for p in e["curve"]])
        if len(c["curve"]) == len(e["curve"]):
            for i, (p, q) in enumerate(zip(c["curve"], e["curve"], strict=True)):
                fields = ("median", "p25", "p75", "values", "n_seeds", "n_diverged", "n_failed",
                          "uncapped_median")  # fmt: skip
                for f in fields:
                    diff.check(f"{at}.curve[{i}].{f}", p[f], q[f])
                if not e["target_knife_edge"]:
                    diff.check(f"{at}.curve[{i}].steps_to_target", p["steps_to_target"],
                               q["steps_to_target"])  # fmt: skip
                sv = p.get("seed_values")
                if sv is not None:
                    diff.check(f"{at}.curve[{i}].seed_values.seed", [v["seed"] for v in sv],
                               [v["seed"] for v in q["seed_values"]])  # fmt: skip
                    for f in ("loss", "diverged"):
                        diff.check(f"{at}.curve[{i}].seed_values.{f}", [v[f] for v in sv],
                                   [v[f] for v in q["seed_values"]])  # fmt: skip
                    if not e["target_knife_edge"] and all("steps_to_target" in v for v in sv):
                        diff.check(f"{at}.curve[{i}].seed_values.steps_to_target",
                                   [v["steps_to_target"] for v in sv],
                                   [v["steps_to_target"] for v in q["seed_values"]])  # fmt: skip
        for f in (
            "best_loss",
            "best_lr",
            "test_loss_at_best",
            "loss0",
            "lr_sensitivity",
            "lr_sensitivity_norm",
            "grid_spacing_decades",
            "divergence_rate",
            "seed_spread",
            "implicit_warmup_steps",
            "n_trials",
            "n_diverged",
            "n_failed",
        ):
            if f in c or f in ("best_loss", "best_lr", "lr_sensitivity"):
                diff.check(f"{at}.{f}", c.get(f), e[f])
        if not e["good_knife_edge"]:
            for f in ("good_lr_decades", "good_lr_range"):
                diff.check(f"{at}.{f}", c[f], e[f])
            if e["good_lr_open"] is not None:
                diff.check(f"{at}.good_lr_open", c["good_lr_open"], e["good_lr_open"])
        if not e["target_knife_edge"]:
            diff.check(f"{at}.target_lr_decades", c["target_lr_decades"], e["target_lr_decades"])
            if "target_lr_range" in c:
                diff.check(f"{at}.target_lr_range", c["target_lr_range"], e["target_lr_range"])
    return labels


def compare_paired(at: str, c: dict[str, Any], e: dict[str, Any], diff: Diff) -> None:
    """The fields shared by comparisons and best_vs_best."""
    diff.check(f"{at}.per_seed_d.seed", [x["seed"] for x in c["per_seed_d"]],
               [x["seed"] for x in e["per_seed_d"]])  # fmt: skip
    diff.check(f"{at}.per_seed_d.d", [x["d"] for x in c["per_seed_d"]],
               [x["d"] for x in e["per_seed_d"]])  # fmt: skip
    for f in ("n_seeds", "mean_d", "share_better", "min_possible_p", "underpowered",
              "seeds_needed", "ci_t"):  # fmt: skip
        diff.check(f"{at}.{f}", c[f], e[f])
    diff.check(f"{at}.ci_bootstrap", c["ci_bootstrap"], e["ci_bootstrap"])
    if e["p_is_monte_carlo"]:
        diff.check(f"{at}.p (Monte Carlo)", c["p"], e["p"], rtol=0, atol=MC_ATOL)
    else:
        diff.check(f"{at}.p", c["p"], e["p"])
    head = c.get("headline", "")
    if e["underpowered"] and e["n_seeds"] > 0:  # n = 0: no test at all, "no test" is fine
        diff.require(f"{at}.headline", "underpowered" in head.lower(), f"{head!r}: no underpowered")
    diff.require(f"{at}.headline", str(e["n_seeds"]) in head, f"{head!r}: no seed count")


def compare_report(data: dict[str, Any], exp: dict[str, Any], diff: Diff) -> None:
    """Every v2 number of the report against the reference."""
    for f in ("status", "complete", "test_split", "reference"):
        diff.check(f, data.get(f), exp[f])
    if "n_used" in data:
        diff.check("n_used", data["n_used"], exp["n_used"])
    for state, n in exp["counts"].items():
        diff.check(f"counts.{state}", data["counts"].get(state, 0), n)
    diff.check("failures.trial_id", sorted(f["trial_id"] for f in data["failures"]),
               sorted(f["trial_id"] for f in exp["failures"]))  # fmt: skip
    diff.check("failures.error", sorted(f["error"] for f in data["failures"]),
               sorted(f["error"] for f in exp["failures"]))  # fmt: skip
    diff.check("target.source", data["target"]["source"], exp["target"]["source"])
    diff.check("target.loss", data["target"]["loss"], exp["target"]["loss"])
    labels = compare_configs(data, exp, diff)

    got = {}
    for c in data["comparisons"]:
        k = (c["kind"], labels.get(c["challenger"]), labels.get(c["reference"]))
        diff.require(f"comparisons{k}", k not in got, "duplicate comparison")
        got[k] = c
    diff.require("comparisons", set(got) == set(exp["comparisons"]),
                 f"{sorted(got, key=repr)} != {sorted(exp['comparisons'], key=repr)}")  # fmt: skip
    for k in set(got) & set(exp["comparisons"]):
        c, e = got[k], exp["comparisons"][k]
        at = f"comparison{k}"
        diff.check(f"{at}.warmup", c["warmup"], k[1][2])
        diff.check(f"{at}.schedule", c["schedule"], k[1][3])
        if "reference_warmup" in c:
            diff.check(f"{at}.reference_warmup", c["reference_warmup"], k[2][2])
        compare_paired(at, c, e, diff)
        if "excluded_seeds" in c:
            ex = {x["seed"] for x in c["excluded_seeds"]}
            lo, hi = set(e["excluded_seeds"]), set(e["excluded_seeds"])
            hi |= set(e["seeds_without_common_cells"])
            diff.require(f"{at}.excluded_seeds", lo <= ex <= hi, f"{sorted(ex)} vs {sorted(lo)}")
        miss = sorted((m["lr"], m["seed"], m["challenger"], m["reference"])
                      for m in c["missing_cells"])  # fmt: skip
        want = sorted((m["lr"], m["seed"], m["challenger"], m["reference"])
                      for m in e["missing_cells"])  # fmt: skip
        diff.check(f"{at}.missing_cells", miss, want)
        if e["n_missing"]:
            head = c["headline"]
            diff.require(f"{at}.headline", str(e["n_missing"]) in head, f"{head!r}: no missing")
        diff.check(f"{at}.per_lr.lr", [x["lr"] for x in c["per_lr"]],
                   [x["lr"] for x in e["per_lr"]])  # fmt: skip
        if len(c["per_lr"]) == len(e["per_lr"]):
            for i, (x, y) in enumerate(zip(c["per_lr"], e["per_lr"], strict=True)):
                for f in ("wins", "ties", "both_failed", "losses", "mean_delta", "p", "p_holm"):
                    diff.check(f"{at}.per_lr[{i}].{f}", x[f], y[f])
                if "n_seeds" in x:
                    diff.check(f"{at}.per_lr[{i}].n_seeds", x["n_seeds"], y["n_seeds"])

    gotb = {(labels.get(c["challenger"]), labels.get(c["reference"])): c
            for c in data["best_vs_best"]}  # fmt: skip
    want_b = sorted(exp["best_vs_best"], key=repr)
    diff.require("best_vs_best", set(gotb) == set(want_b), f"{sorted(gotb, key=repr)} != {want_b}")
    for k in set(gotb) & set(exp["best_vs_best"]):
        c, e = gotb[k], exp["best_vs_best"][k]
        at = f"best_vs_best{k}"
        compare_paired(at, c, e, diff)
        for f in ("challenger_best_lr", "reference_best_lr", "mean_test_delta"):
            if f in c:
                diff.check(f"{at}.{f}", c[f], e[f])

    if exp["target"]["config"] is not None and data["target"].get("config") is not None:
        diff.check("target.config", labels.get(data["target"]["config"]), exp["target"]["config"])

    gots = {(x["optimizer"], x["warmup_steps"], x["schedule"]): x for x in data["surfaces"]}
    diff.require("surfaces", set(gots) == set(exp["surfaces"]), f"{sorted(gots)}")
    for k in set(gots) & set(exp["surfaces"]):
        for f in ("beta3s", "lrs", "median_loss", "best_loss", "best_beta3", "best_lr"):
            diff.check(f"surface{k}.{f}", gots[k][f], exp["surfaces"][k][f])

    gotw = {(x["optimizer"], x["beta3"], x["schedule"]): x for x in data["warmup"]}
    diff.require("warmup", set(gotw) == set(exp["warmup"]), f"{sorted(gotw, key=repr)}")
    for k in set(gotw) & set(exp["warmup"]):
        entries = sorted(gotw[k]["entries"], key=lambda x: x["warmup_steps"])
        want = [exp["configs"][ck] for ck in exp["warmup"][k]]
        diff.check(f"warmup{k}.warmup_steps", [x["warmup_steps"] for x in entries],
                   [c["warmup_steps"] for c in want])  # fmt: skip
        if len(entries) == len(want):
            for x, c in zip(entries, want, strict=True):
                for f in ("best_loss", "best_lr", "lr_sensitivity_norm", "divergence_rate",
                          "implicit_warmup_steps"):  # fmt: skip
                    diff.check(f"warmup{k}[{x['warmup_steps']}].{f}", x[f], c[f])
                if not c["good_knife_edge"]:
                    diff.check(f"warmup{k}[{x['warmup_steps']}].good_lr_decades",
                               x["good_lr_decades"], c["good_lr_decades"])  # fmt: skip
    diff.require("headline", isinstance(data["headline"], list) and all(
        isinstance(h, str) and h for h in data["headline"]), "not a list of sentences")  # fmt: skip

    gotg = {labels.get(b["label"]): b for b in data["budget"]}
    diff.require("budget", set(gotg) == set(exp["budget"]), "budget curves != configurations")
    for k in set(gotg) & set(exp["budget"]):
        b, e = gotg[k], exp["budget"][k]
        at = f"budget{k}"
        n = e["n_trials"]
        if e["ks"] is not None:
            diff.check(f"{at}.k", b["k"], e["ks"])
        else:
            ks = b["k"]
            ok = ks[0] == 1 and ks[-1] == n and len(ks) <= 100
            diff.require(f"{at}.k", ok and all(a < c for a, c in itertools.pairwise(ks)), str(ks))
        want = [ref.expected_best(e["values"], k) for k in b["k"] if 1 <= k <= n]
        diff.check(f"{at}.expected_best", b["expected_best"], want)


# ----------------------------------------------------------------------------- the reference alone


def test_sign_flip_hand_worked():
    """d = [1, 2, 3], mean 2. The 8 flips give sums ±6 (|mean| 2), ±4 (4/3), ±2 (2/3), ±0 (0)
    — (+,+,+) 6, (−,−,−) −6, (−,+,+) 4, (+,−,−) −4, (+,−,+) 2, (−,+,−) −2, (+,+,−) 0,
    (−,−,+) 0 — so two of 8 reach |mean| ≥ 2: p = 2/8 = 0.25."""
    assert ref.sign_flip_p([1.0, 2.0, 3.0]) == 0.25
    assert ref.sign_flip_p([0.0, 0.0]) == 1.0
    assert ref.sign_flip_p([]) is None
    # [1, 1, 1, -1]: sums of four ±1 are ±4 (2 vectors), ±2 (8), 0 (6): |sum| ≥ 2 → 10/16.
    assert ref.sign_flip_p([1.0, 1.0, 1.0, -1.0]) == 10 / 16
    # A near tie that only the 1e-12 tolerance resolves: see test_report_sign_flip_near_tie.
    assert ref.sign_flip_p(NEAR_TIE) == 1.0


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.integers(-4, 4), min_size=1, max_size=9))
def test_sign_flip_reference_is_the_enumeration(ints):
    """The reference p is the share of all 2^n sign vectors whose |sum| reaches |sum(d)|, counted
    here in exact integer arithmetic (no tolerance needed), on small integer d with many ties."""
    n = len(ints)
    hits = sum(
        abs(sum(s * x for s, x in zip(signs, ints, strict=True))) >= abs(sum(ints))
        for signs in itertools.product((1, -1), repeat=n)
    )
    assert ref.sign_flip_p([x / 8 for x in ints]) == (1.0 if not any(ints) else hits / 2**n)


def test_holm_hand_worked():
    """p = [0.01, 0.04, 0.03, 0.005], m = 4. Sorted: 0.005, 0.01, 0.03, 0.04; times (4, 3, 2, 1):
    0.02, 0.03, 0.06, 0.04; running max: 0.02, 0.03, 0.06, 0.06. Back in input order:
    [0.03, 0.06, 0.06, 0.02]. And min(1, ·): [0.5, 0.3] → 2·0.3 = 0.6, max(0.6, 1·0.5) = 0.6."""
    assert ref.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert ref.holm([0.5, 0.3]) == pytest.approx([0.6, 0.6])
    assert ref.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=9), st.data())
def test_expected_best_reference_is_the_subset_mean(values, data):
    """Tang et al.'s estimator equals the mean minimum over all k-subsets (with ties in L)."""
    ls = [v / 4 for v in values]
    k = data.draw(st.integers(1, len(ls)))
    assert ref.expected_best(ls, k) == pytest.approx(ref.expected_best_bruteforce(ls, k))


def test_good_interval_reference_hand_worked():
    """x = −4…−1, g = [0.05, 0, 0.05, 0.15]: right edge −2 + (0.1−0.05)/(0.15−0.05) = −1.5;
    left is open at −4; width 2.5 decades."""
    left, right, lo, hi, _ = ref.good_interval([-4, -3, -2, -1], [0.05, 0, 0.05, 0.15], 1, 0.1)
    assert (left, right, lo, hi) == (pytest.approx(-4), pytest.approx(-1.5), True, False)


# ----------------------------------------------------------------------------- hand-made studies


def pair_study(deltas_by_lr, *, lrs=None, base=5.0, loss0=10.0, opt="adamod"):
    """adam at L = base everywhere, `opt` at base + δ (per lr, per seed 0…n−1)."""
    lrs = lrs or [10.0 ** -(i + 1) for i in range(len(deltas_by_lr))]
    records, tid = [], itertools.count(1)
    for lr, deltas in zip(lrs, deltas_by_lr, strict=True):
        for s, d in enumerate(deltas):
            records.append(rec("adam", lr, s, base, loss0=loss0, trial_id=next(tid)))
            records.append(rec(opt, lr, s, base + d, loss0=loss0, trial_id=next(tid)))
    return Study(records, None, list(range(len(deltas_by_lr[0]))), lrs)


def per_lr_of(data, challenger_optimizer="adamod"):
    (c,) = [
        c for c in data["comparisons"]
        if c["challenger_optimizer"] == challenger_optimizer and c["kind"] == "same_warmup"
    ]  # fmt: skip
    return c


@needs_v2
def test_report_sign_flip_hand_worked():
    """At lr 0.1 the per-seed δ are [1, 2, 3] (p = 2/8 = 0.25, see the hand-worked test); at
    lr 0.01 they are [−0.5, 0, 0] (every flip keeps |mean| = 1/6: p = 1). Holm over m = 2:
    0.25·2 = 0.5, max(0.5, 1·1) = 1. Per seed: adam S = 0; adamod seed 0 has L = [6, 4.5],
    L* = 4.5, S = mean(1.5/5.5, 0) = 3/22."""
    data = report_json(pair_study([[1.0, 2.0, 3.0], [-0.5, 0.0, 0.0]]))
    c = per_lr_of(data)
    by_lr = {round(x["lr"], 12): x for x in c["per_lr"]}
    assert by_lr[0.1]["p"] == pytest.approx(0.25)
    assert by_lr[0.01]["p"] == pytest.approx(1.0)
    assert by_lr[0.1]["p_holm"] == pytest.approx(0.5)
    assert by_lr[0.01]["p_holm"] == pytest.approx(1.0)
    assert (by_lr[0.1]["wins"], by_lr[0.1]["losses"], by_lr[0.1]["ties"]) == (0, 3, 0)
    assert (by_lr[0.01]["wins"], by_lr[0.01]["losses"], by_lr[0.01]["ties"]) == (1, 0, 2)
    assert by_lr[0.1]["mean_delta"] == pytest.approx(2.0)
    assert c["per_seed_d"][0] == {"seed": 0, "d": pytest.approx(3 / 22)}


# L_challenger − L_reference, L_reference = 2, L_challenger = 2 + [−0.3, 0.1, 0.2, 0.001]: exactly,
# −0.3 + 0.1 + 0.2 = 0, so flipping the first three keeps |sum| = 0.001 and all 16 flips reach it
# (p = 1); in floating point two of them fall short by ~1e-17.
NEAR_TIE = [(2.0 + x) - 2.0 for x in (-0.3, 0.1, 0.2, 0.001)]


def _p_without_tolerance(d):
    n, observed = len(d), abs(math.fsum(d) / len(d))
    flips = itertools.product((1.0, -1.0), repeat=n)
    hits = sum(abs(math.fsum(s * x for s, x in zip(e, d, strict=True)) / n) >= observed
               for e in flips)  # fmt: skip
    return hits / 2**n


@needs_v2
def test_report_sign_flip_near_tie():
    """The tolerance |mean(ε·d)| ≥ |mean(d)| − 1e-12·max(1, |mean(d)|) of REPORT.md is applied:
    without it the p of NEAR_TIE would be 14/16."""
    assert _p_without_tolerance(NEAR_TIE) == 14 / 16  # the case really needs the tolerance
    data = report_json(pair_study([[-0.3, 0.1, 0.2, 0.001], [0.25] * 4], base=2.0))
    per_lr = sorted(per_lr_of(data)["per_lr"], key=lambda x: -x["lr"])
    assert per_lr[0]["p"] == 1.0


@needs_v2
def test_report_holm_hand_worked():
    """Three lrs, six seeds. δ = [1…6]: only ± the identity reach: p = 2/64 = 0.03125.
    δ = [1, 2, 3, 4, 5, −1] (sum 14 of magnitudes summing to 16): reached by the identity and by
    flipping either 1, and their negatives: 6/64 = 0.09375. δ = [1, −1, 1, −1, 1, −1]: mean 0,
    p = 1. Holm, m = 3: 3·0.03125 = 0.09375; max(0.09375, 2·0.09375) = 0.1875; 1."""
    deltas = [[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, -1], [1, -1, 1, -1, 1, -1]]
    data = report_json(pair_study([[x / 8 for x in d] for d in deltas]))
    per_lr = sorted(per_lr_of(data)["per_lr"], key=lambda x: -x["lr"])
    assert [x["p"] for x in per_lr] == pytest.approx([0.03125, 0.09375, 1.0])
    assert [x["p_holm"] for x in per_lr] == pytest.approx([0.09375, 0.1875, 1.0])


@needs_v2
@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=10))
def test_report_sign_flip_equals_bruteforce(ints):
    """The report's per-lr p equals the enumeration of all 2^n sign vectors, on δ with many exact
    ties in |δ| (where the 1e-12 tolerance of REPORT.md decides) and zeros."""
    deltas = [x / 4 for x in ints]
    data = report_json(pair_study([deltas, [0.25] * len(deltas)]))
    per_lr = sorted(per_lr_of(data)["per_lr"], key=lambda x: -x["lr"])
    assert per_lr[0]["p"] == pytest.approx(ref.sign_flip_p(deltas))
    assert per_lr[0]["mean_delta"] == pytest.approx(sum(deltas) / len(deltas))


def curve_study(medians_by_lr, *, lrs, loss0=2.0, n_seeds=3, opt="adam", target_loss=None):
    """One optimizer whose every seed has L = the given median at each lr (so median = L)."""
    records = [
        rec(opt, lr, s, m, loss0=loss0, trial_id=i * 10 + s,
            curve=((50, (loss0 + m) / 2), (100, m)))
        for i, (lr, m) in enumerate(zip(lrs, medians_by_lr, strict=True))
        for s in range(n_seeds)
    ]  # fmt: skip
    spec = None if target_loss is None else {"target_loss": target_loss}
    return Study(records, spec, list(range(n_seeds)), lrs)


@needs_v2
def test_good_lr_decades_known_crossing_open_low():
    """L* = 1 at 1e-3, loss0 = 2 (gap 1): g = [0.05, 0, 0.05, 0.15] at x = −4, −3, −2, −1.
    g crosses 0.1 exactly halfway between −2 and −1 (x = −1.5); to the left g never exceeds 0.1,
    so the interval is open at 1e-4. Width −1.5 − (−4) = 2.5 decades; range [1e-4, 10^−1.5];
    grid spacing 1 decade."""
    data = report_json(curve_study([1.05, 1.0, 1.05, 1.15], lrs=[1e-4, 1e-3, 1e-2, 1e-1]))
    (c,) = data["configs"]
    assert c["best_lr"] == pytest.approx(1e-3)
    assert c["good_lr_decades"] == pytest.approx(2.5, rel=1e-9)
    assert c["good_lr_range"] == pytest.approx([1e-4, 10**-1.5], rel=1e-9)
    assert c["good_lr_open"] == {"low": True, "high": False}
    assert c["grid_spacing_decades"] == pytest.approx(1.0)


@needs_v2
def test_good_lr_decades_known_crossing_both_sides_uneven_grid():
    """x = −4, −3.5, −2, −1.25 with g = [0.3, 0.04, 0, 0.08] and a right end open: left edge
    −3.5 − (0.1 − 0.04)/(0.3 − 0.04)·0.5 = −3.5 − 0.06/0.52 = −3.615384…; right open at −1.25:
    width 2.365384… = 2.25 + 0.06/0.52. Grid spacing max(0.5, 1.5, 0.75) = 1.5."""
    lrs = [1e-4, 10**-3.5, 1e-2, 10**-1.25]
    data = report_json(curve_study([1.3, 1.04, 1.0, 1.08], lrs=lrs))
    (c,) = data["configs"]
    assert c["good_lr_decades"] == pytest.approx(2.25 + 0.06 / 0.52, rel=1e-9)
    assert c["good_lr_open"] == {"low": False, "high": True}
    assert c["grid_spacing_decades"] == pytest.approx(1.5, rel=1e-9)


@needs_v2
def test_target_lr_decades_known_crossing():
    """Target 1.0 from the spec; each trial's lowest curve loss is its final L, so
    h = L − 1 = [0.2, −0.1, −0.1, 0.1] at x = −4…−1: edges −4 + (0 − 0.2)/(−0.1 − 0.2) = −3.333…
    and −2 + (0 + 0.1)/(0.1 + 0.1) = −1.5; width 1.8333…"""
    study = curve_study([1.2, 0.9, 0.9, 1.1], lrs=[1e-4, 1e-3, 1e-2, 1e-1], target_loss=1.0)
    data = report_json(study)
    (c,) = data["configs"]
    assert data["target"] == {**data["target"], "loss": 1.0, "source": "spec"}
    assert c["target_lr_decades"] == pytest.approx(-1.5 + 4 - 2 / 3, rel=1e-9)
    assert [p["steps_to_target"] for p in c["curve"]] == [None, 100, 100, None]


@needs_v2
def test_two_seeds_underpowered():
    """With 2 seeds the smallest possible p is 2/4 = 0.5 > 0.05: every comparison (lr by lr and
    best vs best) is underpowered, needs 6 seeds, has no interval, and its headline says so."""
    study = make_study(3, n_seeds=2, optimizers=["adam", "adamod", "sgd"], n_lrs=4, p_missing=0.0)
    data = report_json(study)
    assert data["comparisons"] and data["best_vs_best"]
    for c in data["comparisons"] + data["best_vs_best"]:
        assert c["min_possible_p"] == pytest.approx(0.5)
        assert c["underpowered"] is True
        assert c["seeds_needed"] == 6
        assert c["ci_t"] is None and c["ci_bootstrap"] is None
        assert "underpowered" in c["headline"].lower()
    assert any("underpowered" in h.lower() for h in data["headline"])


@needs_v2
@pytest.mark.parametrize(
    ("spec", "reference", "challengers"),
    [
        (None, "adam", {"adamw", "adamod"}),
        ({"weight_decay": 0.0}, "adam", {"adamw", "adamod"}),
        ({"weight_decay": 0.01}, "adamw", {"adam", "adamod"}),
        ({"weight_decay": 0.01, "reference": "adam"}, "adam", {"adamw", "adamod"}),
        ({"reference": "adamw"}, "adamw", {"adam", "adamod"}),
    ],
)
def test_reference_optimizer(spec, reference, challengers):
    """weight_decay > 0 makes AdamW the reference (Adam a challenger); the spec's `reference`
    wins over both rules."""
    study = make_study(5, optimizers=["adam", "adamw", "adamod"], n_seeds=3, warmups=[0],
                       schedules=["constant"], p_missing=0.0)  # fmt: skip
    data = report_json(study, spec=spec)
    assert data["reference"] == reference
    assert {c["reference_optimizer"] for c in data["comparisons"]} == {reference}
    assert {c["challenger_optimizer"] for c in data["comparisons"]} == challengers


@needs_v2
def test_sgd_only_best_vs_best():
    """SGD's lr means something else: it is never compared lr by lr, only at its own best lr."""
    study = make_study(7, optimizers=["adam", "adamod", "sgd"], n_seeds=3, warmups=[0, 100])
    data = report_json(study)
    assert all(c["challenger_optimizer"] != "sgd" for c in data["comparisons"])
    labels = {c["label"]: c["optimizer"] for c in data["configs"]}
    n_sgd = sum(c["optimizer"] == "sgd" for c in data["configs"])
    assert n_sgd == 2 * len(study.info["schedules"])  # warmup 0 and 100, per schedule
    assert sum(labels[b["challenger"]] == "sgd" for b in data["best_vs_best"]) == n_sgd


@needs_v2
@pytest.mark.parametrize(
    ("states", "given", "status"),
    [
        (("cancelled",), None, "cancelled"),
        (("cancelled", "failed"), None, "cancelled"),
        (("completed",), "cancelled", "cancelled"),
        (("queued",), None, "running"),
        (("running", "cancelled"), None, "running"),
        (("failed",), None, "completed"),  # some completed: a failed cell does not fail the study
        (("completed",), None, "completed"),
    ],
)
def test_status_and_complete(states, given, status):
    """Status derived from the counts (or given) and complete = (status == "completed")."""
    study = make_study(11, optimizers=["adam", "adamod"], n_seeds=3, n_lrs=3, p_missing=0.0)
    records = list(study.records)
    for i, state in enumerate(states):
        r = records[i]
        records[i] = dataclasses.replace(r, state=state, loss=None)
    data = build_report(records, spec=None, status=given).model_dump(mode="json")
    assert data["status"] == status
    assert data["complete"] is (status == "completed")


@needs_v2
def test_all_failed_study_is_failed():
    """Only failed records: status failed, nothing learned, no comparison."""
    records = [rec("adam", 1e-3, s, None, state="failed", trial_id=s, error="boom") for s in (0, 1)]
    data = build_report(records, spec=None, status=None).model_dump(mode="json")
    assert data["status"] == "failed" and data["complete"] is False
    assert data["counts"]["failed"] == 2 and len(data["failures"]) == 2
    assert data["comparisons"] == [] and data["target"]["source"] == "none"


@needs_v2
@pytest.mark.parametrize("n_seeds", [1, 2, 3])
def test_budget_expected_best_bruteforce(n_seeds):
    """expected_best[k] equals the mean, over every k-subset of the N (lr, seed) trials, of the
    subset's best L (brute force), k = 1 … N, with tied L values."""
    study = make_study(13, optimizers=["adam", "adamod"], n_seeds=n_seeds, n_lrs=4, p_missing=0.1,
                       dyadic=True)  # fmt: skip
    data = report_json(study)
    for b in data["budget"]:
        (c,) = [c for c in data["configs"] if c["label"] == b["label"]]
        values = [x for p in c["curve"] for x in p["values"]]
        assert b["k"] == list(range(1, len(values) + 1))
        want = [ref.expected_best_bruteforce(values, k) for k in b["k"]]
        assert b["expected_best"] == pytest.approx(want, rel=1e-9)


@needs_v2
def test_budget_log_spaced_k_above_256():
    """N = 8 lrs × 40 seeds = 320 > 256: k is at most 100 increasing integers from 1 to N, and
    expected_best matches the estimator at each of them."""
    study = make_study(17, optimizers=["adam"], n_seeds=40, n_lrs=8, p_missing=0.0,
                       warmups=[0], schedules=["constant"])  # fmt: skip
    data, exp = both(study)
    diff = Diff()
    compare_report(data, exp, diff)
    diff.assert_empty()
    (b,) = data["budget"]
    assert b["k"][0] == 1 and b["k"][-1] == 320 and len(b["k"]) <= 100


@needs_v2
def test_more_than_16_seeds_monte_carlo_p():
    """18 seeds: p comes from 100,000 random flips; it agrees with the exact enumeration of all
    2^18 vectors within Monte Carlo error, and is at least 1/100,001."""
    deltas = [((-1) ** i) * 0.01 * (i % 5 + 1) + 0.012 for i in range(18)]
    data = report_json(pair_study([deltas, [0.05] * 18]))
    per_lr = sorted(per_lr_of(data)["per_lr"], key=lambda x: -x["lr"])
    exact = ref.sign_flip_p_exact(deltas)
    assert 0.001 < exact < 0.5
    assert per_lr[0]["p"] == pytest.approx(exact, abs=MC_ATOL)


@needs_v2
def test_lrs_matched_after_rounding():
    """The challenger's lrs differ from the reference's by 1e-14 relative: they are the same lrs
    (rounded to 12 significant digits), so every cell is common."""
    study = make_study(19, optimizers=["adam", "adamod"], n_seeds=3, n_lrs=4, p_missing=0.0,
                       warmups=[0], schedules=["constant"])  # fmt: skip
    records = [
        dataclasses.replace(r, lr=r.lr * (1 + 1e-14)) if r.optimizer == "adamod" else r
        for r in study.records
    ]
    data = build_report(records, spec=None).model_dump(mode="json")
    for c in data["comparisons"]:
        assert c["missing_cells"] == [] and len(c["per_lr"]) == 4


@needs_v2
def test_cancelled_trial_with_a_loss_is_not_a_result():
    """A cancelled trial keeps its last loss, but it is not a result: its cell is missing."""
    records = [rec(o, lr, s, 1.0 + lr, trial_id=i) for i, (o, lr, s) in enumerate(
        itertools.product(["adam", "adamod"], [1e-3, 1e-2], [0, 1, 2]))]  # fmt: skip
    records[0] = dataclasses.replace(records[0], state="cancelled", loss=0.1)
    data = build_report(records, spec=None).model_dump(mode="json")
    assert data["status"] == "cancelled" and data["complete"] is False
    (c,) = data["comparisons"]
    assert [(m["challenger"], m["reference"]) for m in c["missing_cells"]] == [
        ("completed", "cancelled")
    ]
    cfg = next(c for c in data["configs"] if c["optimizer"] == "adam")
    assert cfg["curve"][0]["n_seeds"] == 2


# ----------------------------------------------------------------------------- randomized studies

SCENARIOS = {
    "default": {},
    "two_seeds": {"n_seeds": 2},
    "seven_seeds_ties": {"n_seeds": 7, "p_tie": 0.5, "dyadic": True},
    "all_diverged": {"all_diverged": True, "n_seeds": 5},
    "missing_many": {"p_missing": 0.3, "n_seeds": 6},
    "warmup_and_cosine": {"warmups": [0, 100], "schedules": ["constant", "cosine"], "n_seeds": 5},
    "weight_decay": {"weight_decay": 0.1, "optimizers": ["adam", "adamw", "adamod", "sgd"]},
    "spec_target": {"target_loss": 1.0, "n_seeds": 7},
    "running": {"non_result_states": ("queued", "running", "failed"), "p_missing": 0.2},
    "two_lrs": {"n_lrs": 2, "n_seeds": 7},
    "zero_weight_decay": {"weight_decay": 0.0, "optimizers": ["adam", "adamw", "adamod"]},
    "spec_reference": {"weight_decay": 0.1, "reference": "adam", "optimizers": ["adamw", "adamod"]},
    "jittered_lrs": {"lr_jitter": True, "n_seeds": 5},
    "curve_nan": {"curve_nan": True, "n_seeds": 5, "test_split": True},
    "no_reference": {"include_reference": False, "optimizers": ["adamod", "adamw", "sgd"]},
    "one_lr": {"n_lrs": 1, "n_seeds": 3},
}


@needs_v2
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_randomized_study_matches_reference(scenario, seed):
    """Every number of the report (configs, target, comparisons, per-lr, best vs best, budget,
    counts, failures, status) equals the independent reference on a random study."""
    study = make_study(1000 * seed + sorted(SCENARIOS).index(scenario), **SCENARIOS[scenario])
    data, exp = both(study, seed=seed)
    diff = Diff()
    compare_report(data, exp, diff)
    diff.assert_empty(f"in scenario {scenario}, seed {seed}, info {study.info}")


@needs_v2
@settings(max_examples=20, deadline=None, derandomize=True)
@given(st.integers(0, 2**31 - 1))
def test_random_studies_match_reference(study_seed):
    """The same comparison on hypothesis-drawn studies (every knob of make_study random)."""
    study = make_study(study_seed)
    data, exp = both(study, seed=study_seed % 7)
    diff = Diff()
    compare_report(data, exp, diff)
    diff.assert_empty(f"for make_study({study_seed}), info {study.info}")


@needs_v2
def test_bootstrap_interval_recipe():
    """ci_bootstrap follows the documented recipe exactly (default_rng(seed).integers(0, n,
    (n_bootstrap, n)), numpy-linear 2.5/97.5 percentiles), for two seeds and two sizes; and a
    different seed gives a different interval."""
    study = make_study(23, optimizers=["adam", "adamod"], n_seeds=7, p_missing=0.0, n_lrs=5)
    intervals = {}
    for seed, n_boot in [(0, 10_000), (3, 10_000)]:
        data, exp = both(study, seed=seed, n_bootstrap=n_boot)
        labels = {c["label"]: key_of(c) for c in data["configs"]}
        diff = Diff()
        for c in data["comparisons"]:
            e = exp["comparisons"][(c["kind"], labels[c["challenger"]], labels[c["reference"]])]
            diff.check("ci_bootstrap", c["ci_bootstrap"], e["ci_bootstrap"])
            intervals[seed] = c["ci_bootstrap"]
        diff.assert_empty(f"seed {seed}, n_bootstrap {n_boot}")
    assert intervals[0] != intervals[3]


def test_generators_cover_the_edge_cases():
    """The generators produce what the randomized tests claim to cover: ties between optimizers,
    diverged and all-diverged configurations, missing cells of every kind, and β3 on Adam."""
    seen: dict[str, int] = {}
    for seed in range(40):
        study = make_study(seed)
        for r in study.records:
            seen[r.state] = seen.get(r.state, 0) + 1
        if study.info["dead"]:
            seen["dead"] = seen.get("dead", 0) + 1
        exp = ref.reference_report(study.records, spec=study.spec)
        for c in exp["comparisons"].values():
            for x in c["per_lr"]:
                seen["ties"] = seen.get("ties", 0) + x["ties"]
                seen["both_failed"] = seen.get("both_failed", 0) + x["both_failed"]
            if c["missing_cells"]:
                seen["missing"] = seen.get("missing", 0) + 1
    for what in ("completed", "diverged", "failed", "cancelled", "dead", "ties", "both_failed",
                 "missing"):  # fmt: skip
        assert seen.get(what, 0) > 0, what

"""studies.compare against a hand-worked example, its edge cases, the renderers and the CLI.

Report dicts are made by a small factory here (`report`, `config`): the comparison reads only the
v2 names of ARCHITECTURE.md ("Report JSON"), never build_report's internals.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

import studies
from studies.__main__ import main
from studies.compare import (
    TAU_POINTS,
    Comparison,
    compare_reports,
    profile_ratios,
    rho_curve,
    tau_grid,
    trapezoid_area,
)
from studies.compare_render import render_compare_html, render_profiles
from studies.spec import load_spec
from studies.workloads import list_workloads

# --------------------------------------------------------------------------- factories

ADAM = ("adam", None)
ADAMOD = ("adamod", 0.999)
ADAMOD99 = ("adamod", 0.99)
LABELS = {ADAM: "Adam, warmup 0", ADAMOD: "AdaMod β3=0.999, warmup 0",
          ADAMOD99: "AdaMod β3=0.99, warmup 0"}  # fmt: skip
LRS = (1e-3, 1e-2, 1e-1)


def config(
    opt: tuple[str, float | None],
    *,
    steps: float | None,
    sens: float | None,
    best_lr: float = 1e-2,
    best_loss: float = 0.1,
    warmup: int = 0,
    schedule: str = "constant",
    label: str | None = None,
) -> dict[str, Any]:
    """A v2 config dict: `steps` is steps_to_target at best_lr (other lrs never reach it)."""
    curve = [
        {"lr": lr, "median": best_loss if lr == best_lr else 1.0, "p25": 0.0, "p75": 1.0,
         "steps_to_target": steps if lr == best_lr else None}
        for lr in LRS
    ]  # fmt: skip
    return {
        "optimizer": opt[0],
        "beta3": opt[1],
        "warmup_steps": warmup,
        "schedule": schedule,
        "label": label or LABELS[opt],
        "curve": curve,
        "best_loss": best_loss,
        "best_lr": best_lr,
        "lr_sensitivity_norm": sens,
        "good_lr_decades": 1.0,
        "target_lr_decades": 0.5,
    }


def report(
    name: str,
    workload: str,
    configs: list[dict[str, Any]],
    *,
    target: float | None = 0.2,
    status: str = "completed",
) -> dict[str, Any]:
    """A v2 report dict with the fields the comparison reads."""
    return {
        "version": 2,
        "status": status,
        "complete": status == "completed",
        "spec": {"name": name, "workload": workload},
        "target": {"loss": target, "source": "reference" if target is not None else "none"},
        "configs": configs,
    }


def hand_worked() -> list[dict[str, Any]]:
    """Three workloads A, B, C × three configurations X = Adam, Y = AdaMod 0.999, Z = AdaMod 0.99.

    steps to target at best lr           lr_sensitivity_norm
          X     Y     Z                        X     Y     Z
    A   100    50    75                  A   0.4   0.2   0.3
    B   200  never  200                  B   0.1   0.0   0.0
    C  never never never                 C   0.6  null   1.0
    """
    a = report("study-a", "digits_mlp", [config(ADAM, steps=100, sens=0.4),
                                         config(ADAMOD, steps=50, sens=0.2),
                                         config(ADAMOD99, steps=75, sens=0.3)])  # fmt: skip
    b = report("study-b", "quadratic", [config(ADAM, steps=200, sens=0.1),
                                        config(ADAMOD, steps=None, sens=0.0),
                                        config(ADAMOD99, steps=200, sens=0.0)])  # fmt: skip
    c = report("study-c", "tiny_transformer", [config(ADAM, steps=None, sens=0.6),
                                               config(ADAMOD, steps=None, sens=None),
                                               config(ADAMOD99, steps=None, sens=1.0)])  # fmt: skip
    return [a, b, c]


def _curve(comparison: Comparison, profile: str, label: str):  # type: ignore[no-untyped-def]
    p = next(p for p in comparison.profiles if p.name == profile)
    return next(c for c in p.curves if c.label == label)


def _rho_at(curve: Any, tau: float) -> float:
    grid = tau_grid()
    return curve.rho[min(range(len(grid)), key=lambda i: abs(grid[i] - tau))]


X, Y, Z = LABELS[ADAM], LABELS[ADAMOD], LABELS[ADAMOD99]
H = 0.01  # the τ grid step: 301 points from 1 to 4


# --------------------------------------------------------------------------- the hand-worked case


def test_steps_profile_matches_the_hand_computation() -> None:
    cmp = compare_reports(hand_worked())
    # Ratios per workload (r = c / min c):
    #   A: min 50  -> X 2,   Y 1,   Z 1.5
    #   B: min 200 -> X 1,   Y ∞,   Z 1
    #   C: min ∞ (nobody reached the target) -> every r is ∞
    costs = {(c.study, c.label): c.ratio for c in cmp.profiles[0].costs}
    assert costs[("study-a", X)] == 2 and costs[("study-a", Y)] == 1
    assert costs[("study-a", Z)] == 1.5
    assert costs[("study-b", X)] == 1 and costs[("study-b", Y)] is None
    assert costs[("study-b", Z)] == 1
    assert all(costs[("study-c", k)] is None for k in (X, Y, Z))
    assert cmp.profiles[0].no_finite_best == ["study-c"]
    # ρ_X: B counts from τ = 1, A from τ = 2:   1/3 on [1, 2), 2/3 on [2, 4]
    # ρ_Y: A from τ = 1:                        1/3 everywhere
    # ρ_Z: B from τ = 1, A from τ = 1.5:        1/3 on [1, 1.5), 2/3 on [1.5, 4]
    x, y, z = (_curve(cmp, "steps_to_target", k) for k in (X, Y, Z))
    assert (_rho_at(x, 1), _rho_at(x, 1.99), _rho_at(x, 2), _rho_at(x, 4)) == (
        1 / 3,
        1 / 3,
        2 / 3,
        2 / 3,
    )
    assert set(y.rho) == {1 / 3}
    assert (_rho_at(z, 1.49), _rho_at(z, 1.5), _rho_at(z, 4)) == (1 / 3, 2 / 3, 2 / 3)
    # Areas by the trapezoid rule on the grid: a workload with r = 1 adds (4 − 1)/3 = 1; one with
    # 1 < r ≤ 4 on a grid point adds (4 − r + H/2)/3 (the jump's trapezoid is half a step wide).
    #   X: 1 + (4 − 2 + 0.005)/3   = 5.005/3 = 1.668333…
    #   Y: 1                        (A only)
    #   Z: 1 + (4 − 1.5 + 0.005)/3 = 5.505/3 = 1.835
    assert x.area == pytest.approx(5.005 / 3, abs=1e-9)
    assert y.area == pytest.approx(1.0, abs=1e-9)
    assert z.area == pytest.approx(5.505 / 3, abs=1e-9)
    assert z.area_normalized == pytest.approx(5.505 / 9, abs=1e-9)
    assert (x.n_best, y.n_best, z.n_best) == (1, 1, 1)
    assert (x.n_finite, y.n_finite, z.n_finite) == (2, 1, 2)


def test_sensitivity_profile_matches_the_hand_computation() -> None:
    cmp = compare_reports(hand_worked())
    # Ratios:
    #   A: min 0.2 -> X 2, Y 1, Z 1.5
    #   B: min 0 (flat curves)  -> X ∞ (0.1 > 0), Y 1, Z 1
    #   C: min 0.6 (Y is null = ∞) -> X 1, Y ∞, Z 1/0.6 = 1.666…
    costs = {(c.study, c.label): c.ratio for c in cmp.profiles[1].costs}
    assert costs[("study-b", X)] is None and costs[("study-b", Y)] == 1
    assert costs[("study-c", Y)] is None
    assert costs[("study-c", Z)] == pytest.approx(1 / 0.6)
    assert (
        next(c for c in cmp.profiles[1].costs if c.study == "study-c" and c.label == Y).cost is None
    )
    x, y, z = (_curve(cmp, "lr_sensitivity", k) for k in (X, Y, Z))
    # ρ_X: C from 1, A from 2;  ρ_Y: A and B from 1;  ρ_Z: B from 1, A from 1.5, C from 1.67
    assert (_rho_at(x, 1), _rho_at(x, 2)) == (1 / 3, 2 / 3)
    assert set(y.rho) == {2 / 3}
    assert (_rho_at(z, 1.5), _rho_at(z, 1.66), _rho_at(z, 1.67)) == (2 / 3, 2 / 3, 1.0)
    # Areas:
    #   X: 1 + (2 + 0.005)/3                    = 5.005/3
    #   Y: 2 · 1                                = 2
    #   Z: 1 + (2.5 + 0.005)/3 + (4 − 1.67 + 0.005)/3, as 5/3 lies between the grid points 1.66
    #      and 1.67 and the first τ with r ≤ τ is 1.67:  (3 + 2.505 + 2.335)/3 = 7.84/3
    assert x.area == pytest.approx(5.005 / 3, abs=1e-9)
    assert y.area == pytest.approx(2.0, abs=1e-9)
    assert z.area == pytest.approx(7.84 / 3, abs=1e-9)
    assert (x.n_best, y.n_best, z.n_best) == (1, 2, 1)


def test_table_has_one_row_per_study_and_configuration() -> None:
    cmp = compare_reports(hand_worked())
    assert [s.name for s in cmp.studies] == ["study-a", "study-b", "study-c"]
    assert [s.workload for s in cmp.studies] == ["digits_mlp", "quadratic", "tiny_transformer"]
    assert [c.label for c in cmp.configs] == [X, Y, Z]
    assert len(cmp.table) == 9
    row = next(r for r in cmp.table if r.study == "study-a" and r.label == Z)
    assert (row.steps_to_target, row.lr_sensitivity_norm, row.best_loss) == (75, 0.3, 0.1)
    assert (row.good_lr_decades, row.target_loss, row.target_source) == (1.0, 0.2, "reference")
    assert row.in_profiles and row.workload == "digits_mlp"
    assert cmp.not_in_every_study == []
    assert len(cmp.profiles[0].tau) == TAU_POINTS
    assert cmp.profiles[0].tau[0] == 1.0 and cmp.profiles[0].tau[-1] == 4.0
    assert "ratio" in cmp.definitions and "trapezoid" in cmp.definitions["area"]


def test_names_override_the_spec_names_and_the_result_round_trips_through_json() -> None:
    cmp = compare_reports(hand_worked(), names=["#1 a", "#2 b", "#3 c"])
    assert [s.name for s in cmp.studies] == ["#1 a", "#2 b", "#3 c"]
    assert cmp.studies[0].study_name == "study-a"
    dumped = json.loads(json.dumps(cmp.model_dump(mode="json"), allow_nan=False))
    assert Comparison.model_validate(dumped) == cmp


# --------------------------------------------------------------------------- edge cases


def test_nobody_reaches_the_target_anywhere_gives_zero_areas() -> None:
    reports = [
        report(n, "quadratic", [config(ADAM, steps=None, sens=0.5),
                                config(ADAMOD, steps=None, sens=0.25)])
        for n in ("one", "two")
    ]  # fmt: skip
    cmp = compare_reports(reports)
    steps = cmp.profiles[0]
    assert steps.no_finite_best == ["one", "two"]
    assert all(c.area == 0 and set(c.rho) == {0.0} for c in steps.curves)
    assert all(c.ratio is None and c.cost is None for c in steps.costs)
    # The sensitivity profile is unaffected: AdaMod best on both, Adam at ratio 2.
    sens = {c.label: c for c in cmp.profiles[1].curves}
    assert sens[Y].area == pytest.approx(3.0)
    assert sens[X].area == pytest.approx(4 - 2 + 0.005)
    assert any("every configuration's cost is ∞" in n for n in cmp.notes)


def test_a_study_without_a_target_counts_as_never_reached() -> None:
    reports = [
        report("t", "quadratic", [config(ADAM, steps=10, sens=0.5),
                                  config(ADAMOD, steps=20, sens=0.25)]),
        report("none", "digits_mlp", [config(ADAM, steps=None, sens=0.5),
                                      config(ADAMOD, steps=None, sens=0.25)], target=None),
    ]  # fmt: skip
    cmp = compare_reports(reports)
    assert cmp.studies[1].target_source == "none" and cmp.studies[1].target_loss is None
    assert any("no target" in n for n in cmp.notes)
    assert cmp.profiles[0].no_finite_best == ["none"]


def test_null_and_non_finite_sensitivity_count_as_infinite() -> None:
    reports = [
        report("a", "quadratic", [config(ADAM, steps=10, sens=None),
                                  config(ADAMOD, steps=10, sens=0.3)]),
        report("b", "digits_mlp", [config(ADAM, steps=10, sens=float("nan")),
                                   config(ADAMOD, steps=10, sens=0.3)]),
    ]  # fmt: skip
    cmp = compare_reports(reports)
    sens = {c.label: c for c in cmp.profiles[1].curves}
    assert sens[X].n_finite == 0 and sens[X].area == 0
    assert sens[Y].area == pytest.approx(3.0)
    assert all(r.lr_sensitivity_norm is None for r in cmp.table if r.label == X)
    # Equal steps everywhere: both are the best (ratio 1) on both workloads.
    assert {c.label: c.area for c in cmp.profiles[0].curves} == {X: 3.0, Y: 3.0}


def test_a_configuration_missing_from_one_study_is_listed_not_profiled() -> None:
    reports = hand_worked()
    extra = config(ADAM, steps=10, sens=0.01, warmup=500, label="Adam, warmup 500")
    reports[0]["configs"].append(extra)
    reports[1]["configs"].append(dict(extra))
    cmp = compare_reports(reports)
    assert [c.label for c in cmp.configs] == [X, Y, Z]
    (missing,) = cmp.not_in_every_study
    assert missing.label == "Adam, warmup 500" and missing.warmup_steps == 500
    assert missing.in_studies == ["study-a", "study-b"] and missing.missing_from == ["study-c"]
    rows = [r for r in cmp.table if r.label == "Adam, warmup 500"]
    assert len(rows) == 2 and not any(r.in_profiles for r in rows)
    # The profiles are those of the hand-worked case: the extra configuration changes nothing.
    assert _curve(cmp, "steps_to_target", X).area == pytest.approx(5.005 / 3, abs=1e-9)


def test_configurations_match_on_schedule_and_beta3_and_the_first_label_is_shown() -> None:
    a = report(
        "a",
        "quadratic",
        [
            config(ADAM, steps=10, sens=0.2),
            config(("adamod", 0.999), steps=10, sens=0.1, label="first"),
        ],
    )
    b = report("b", "quadratic", [config(ADAM, steps=10, sens=0.2, schedule="cosine"),
                                  config(("adamod", 0.999 + 1e-15), steps=10, sens=0.1,
                                         label="second")])  # fmt: skip
    cmp = compare_reports([a, b])
    assert [c.label for c in cmp.configs] == ["first"]
    assert {m.schedule for m in cmp.not_in_every_study} == {"constant", "cosine"}
    # Same study names twice are told apart by position.
    same = compare_reports([a, a])
    assert [s.name for s in same.studies] == ["a [1]", "a [2]"]


def test_steps_to_target_is_read_at_the_best_lr_only() -> None:
    c = config(ADAM, steps=None, sens=0.1, best_lr=1e-1)
    c["curve"][0]["steps_to_target"] = 5  # at lr 1e-3, not the best lr
    other = config(ADAM, steps=40, sens=0.1)
    cmp = compare_reports([report("a", "q", [c]), report("b", "q", [other])])
    assert [r.steps_to_target for r in cmp.table] == [None, 40]


def test_partial_studies_are_noted() -> None:
    reports = hand_worked()
    reports[2]["status"], reports[2]["complete"] = "running", False
    cmp = compare_reports(reports)
    assert cmp.studies[2].complete is False
    assert any("study-c is not complete (status running)" in n for n in cmp.notes)


@pytest.mark.parametrize(
    ("reports", "names", "message"),
    [
        ([], None, r"^reports must hold at least 2"),
        ([report("a", "q", [config(ADAM, steps=1, sens=0.1)])], None, r"^reports must hold"),
        ("not a list", None, r"^reports must be a sequence"),
        ({"configs": []}, None, r"^reports must be a sequence"),
        ([report("a", "q", [config(ADAM, steps=1, sens=0.1)]),
          report("b", "q", [config(ADAMOD, steps=1, sens=0.1)])], None,
         r"^reports share no configuration"),
        ([report("a", "q", [config(ADAM, steps=1, sens=0.1)]), report("b", "q", [])], None,
         r"^reports share no configuration .*b have no configuration"),
        ([report("a", "q", []), 42], None, r"^reports\[1\] must be a report dict"),
        ([report("a", "q", []), {"status": "completed"}], None, r"^reports\[1\]\.configs"),
        ([report("a", "q", [{"beta3": None}]), report("b", "q", [])], None,
         r"^reports\[0\]\.configs\[0\]\.optimizer"),
        ([report("a", "q", [config(ADAM, steps=1, sens=0.1)])] * 2, ["x"], r"^names must have"),
        ([report("a", "q", [config(ADAM, steps=1, sens=0.1)])] * 2, ["x", "x"], r"^names must be"),
    ],
)  # fmt: skip
def test_bad_input_is_a_value_error_naming_the_argument(
    reports: Any, names: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        compare_reports(reports, names)


# --------------------------------------------------------------------------- the maths alone


def test_ratio_edge_cases() -> None:
    inf = math.inf
    assert profile_ratios([2.0, 4.0, inf]) == [1.0, 2.0, inf]
    assert profile_ratios([inf, inf]) == [inf, inf]
    assert profile_ratios([0.0, 0.0, 0.5]) == [1.0, 1.0, inf]
    assert profile_ratios([]) == []


def test_rho_and_area_of_a_known_step_function() -> None:
    tau = tau_grid()
    rho = rho_curve([1.0, 3.0, math.inf, 10.0], tau)
    assert rho[0] == 0.25 and rho[-1] == 0.5
    assert rho[tau.index(min(tau, key=lambda t: abs(t - 3.0)))] == 0.5
    # Exact integral 0.25·3 + 0.25·1 = 1.0; the trapezoid adds half a step at the jump at 3.
    assert trapezoid_area(rho, tau) == pytest.approx(1.0 + 0.25 * H / 2, abs=1e-12)


# --------------------------------------------------------------------------- rendering


def test_profiles_png_and_html_page() -> None:
    reports = hand_worked()
    reports[0]["spec"]["name"] = "<script>alert(1)</script>"
    reports[0]["configs"][0]["label"] = "Adam & <b>"
    cmp = compare_reports(reports)
    png = render_profiles(cmp)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    page = render_compare_html(cmp)
    assert page.startswith("<!DOCTYPE html>")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Adam &amp; &lt;b&gt;" in page
    assert "data:image/png;base64," in page and 'src="http' not in page
    assert "study-b" in page and "never" in page and "trapezoid" in page
    with pytest.raises(ValueError, match="comparison must be a Comparison"):
        render_profiles({"studies": []})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the CLI


def _write_runs(tmp_path: Path) -> list[Path]:
    dirs = []
    for r in hand_worked()[:2]:
        d = tmp_path / r["spec"]["name"]
        d.mkdir()
        (d / "report.json").write_text(json.dumps(r), encoding="utf-8")
        dirs.append(d)
    return dirs


def test_cli_compare_writes_json_png_and_html(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dirs = _write_runs(tmp_path)
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, dirs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("compare.json", "profiles.png", "compare.html"):
        assert (out / name).exists() and str(out / name) in printed
    data = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert [s["name"] for s in data["studies"]] == ["study-a", "study-b"]
    assert (out / "profiles.png").read_bytes().startswith(b"\x89PNG")


def test_cli_compare_default_out_is_compare_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dirs = _write_runs(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["compare", *map(str, dirs)]) == 0
    assert (tmp_path / "compare" / "compare.json").exists()


@pytest.mark.parametrize("problem", ["missing", "not json", "not a report", "one dir", "no match"])
def test_cli_compare_bad_directories_exit_2_naming_them(
    tmp_path: Path, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _write_runs(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    args = [str(good[0]), str(bad)]
    if problem == "not json":
        (bad / "report.json").write_text("{nope", encoding="utf-8")
    elif problem == "not a report":
        (bad / "report.json").write_text("[1, 2]", encoding="utf-8")
    elif problem == "one dir":
        args = [str(good[0])]
    elif problem == "no match":
        r = report("other", "q", [config(("sgd", None), steps=1, sens=0.1, label="SGD")])
        (bad / "report.json").write_text(json.dumps(r), encoding="utf-8")
    code = main(["compare", *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "error" in err
    if problem in ("missing", "not json", "not a report"):
        assert str(bad) in err
    assert not (tmp_path / "out" / "compare.json").exists()


# --------------------------------------------------------------------------- the CPU suite

SUITE = Path(studies.__file__).parent / "presets" / "suite_cpu"
SUITE_FILES = sorted(p.name for p in SUITE.glob("*.yaml"))


def test_the_cpu_suite_is_four_workloads_on_one_grid() -> None:
    specs = [yaml.safe_load((SUITE / name).read_text(encoding="utf-8")) for name in SUITE_FILES]
    assert sorted(s["workload"] for s in specs) == [
        "digits_mlp", "mnist1d", "quadratic", "tiny_transformer"
    ]  # fmt: skip
    # Identical optimizer axes, so every configuration is in every study (all of them profiled).
    axes = {(tuple(s["optimizers"]), tuple(s["beta3"]), tuple(s["warmup_steps"]),
             tuple(s["schedule"]), s["seeds"]) for s in specs}  # fmt: skip
    assert axes == {(("adam", "adamod"), (0.999, 0.99), (0,), ("constant",), 6)}
    assert "python -m studies compare runs/suite/*" in (SUITE / SUITE_FILES[0]).read_text()


@pytest.mark.parametrize("name", SUITE_FILES)
def test_cpu_suite_presets_are_valid(name: str) -> None:
    workload = yaml.safe_load((SUITE / name).read_text(encoding="utf-8"))["workload"]
    if workload not in {w.name for w in list_workloads()}:
        pytest.skip(f"workload {workload!r} is not registered yet")
    spec = load_spec(SUITE / name)
    lrs = spec.lr.values()
    assert len(lrs) == 7 and math.log10(max(lrs) / min(lrs)) >= 3 - 1e-9
    assert spec.n_trials == 3 * 7 * 6

"""Figures of report v2: the data each one draws, and valid PNGs for every kind of study."""

from __future__ import annotations

import dataclasses
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from matplotlib import image as mpimg
from matplotlib.figure import Figure

from studies.analysis.models import Target
from studies.analysis.synthetic import synthetic_records
from studies.plots import (
    PLOT_NAMES,
    budget_k_axis,
    budget_lines,
    lr_curve_panels,
    render_plot,
    surface_panels,
    target_label,
    warmup_panels,
)
from studies.records import TrialRecord
from studies.report import build_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LRS = list(np.geomspace(1e-4, 1e-1, 5))


def records(seeds: int, **kwargs) -> list[TrialRecord]:
    """A small synthetic grid: Adam and AdaMod (2 β3), warmup 0 and 500, 5 lrs."""
    return synthetic_records(seeds=seeds, lrs=LRS, beta3s=(0.99, 0.999), **kwargs)


def cancelled_records() -> list[TrialRecord]:
    """Six seeds with some trials cancelled and some failed (with an error)."""
    out = []
    for i, r in enumerate(records(6)):
        if i % 7 == 0:
            r = dataclasses.replace(r, state="cancelled", loss=None)
        elif i % 11 == 0:
            r = dataclasses.replace(r, state="failed", loss=None, error="RuntimeError: boom")
        out.append(r)
    return out


NORMAL = build_report(records(6))
TWO_SEEDS = build_report(records(2))
EMPTY = build_report([])
CANCELLED = build_report(cancelled_records())
REPORTS = {"normal": NORMAL, "two-seeds": TWO_SEEDS, "empty": EMPTY, "cancelled": CANCELLED}


def png_shape(data: bytes) -> tuple[int, ...]:
    """Decode a PNG and return its array shape (height, width, channels)."""
    assert data[:8] == PNG_SIGNATURE
    return mpimg.imread(io.BytesIO(data), format="png").shape


def rec(opt, lr, seed, loss, *, beta3=None, warmup=0, state="completed", loss0=2.0, **kw):
    """One trial record."""
    return TrialRecord(opt, lr, beta3, warmup, seed, state, loss, loss0, **kw)


def test_lr_curve_panels_one_per_warmup_and_schedule_with_every_seed():
    cosine = [dataclasses.replace(r, schedule="cosine") for r in records(2, warmups=(0,))]
    report = build_report([*records(2, warmups=(0,)), *cosine])
    panels = lr_curve_panels(report)
    assert [p.title for p in panels] == [
        "no warmup, constant schedule · 2 seeds",
        "no warmup, cosine schedule · 2 seeds",
    ]
    adam = panels[0].lines[0]
    assert adam.label == "Adam" and adam.lrs == pytest.approx(LRS)
    config = report.configs[0]
    # every (lr, seed) result is a point; diverged ones are flagged and sit at loss0
    assert len(adam.seed_lrs) == sum(len(p.seed_values) for p in config.curve)
    values = [v for p in config.curve for v in p.seed_values]
    assert adam.seed_losses == [v.loss for v in values]
    assert adam.seed_diverged == [v.diverged for v in values]
    assert all(-0.5 <= s <= 0.5 for s in adam.seed_slots)
    assert [ln.label for ln in panels[0].lines] == ["Adam", "AdaMod β3=0.99", "AdaMod β3=0.999"]
    assert panels[0].lines[1].shade != panels[0].lines[2].shade  # β3 values in distinct shades
    assert panels[0].target == report.target.loss


def test_target_label_names_value_and_source():
    assert target_label(Target(loss=0.42, source="spec")) == "target 0.42 (spec)"
    ref = Target(loss=0.42, source="reference", config="Adam, warmup 0")
    assert target_label(ref) == "target 0.42 (reference: 10% band of Adam, warmup 0)"
    assert target_label(ref, wrap=True) == "target 0.42\n(reference: 10% band of Adam, warmup 0)"
    assert target_label(Target(loss=None, source="none")) is None


def test_surface_panels_per_optimizer_warmup_and_schedule():
    panels = surface_panels(NORMAL)
    assert [p.title for p in panels] == [
        "AdaMod, no warmup, constant schedule",
        "AdaMod, 500 warmup steps, constant schedule",
    ]
    for p, s in zip(panels, NORMAL.surfaces, strict=True):
        row, col = p.best
        assert p.values[row][col] == pytest.approx(s.best_loss) == pytest.approx(p.best_loss)
        assert p.beta3s == [0.99, 0.999]


def test_warmup_panels_show_each_warmup_the_reference_with_warmup_and_implicit_warmup():
    recs = [
        dataclasses.replace(r, bound_release_step=420.0) if r.optimizer == "adamod" else r
        for r in records(2)
    ]
    panels = warmup_panels(build_report(recs))
    assert [p.title for p in panels] == [
        "Adam, constant schedule",
        "AdaMod β3=0.99, constant schedule",
        "AdaMod β3=0.999, constant schedule",
    ]
    assert [ln.label for ln in panels[0].lines] == ["no warmup", "500 warmup steps"]
    assert panels[0].note is None
    adamod = panels[1]
    assert [ln.label for ln in adamod.lines] == [
        "no warmup",
        "500 warmup steps",
        "Adam, 500 warmup steps (reference)",
    ]
    assert adamod.note is not None and "420 steps measured" in adamod.note
    assert "1/(1−β3) = 100" in adamod.note
    # the same warmup has the same colour in every panel (one shared legend)
    assert panels[0].lines[1].color == adamod.lines[1].color != adamod.lines[0].color


def test_warmup_note_without_telemetry_says_not_measured():
    panels = warmup_panels(NORMAL)
    assert "not measured" in panels[1].note


def test_budget_lines_one_per_configuration_label():
    lines = budget_lines(NORMAL)
    assert [ln.label for ln in lines] == [b.label for b in NORMAL.budget]
    assert [ln.label for ln in lines] == [c.label for c in NORMAL.configs]
    first = lines[0]
    assert first.n_trials == 5 * 6 and first.k == list(range(1, 31))
    assert all(isinstance(k, int) for ln in lines for k in ln.k)
    # dashed lines for warmup, solid without
    assert {ln.style for ln in lines if "warmup 0" in ln.label} == {"-"}
    assert {ln.style for ln in lines if "warmup 500" in ln.label} == {"--"}


@pytest.mark.parametrize("kind", list(REPORTS))
@pytest.mark.parametrize("name", PLOT_NAMES)
def test_every_figure_renders_a_valid_png(name, kind):
    height, width, _ = png_shape(render_plot(REPORTS[kind], name))
    if kind == "empty":
        assert width >= 600 and height >= 200  # the "no data: why" figure
    else:
        assert width >= 900 and height >= 350  # readable at 100% zoom


@pytest.mark.parametrize("name", PLOT_NAMES)
@pytest.mark.parametrize(
    "recs",
    [
        [rec("sgd", 1e-2, 0, 1.0)],  # a single point, no surface, no warmup pair
        [rec("adam", 1e-2, s, None, state="diverged") for s in range(3)],  # all diverged
        [rec("adamod", 1e-2, 0, 1.0, beta3=0.9, loss0=None)],  # no loss0
        [rec("adam", 1e-2, 0, None, state="failed", error="x")],  # nothing but a failure
    ],
    ids=["single-point", "all-diverged", "no-loss0", "only-failed"],
)
def test_degenerate_reports_render_without_raising(name, recs):
    height, width, _ = png_shape(render_plot(build_report(recs, status="running"), name))
    assert width > 300 and height > 150


@pytest.mark.parametrize("k_max", [5, 30, 300, 5000])
def test_budget_k_axis_has_integer_ticks_and_is_logarithmic_for_many_trials(k_max):
    fig = Figure()
    ax = fig.subplots()
    ax.plot(range(1, k_max + 1), np.linspace(1, 0, k_max))
    budget_k_axis(ax, k_max)
    ticks = [t for t in ax.get_xticks() if 1 <= t <= k_max]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert ax.get_xscale() == ("log" if k_max > 40 else "linear")


def test_large_budget_renders():
    report = build_report(synthetic_records(seeds=30, lrs=list(np.geomspace(1e-4, 1e-1, 10))))
    assert max(b.n_trials for b in report.budget) == 300
    _height, width, _ = png_shape(render_plot(report, "budget"))
    assert width >= 900


def test_unknown_name_and_bad_report_raise_value_error():
    with pytest.raises(ValueError, match="'nope'"):
        render_plot(NORMAL, "nope")
    with pytest.raises(ValueError, match="report"):
        render_plot({"configs": []}, "lr_curves")  # type: ignore[arg-type]


def test_rendering_from_many_threads_gives_the_same_png_as_one_thread():
    """The service renders in a thread pool: figures must not interfere with each other."""
    expected = {name: render_plot(TWO_SEEDS, name) for name in PLOT_NAMES}
    jobs = [name for name in PLOT_NAMES for _ in range(2)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda name: render_plot(TWO_SEEDS, name), jobs))
    assert results == [expected[name] for name in jobs]

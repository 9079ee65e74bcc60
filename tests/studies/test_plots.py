"""Figures: the data each one draws, and valid PNGs for full, partial and empty reports."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pytest
from matplotlib import image as mpimg

from studies.plots import (
    PLOT_NAMES,
    budget_lines,
    lr_curve_panels,
    render_plot,
    surface_panels,
    warmup_panels,
)
from studies.records import TrialRecord
from studies.report import build_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def rec(opt, lr, seed, loss, *, beta3=None, warmup=0, state="completed", loss0=2.0):
    """One trial record."""
    return TrialRecord(opt, lr, beta3, warmup, seed, state, loss, loss0)


RECORDS = [
    rec("adam", 1e-3, 0, 1.0), rec("adam", 1e-3, 1, 1.2),
    rec("adam", 1e-2, 0, 0.5), rec("adam", 1e-2, 1, None, state="diverged"),
    rec("adam", 1e-3, 0, 0.8, warmup=100), rec("adam", 1e-2, 0, 0.4, warmup=100),
    rec("adamod", 1e-3, 0, 0.6, beta3=0.99), rec("adamod", 1e-2, 0, 0.55, beta3=0.99),
    rec("adamod", 1e-3, 0, 0.5, beta3=0.999), rec("adamod", 1e-3, 1, 0.52, beta3=0.999),
]  # fmt: skip
REPORT = build_report(RECORDS, n_bootstrap=20)


def png_shape(data: bytes) -> tuple[int, ...]:
    """Decode a PNG and return its array shape (height, width, channels)."""
    assert data[:8] == PNG_SIGNATURE
    return mpimg.imread(io.BytesIO(data), format="png").shape


def test_lr_curve_panels_data():
    panels = lr_curve_panels(REPORT)
    assert [p.title for p in panels] == ["no warmup", "warmup 100 steps"]
    adam = panels[0].lines[0]
    assert adam.label == "Adam" and adam.lrs == [1e-3, 1e-2]
    assert adam.median == pytest.approx([1.1, 1.25])  # seed 1 diverged at 1e-2: counts as 2.0
    assert adam.diverged_lrs == [1e-2] and adam.diverged_medians == pytest.approx([1.25])
    assert [ln.label for ln in panels[0].lines] == ["Adam", "AdaMod β3=0.99", "AdaMod β3=0.999"]
    assert panels[0].loss0 == 2.0
    # two β3 values of one optimizer get different shades of its colour family
    assert panels[0].lines[1].shade != panels[0].lines[2].shade


def test_surface_panels_data():
    (panel,) = surface_panels(REPORT)
    assert panel.title == "AdaMod, no warmup"
    assert panel.lrs == [1e-3, 1e-2] and panel.beta3s == [0.99, 0.999]
    assert panel.values == [[0.6, 0.55], [pytest.approx(0.51), None]]
    assert panel.best == (1, 0) and panel.best_loss == pytest.approx(0.51)


def test_warmup_panels_data():
    (panel,) = warmup_panels(REPORT)
    assert panel.title == "Adam"
    assert [ln.label for ln in panel.lines] == ["no warmup", "warmup 100 steps"]
    assert panel.lines[1].median == [0.8, 0.4]


def test_budget_lines_data():
    lines = budget_lines(REPORT)
    assert [ln.optimizer for ln in lines] == ["adam", "adamod"]
    assert lines[0].label == "Adam (4 configurations)" and lines[0].k == [1, 2, 3, 4]
    assert lines[1].expected_best[-1] == pytest.approx(0.51)


@pytest.mark.parametrize("name", PLOT_NAMES)
def test_each_figure_renders_a_readable_png(name):
    height, width, _ = png_shape(render_plot(REPORT, name))
    assert width >= 600 and height >= 400  # big enough to read at 100% zoom


@pytest.mark.parametrize("name", PLOT_NAMES)
@pytest.mark.parametrize(
    "records",
    [
        [],
        [rec("sgd", 1e-2, 0, 1.0)],  # a single point, no surface, no warmup pair
        [rec("adam", 1e-2, s, None, state="diverged") for s in range(3)],  # all diverged
        [rec("adamod", 1e-2, 0, 1.0, beta3=0.9, loss0=None)],  # no loss0
    ],
    ids=["empty", "single-point", "all-diverged", "no-loss0"],
)
def test_partial_reports_render_without_raising(name, records):
    height, width, _ = png_shape(render_plot(build_report(records, complete=False), name))
    assert width > 300 and height > 150


def test_unknown_name_and_bad_report_raise_value_error():
    with pytest.raises(ValueError, match="'nope'"):
        render_plot(REPORT, "nope")
    with pytest.raises(ValueError, match="report"):
        render_plot({"configs": []}, "lr_curves")  # type: ignore[arg-type]


def test_rendering_from_many_threads_gives_the_same_png_as_one_thread():
    """The service renders in a thread pool: figures must not interfere with each other."""
    expected = {name: render_plot(REPORT, name) for name in PLOT_NAMES}
    jobs = [name for name in PLOT_NAMES for _ in range(2)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda name: render_plot(REPORT, name), jobs))
    assert results == [expected[name] for name in jobs]

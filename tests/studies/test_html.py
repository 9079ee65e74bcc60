"""The HTML page of report v2: self-contained, truthful about the study, and escaped."""

from __future__ import annotations

import base64
import dataclasses
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from studies.analysis.synthetic import synthetic_records
from studies.html import render_html
from studies.plots import PLOT_NAMES, render_plot
from studies.records import TrialRecord
from studies.report import build_report

EVIL = "<script>alert(1)</script>"
LRS = list(np.geomspace(1e-4, 1e-1, 5))
SPEC = {
    "name": "quick",
    "workload": "quadratic",
    "workload_config": {"dim": 32, "noise": 0.3},
    "optimizers": ["adam", "adamod"],
    "reference": None,
    "lr": {"min": 1e-4, "max": 1e-1, "points": 5, "values": None},
    "beta3": [0.99, 0.999],
    "warmup_steps": [0, 500],
    "schedule": ["constant"],
    "seeds": 6,
    "budget": {"epochs": None, "steps": 300},
    "betas": [0.9, 0.999],
    "eps": 1e-8,
    "weight_decay": 0.0,
    "target_loss": None,
}


def records(seeds: int) -> list[TrialRecord]:
    """Adam and AdaMod (2 β3), warmup 0 and 500, 5 lrs, with test losses."""
    return synthetic_records(seeds=seeds, lrs=LRS, beta3s=(0.99, 0.999))


def with_states(recs: list[TrialRecord], *, error: str = "RuntimeError: boom") -> list:
    """Some trials cancelled, some failed (with `error`), one with a long traceback."""
    out = []
    for i, r in enumerate(recs):
        if i % 7 == 0:
            r = dataclasses.replace(r, state="cancelled", loss=None)
        elif i % 11 == 0:
            r = dataclasses.replace(r, state="failed", loss=None, trial_id=i, error=error)
        elif i == 1:
            long = "Traceback (most recent call last):\n" + '  File "x.py", line 1\n' * 20
            r = dataclasses.replace(r, state="failed", loss=None, trial_id=i, error=long + error)
        out.append(r)
    return out


NORMAL = build_report(records(6), spec=SPEC)
TWO_SEEDS = build_report(records(2), spec={**SPEC, "seeds": 2})
CANCELLED = build_report(with_states(records(6)), spec=SPEC)
# A tiny valid PNG for the tests that are not about figures (rendering them is slow).
PNG = render_plot(build_report([]), "budget")
FIGURES = dict.fromkeys(PLOT_NAMES, PNG)


class Page(HTMLParser):
    """Counts tags, collects img sources and the text of <header>, without a browser."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: dict[str, int] = {}
        self.ends: dict[str, int] = {}
        self.images: list[str] = []
        self.header = ""
        self._in_header = False

    def handle_starttag(self, tag, attrs):
        self.starts[tag] = self.starts.get(tag, 0) + 1
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag == "header":
            self._in_header = True

    def handle_endtag(self, tag):
        self.ends[tag] = self.ends.get(tag, 0) + 1
        if tag == "header":
            self._in_header = False

    def handle_data(self, data):
        if self._in_header:
            self.header += data


def parse(page: str) -> Page:
    """Parse a page and return what it found."""
    p = Page()
    p.feed(page)
    p.close()
    return p


def test_page_is_self_contained_with_inline_figures_and_balanced_tags():
    page = render_html(NORMAL, "Quick study")
    tags = parse(page)
    for tag in ("table", "tr", "td", "figure", "ul", "dl", "details", "html", "body", "header"):
        assert tags.starts.get(tag) == tags.ends.get(tag), tag
    assert len(tags.images) == len(PLOT_NAMES)
    for src in tags.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<title>Quick study</title>" in page
    assert not re.search(r'(src|href)="(?!data:|https://)', page)  # nothing fetched from elsewhere


def test_given_figures_are_inlined_instead_of_rendered():
    page = render_html(NORMAL, "x", figures=FIGURES)
    encoded = base64.b64encode(PNG).decode("ascii")
    assert page.count(encoded) == len(PLOT_NAMES)
    with pytest.raises(ValueError, match="figures"):
        render_html(NORMAL, "x", figures=[PNG])  # type: ignore[arg-type]


def test_completed_study_shows_status_spec_environment_tables_and_definitions():
    page = render_html(NORMAL, "Quick study", figures=FIGURES)
    tags = parse(page)
    assert "completed" in tags.header and "partial" not in tags.header
    # the spec and the grid as asked and as run
    for text in ("quadratic", "dim = 32", "300 steps", "5 log-spaced from 0.0001 to 0.1",
                 "0.99, 0.999", "Adam — no weight decay", "6 (0, 1, 2, 3, 4, 5)"):  # fmt: skip
        assert text in page, text
    assert f"{NORMAL.target.loss:.4g} (reference" in page
    # findings: every headline sentence
    for line in NORMAL.headline:
        assert line.replace("'", "&#x27;") in page
    # comparisons: one row each with both intervals, per-lr sub-table in a <details>
    assert page.count('class="ci"') == len(NORMAL.comparisons) + len(NORMAL.best_vs_best)
    c = NORMAL.comparisons[0]
    assert f"t [{c.ci_t.low:+.3g}, {c.ci_t.high:+.3g}]" in page
    assert f"bootstrap [{c.ci_bootstrap.low:+.3g}, {c.ci_bootstrap.high:+.3g}]" in page
    assert "0 vs 500" in page  # the no-warmup-vs-warmup comparison names both warmups
    assert "both failed to learn" in page and "Holm p" in page
    # configurations: test loss at the best lr (the synthetic workload has a test split)
    assert NORMAL.test_split and "test loss at best lr" in page and "no test split" not in page
    assert f"{NORMAL.configs[0].test_loss_at_best:.3g}" in page
    assert "resolution (grid spacing, decades)" in page
    # the definitions, in a <details> at the end
    defs = page[page.index('id="definitions"') :]
    assert "<details>" in defs
    for key in NORMAL.definitions:
        assert f"<dt>{key}</dt>" in defs
    assert "https://arxiv.org/abs/2004.13705" in defs


def test_per_seed_values_of_the_curves_are_not_dumped_into_the_page():
    page = render_html(NORMAL, "x", figures=FIGURES)
    one = NORMAL.configs[0].curve[0].seed_values[0].loss
    assert f"{one!r}" not in page and "seed_values" not in page


def test_cancelled_study_says_cancelled_never_complete_and_lists_failures():
    page = render_html(CANCELLED, "Cancelled study", figures=FIGURES)
    tags = parse(page)
    assert CANCELLED.status == "cancelled" and not CANCELLED.complete
    assert "cancelled" in tags.header and "partial" in tags.header
    assert "complete" not in tags.header.lower()
    assert 'class="badge status-ok"' not in page
    counts = CANCELLED.counts
    assert f"{counts['cancelled']} were cancelled" in page
    # the failures table: trial id, params, error; the long traceback collapsed in a <details>
    assert f"Failures ({counts['failed']})" in page
    failure = next(f for f in CANCELLED.failures if f.trial_id == 11)
    assert "optimizer=adam" in page and "<code>RuntimeError: boom</code>" in page
    assert failure.error == "RuntimeError: boom"
    assert re.search(r"<details><summary><code>RuntimeError: boom</code></summary><pre>Trace", page)
    # comparisons count their missing cells and list them
    c = CANCELLED.comparisons[0]
    assert c.n_missing > 0 and f"{c.n_missing} missing cells (not in the test)" in page


@pytest.mark.parametrize("status", ["running", "queued", "failed"])
def test_unfinished_statuses_are_partial_reports(status):
    report = build_report(records(2), status=status)
    header = parse(render_html(report, "x", figures=FIGURES)).header
    assert f"{status} — partial report" in header and "complete" not in header.lower()


def test_two_seed_study_is_underpowered_and_shows_no_interval():
    page = render_html(TWO_SEEDS, "Two seeds", figures=FIGURES)
    assert TWO_SEEDS.comparisons and all(c.underpowered for c in TWO_SEEDS.comparisons)
    assert all(c.ci_t is None and c.ci_bootstrap is None for c in TWO_SEEDS.comparisons)
    assert "underpowered: 2 seeds, smallest possible p = 0.5, needs ≥ 6 seeds" in page
    assert 'class="ci"' not in page and "t [" not in page and "bootstrap [" not in page
    d = TWO_SEEDS.comparisons[0].per_seed_d
    assert f"seed {d[0].seed}: {d[0].d:+.3g}, seed {d[1].seed}: {d[1].d:+.3g}" in page


def test_no_test_split_is_said():
    recs = [dataclasses.replace(r, test_loss=None) for r in records(2)]
    report = build_report(recs)
    assert not report.test_split
    page = render_html(report, "x", figures=FIGURES)
    assert "no test split" in page.lower()
    assert "test loss at best lr" not in page and "mean test Δ" not in page
    assert "No spec was given" in page  # and the grid comes from the results


def test_empty_report_renders_a_page():
    page = render_html(build_report([]), "empty")
    assert "No completed or diverged trials yet" in page
    assert len(parse(page).images) == len(PLOT_NAMES)


def test_user_strings_are_escaped():
    recs = with_states(records(2), error=f"ValueError: {EVIL}")
    recs.append(TrialRecord(EVIL, 1e-3, None, 0, 0, "completed", 1.0, 2.0))
    spec = {**SPEC, "workload": EVIL, "workload_config": {EVIL: EVIL}}
    report = build_report(recs, spec=spec, environment={"host": EVIL})
    page = render_html(report, f"study {EVIL}", figures=FIGURES)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("&lt;script&gt;") >= 6  # title ×2, error, optimizer label, spec, env


def test_bad_arguments_name_the_argument():
    report = build_report([])
    with pytest.raises(ValueError, match="title"):
        render_html(report, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="report"):
        render_html({}, "x")  # type: ignore[arg-type]

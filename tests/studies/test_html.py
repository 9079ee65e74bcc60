"""The HTML page: self-contained, with tables, inline figures, definitions, and escaped strings."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import pytest

from studies.html import render_html
from studies.plots import PLOT_NAMES
from studies.records import TrialRecord
from studies.report import build_report

EVIL = "<script>alert(1)</script>"


def rec(opt, lr, seed, loss, *, beta3=None, warmup=0, state="completed"):
    """One trial record with loss0 = 2."""
    return TrialRecord(opt, lr, beta3, warmup, seed, state, loss, 2.0)


RECORDS = [
    rec("adam", lr, s, loss + 0.01 * s)
    for lr, loss in ((1e-3, 1.0), (1e-2, 0.5), (1e-1, 1.9)) for s in range(3)
] + [
    rec("adamod", lr, s, loss + 0.01 * s, beta3=0.999)
    for lr, loss in ((1e-3, 0.6), (1e-2, 0.5), (1e-1, 0.7)) for s in range(3)
]  # fmt: skip


class TagCounter(HTMLParser):
    """Counts start/end tags and collects img sources, to check structure without a browser."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: dict[str, int] = {}
        self.ends: dict[str, int] = {}
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.starts[tag] = self.starts.get(tag, 0) + 1
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        self.ends[tag] = self.ends.get(tag, 0) + 1


def parse(page: str) -> TagCounter:
    """Parse a page and return its tag counts."""
    p = TagCounter()
    p.feed(page)
    p.close()
    return p


def test_page_has_tables_inline_figures_and_definitions():
    report = build_report(RECORDS, n_bootstrap=50)
    page = render_html(report, "Quick study")
    tags = parse(page)
    assert tags.starts["table"] == tags.ends["table"] == 2  # comparison, configurations
    for tag in ("table", "tr", "td", "figure", "ul", "dl", "html", "body"):
        assert tags.starts.get(tag) == tags.ends.get(tag), tag
    assert len(tags.images) == len(PLOT_NAMES)
    for src in tags.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "AdaMod β3=0.999 vs Adam" in page
    assert "https://arxiv.org/abs/2309.14322" in page  # lr_sensitivity source
    assert "https://arxiv.org/abs/2004.13705" in page  # tuning-budget estimator source
    assert "<title>Quick study</title>" in page
    assert 'class="badge complete"' in page
    assert not re.search(r'(src|href)="(?!data:|https://)', page)  # nothing fetched from elsewhere


def test_user_strings_are_escaped():
    report = build_report([*RECORDS, rec(EVIL, 1e-3, 0, 1.0)], complete=False, n_bootstrap=10)
    page = render_html(report, f"study {EVIL}")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'class="badge partial"' in page


def test_empty_report_renders_a_page():
    page = render_html(build_report([], complete=False), "empty")
    assert "No completed or diverged trials yet" in page
    assert len(parse(page).images) == len(PLOT_NAMES)


def test_bad_arguments_name_the_argument():
    report = build_report([])
    with pytest.raises(ValueError, match="title"):
        render_html(report, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="report"):
        render_html({}, "x")  # type: ignore[arg-type]

"""render_html: the robustness report as one self-contained HTML page (figures inlined as PNG)."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from html import escape

from studies.analysis.models import Report
from studies.plots import PLOT_NAMES, render_plot
from studies.report import display_name

__all__ = ["render_html"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1400px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; }
.meta { color: #555; margin-top: 0; }
.badge { display: inline-block; padding: 0.1rem 0.5rem; border-radius: 0.3rem; font-size: 0.85rem;
         font-weight: 600; }
.complete { background: #d8f3dc; color: #1b4332; }
.partial { background: #fff3bf; color: #7a5b00; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
th { background: #f1f3f5; }
td.text, th.text { text-align: left; }
figure { margin: 1rem 0 2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.92rem; max-width: 70rem; }
dt { font-weight: 600; margin-top: 0.6rem; }
dd { margin-left: 1.5rem; }
"""

_CAPTIONS = {
    "lr_curves": "Median capped validation loss over seeds against the learning rate, one line per "
    "configuration; the band is the 25th–75th percentile over seeds, x marks an lr where some seed "
    "diverged, the dotted line is loss0 (no progress). A flat, wide valley means lr-robust.",
    "beta3_surface": "Median capped loss on the lr × β3 grid of each bounded optimizer (AdaMod, "
    "DiffMod); the red outline is the best cell. A wide light band means a forgiving optimizer.",
    "warmup": "The same optimizer with and without learning-rate warmup. If the curves coincide, "
    "warmup is not needed.",
    "budget": "Expected best loss after trying k grid points chosen at random (without "
    "replacement). The lower curve needs fewer trials to reach a good loss.",
}

_DEFINITIONS: Sequence[tuple[str, str]] = (
    (
        "capped loss L",
        "min(final validation loss, loss0), where loss0 is the validation loss of the untrained "
        "model of the same seed; a diverged run counts as loss0 (no progress).",
    ),
    (
        "L*, best lr",
        "the lowest median L on a configuration's lr curve and the lr where it is.",
    ),
    (
        "lr_sensitivity",
        'mean over the lr grid of (median L(lr) − L*) (<a href="https://arxiv.org/abs/2309.14322">'
        "Wortsman et al. 2023</a>); lower is more robust. <em>norm</em> divides it by loss0 − L*, "
        "giving a number in [0, 1] comparable across workloads (n/a when no lr made progress).",
    ),
    (
        "good_lr_decades",
        "log10(largest / smallest lr) of the widest contiguous run of grid points whose normalized "
        "gap (L − L*) / (loss0 − L*) is at most 0.1; a single good point is 0.",
    ),
    ("divergence_rate", "the share of trials with a non-finite training or validation loss."),
    ("seed_spread", "the median over the lr grid of the interquartile range of L across seeds."),
    (
        "pairs, win rate, median Δ",
        "trials of the optimizer and of Adam matched on (lr, warmup, seed); "
        "Δ = L − L<sub>Adam</sub>; the win rate is the share of Δ &lt; 0.",
    ),
    (
        "Wilcoxon p",
        'two-sided <a href="https://docs.scipy.org/doc/scipy/reference/generated/'
        'scipy.stats.wilcoxon.html">Wilcoxon signed-rank test</a> of the paired Δ (n/a with fewer '
        "than 2 pairs; 1 when every Δ is 0).",
    ),
    (
        "lr_sensitivity Δ and CI",
        "optimizer minus Adam, averaged over common warmup values; 95% percentile bootstrap "
        "interval resampling seeds (the same seeds for both optimizers).",
    ),
    (
        "tuning budget",
        'expected best median L after k random grid points without replacement (<a href="'
        'https://arxiv.org/abs/1909.03004">Dodge et al. 2019</a>, unbiased estimator of <a href="'
        'https://arxiv.org/abs/2004.13705">Tang et al. 2020</a>).',
    ),
    (
        "AdaMod",
        "Adam with its per-element step bounded by an exponential moving average of its past "
        'values (<a href="https://arxiv.org/abs/1910.12249">Ding et al. 2019</a>); β3 sets the '
        "memory of that average, about 1/(1 − β3) steps.",
    ),
)


def _num(x: float | None, digits: int = 3) -> str:
    """A table cell number; an en dash for missing values."""
    return "–" if x is None else f"{x:.{digits}g}"


def _pct(x: float | None) -> str:
    """A share as a percentage."""
    return "–" if x is None else f"{x:.0%}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], text_cols: int = 1) -> str:
    """An HTML table; cells are already escaped; the first `text_cols` columns align left."""
    head = "".join(
        f'<th class="text">{h}</th>' if i < text_cols else f"<th>{h}</th>"
        for i, h in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="text">{c}</td>' if i < text_cols else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _name(optimizer: str, beta3: float | None) -> str:
    """'AdaMod β3=0.999', escaped."""
    return escape(display_name(optimizer) + ("" if beta3 is None else f" β3={beta3:g}"))


def _comparison_table(report: Report) -> str:
    """One row per optimizer (and β3) compared with Adam."""
    if not report.comparisons:
        return "<p>No comparison with Adam: the study has no Adam trials, or nothing to pair.</p>"
    rows = []
    for c in report.comparisons:
        first = c.by_warmup[0]
        ci = c.lr_sensitivity_delta_ci
        rows.append([
            f"{_name(c.optimizer, c.beta3)} vs {escape(display_name(c.baseline))}",
            str(c.pairs),
            _pct(c.win_rate),
            _num(c.median_delta),
            _num(c.wilcoxon_p, 2),
            _num(c.lr_sensitivity_delta),
            "–" if ci is None else f"[{ci.low:.3g}, {ci.high:.3g}]",
            f"{_num(first.good_lr_decades, 2)} vs {_num(first.baseline_good_lr_decades, 2)} "
            f"(warmup {first.warmup_steps})",
        ])  # fmt: skip
    header = ["comparison", "pairs", "win rate", "median Δ", "Wilcoxon p", "lr_sensitivity Δ",
              "95% CI", "good lr decades"]  # fmt: skip
    return _table(header, rows)


def _config_table(report: Report) -> str:
    """One row per configuration."""
    if not report.configs:
        return "<p>No completed or diverged trials yet.</p>"
    rows = []
    for c in report.configs:
        rng = c.good_lr_range
        good = _num(c.good_lr_decades, 2)
        if rng is not None:
            good += f" ({rng[0]:.2g} – {rng[1]:.2g})"
        rows.append([
            escape(c.label),
            _num(c.best_loss),
            _num(c.best_lr),
            _num(c.loss0),
            _num(c.lr_sensitivity),
            _num(c.lr_sensitivity_norm),
            good,
            _pct(c.divergence_rate),
            _num(c.seed_spread),
            str(c.n_trials),
        ])  # fmt: skip
    header = ["configuration", "L*", "best lr", "loss0", "lr_sensitivity", "norm",
              "good lr decades (range)", "diverged", "seed spread", "trials"]  # fmt: skip
    return _table(header, rows)


def _warmup_table(report: Report) -> str:
    """One row per (optimizer, β3, warmup) of the warmup comparison."""
    if not report.warmup:
        return "<p>No optimizer was run both with and without warmup.</p>"
    rows = [
        [_name(w.optimizer, w.beta3), str(e.warmup_steps), _num(e.best_loss), _num(e.best_lr),
         _num(e.lr_sensitivity), _num(e.lr_sensitivity_norm), _num(e.good_lr_decades, 2),
         _pct(e.divergence_rate)]
        for w in report.warmup
        for e in w.entries
    ]  # fmt: skip
    header = ["optimizer", "warmup steps", "L*", "best lr", "lr_sensitivity", "norm",
              "good lr decades", "diverged"]  # fmt: skip
    return _table(header, rows, text_cols=1)


def _figure(report: Report, name: str) -> str:
    """One figure as an inline base64 PNG with its caption."""
    data = base64.b64encode(render_plot(report, name)).decode("ascii")
    caption = escape(_CAPTIONS[name])
    return (
        f'<figure id="fig-{name}"><img alt="{escape(name)} figure" '
        f'src="data:image/png;base64,{data}"><figcaption>{caption}</figcaption></figure>'
    )


def render_html(report: Report, title: str) -> str:
    """The report as a self-contained HTML page: findings, tables, figures, definitions."""
    if not isinstance(report, Report):
        raise ValueError(f"report must be a Report, got {type(report).__name__}")
    if not isinstance(title, str):
        raise ValueError(f"title must be a str, got {type(title).__name__}")
    status = (
        '<span class="badge complete">complete</span>'
        if report.complete
        else '<span class="badge partial">partial: trials still running</span>'
    )
    headline = "".join(f"<li>{escape(line)}</li>" for line in report.headline)
    definitions = "".join(f"<dt>{escape(t)}</dt><dd>{d}</dd>" for t, d in _DEFINITIONS)
    figures = "".join(_figure(report, name) for name in PLOT_NAMES)
    optimizers = escape(", ".join(map(display_name, report.optimizers))) or "none yet"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{escape(title)}</h1>
<p class="meta">{status} · {report.n_used} of {report.n_records} trials analysed
(completed or diverged) · optimizers: {optimizers}</p>
<h2>Findings</h2>
<ul>{headline}</ul>
<h2>Comparison with Adam</h2>
{_comparison_table(report)}
<h2>Figures</h2>
{figures}
<h2>Per configuration</h2>
{_config_table(report)}
<h2>Warmup</h2>
{_warmup_table(report)}
<h2>Definitions</h2>
<dl>{definitions}</dl>
</body>
</html>
"""

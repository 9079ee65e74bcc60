"""render_html: the robustness report v2 as one self-contained HTML page (figures inlined as PNG).

The page tells the truth about the study: its status (a study that is not completed is never
shown as complete), what was asked (the spec) and what ran (counts, failures, environment), the
paired comparisons with their power, and the definitions. Every string that comes from a user or
from the data (title, labels, errors, spec and environment values) goes through html.escape.
Per-seed values of the curves are in the figures and report.json, not in the page.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

from studies.analysis.models import (
    BestVsBest,
    Comparison,
    ConfigReport,
    Interval,
    Report,
)
from studies.analysis.names import display_name, warmup_words
from studies.plots import PLOT_NAMES, render_plot

__all__ = ["page_html", "render_html"]

#: Rows shown of a long list (failures, missing cells); the rest is counted and in report.json.
MAX_LIST_ROWS = 200
_LONG_ERROR = 160

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1400px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; }
h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
.meta { color: #555; margin-top: 0.3rem; }
.badge { display: inline-block; padding: 0.1rem 0.55rem; border-radius: 0.3rem;
         font-size: 0.95rem; font-weight: 600; }
.status-ok { background: #d8f3dc; color: #1b4332; }
.status-partial { background: #fff3bf; color: #7a5b00; }
.status-bad { background: #ffe3e3; color: #8a1c1c; }
.warning { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5rem 0.8rem; }
.note { color: #444; font-size: 0.92rem; max-width: 70rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.2rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.55rem; text-align: right;
         vertical-align: top; }
th { background: #f1f3f5; }
td.text, th.text { text-align: left; }
td.power { text-align: left; color: #7a5b00; max-width: 28rem; }
tr.sub > td { border-top: none; background: #fafafa; text-align: left; }
details { margin: 0.2rem 0; }
summary { cursor: pointer; color: #1c4f8a; }
pre { white-space: pre-wrap; max-width: 60rem; margin: 0.3rem 0; font-size: 0.85rem; }
figure { margin: 1rem 0 2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.92rem; max-width: 70rem; }
dt { font-weight: 600; margin-top: 0.5rem; }
dd { margin-left: 1.5rem; }
"""

_CAPTIONS = {
    "lr_curves": "Median capped validation loss L over seeds against the learning rate, one line "
    "per configuration and one panel per warmup and schedule; the band is the 25th–75th "
    "percentile over seeds, the dots are the seeds (jittered sideways so they do not hide each "
    "other), x marks a diverged seed (L = loss0), the dotted line is loss0 (no progress) and the "
    "dashed line the target. A flat, wide valley means lr-robust.",
    "beta3_surface": "Median capped loss on the lr × β3 grid of each bounded optimizer (AdaMod, "
    "DiffMod), per warmup and schedule, on one colour scale; the red outline is the best cell. A "
    "wide light band means a forgiving optimizer.",
    "warmup": "The same optimizer with and without learning-rate warmup; AdaMod and DiffMod panels "
    "also show the reference optimizer with warmup (grey) and the implicit warmup of the bound. "
    "If the curves coincide, warmup is not needed.",
    "budget": "Expected best L after k trials, each a random (lr, seed) cell of one "
    "configuration, drawn without replacement (Tang et al. 2020). Every curve draws from its own "
    "lr grid × seeds. The lower curve needs fewer trials to reach a good loss.",
}

#: Sources cited by the definitions (constant text, not user data).
_SOURCES: Sequence[tuple[str, str]] = (
    ("AdaMod: Ding, Ren, Luo, Sun 2019", "https://arxiv.org/abs/1910.12249"),
    ("lr sensitivity: Wortsman et al. 2023", "https://arxiv.org/abs/2309.14322"),
    ("expected validation performance: Dodge et al. 2019", "https://arxiv.org/abs/1909.03004"),
    ("its unbiased estimator: Tang et al. 2020", "https://arxiv.org/abs/2004.13705"),
    ('warmup "auto": Ma & Yarats 2021', "https://arxiv.org/abs/1910.04209"),
    ("time to result, performance profiles: AlgoPerf (Dahl et al. 2023)",
     "https://arxiv.org/abs/2306.07179"),
)  # fmt: skip

_STATE_ORDER = ("completed", "diverged", "failed", "cancelled", "queued", "running")


# --------------------------------------------------------------------------- formatting


def _e(value: Any) -> str:
    """Any value as escaped text."""
    return escape(str(value))


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _num(x: float | None, digits: int = 3) -> str:
    """A table cell number; an en dash for missing values."""
    return f"{x:.{digits}g}" if _finite(x) else "–"


def _signed(x: float | None, digits: int = 3) -> str:
    return f"{x:+.{digits}g}" if _finite(x) else "–"


def _pct(x: float | None) -> str:
    """A share as a percentage."""
    return f"{x:.0%}" if _finite(x) else "–"


def _p(x: float | None) -> str:
    return "–" if x is None else f"{x:.2g}"


def _lr(x: float | None) -> str:
    return f"{x:.3g}" if _finite(x) else "–"


def _table(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    text_cols: int = 1,
    sub_rows: Sequence[str | None] | None = None,
) -> str:
    """An HTML table; cells are already escaped; the first `text_cols` columns align left.

    `sub_rows[i]`, when given and not None, is a full-width row under row i (details)."""
    head = "".join(
        f'<th class="text">{h}</th>' if i < text_cols else f"<th>{h}</th>"
        for i, h in enumerate(header)
    )
    parts = []
    for r, row in enumerate(rows):
        cells = []
        for i, c in enumerate(row):
            if isinstance(c, _Cell):
                cells.append(c.html)
            elif i < text_cols:
                cells.append(f'<td class="text">{c}</td>')
            else:
                cells.append(f"<td>{c}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
        if sub_rows is not None and sub_rows[r] is not None:
            parts.append(f'<tr class="sub"><td colspan="{len(header)}">{sub_rows[r]}</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(parts)}</tbody></table>"


class _Cell(str):
    """A cell given as its whole <td> element (for a class or a colspan)."""

    @property
    def html(self) -> str:
        return str(self)


def _details(summary: str, body: str) -> str:
    """A collapsed block; both parts already escaped."""
    return f"<details><summary>{summary}</summary>{body}</details>"


def _name(optimizer: str, beta3: float | None) -> str:
    """'AdaMod β3=0.999', escaped."""
    return escape(display_name(optimizer) + ("" if beta3 is None else f" β3={beta3:g}"))


def _interval(ci: Interval | None) -> str:
    return "–" if ci is None else f"[{ci.low:+.3g}, {ci.high:+.3g}]"


def _per_seed(values: Sequence[Any]) -> str:
    return ", ".join(f"seed {v.seed}: {v.d:+.3g}" for v in values) or "none"


def _power_cell(test: Comparison | BestVsBest) -> _Cell:
    """Either both 95% intervals, or why there are none: underpowered (with the per-seed d)."""
    if test.n_seeds == 0:
        return _Cell('<td class="text power">no test: no seed with results on both sides</td>')
    if test.underpowered:
        needed = "" if test.seeds_needed is None else f", needs ≥ {test.seeds_needed} seeds"
        text = (
            f"underpowered: {test.n_seeds} seed{'s' if test.n_seeds != 1 else ''}, smallest "
            f"possible p = {test.min_possible_p:.2g}{needed}; per-seed d: "
            f"{_per_seed(test.per_seed_d)}"
        )
        return _Cell(f'<td class="text power">{escape(text)}</td>')
    if test.ci_t is None and test.ci_bootstrap is None:
        return _Cell(f'<td class="text">no interval; per-seed d: {_per_seed(test.per_seed_d)}</td>')
    return _Cell(
        f'<td class="ci">t {_interval(test.ci_t)}<br>bootstrap {_interval(test.ci_bootstrap)}</td>'
    )


def _capped(rows: Sequence[Any], what: str) -> tuple[Sequence[Any], str]:
    """At most MAX_LIST_ROWS rows, and a note saying how many were left out."""
    if len(rows) <= MAX_LIST_ROWS:
        return rows, ""
    left = len(rows) - MAX_LIST_ROWS
    return rows[:MAX_LIST_ROWS], (
        f'<p class="note">… and {left} more {what} (all of them are in report.json).</p>'
    )


# --------------------------------------------------------------------------- sections


_STATUS_WORDS = {
    "completed": ("completed", "status-ok"),
    "running": ("running — partial report", "status-partial"),
    "queued": ("queued — partial report", "status-partial"),
    "cancelled": ("cancelled — partial report", "status-bad"),
    "failed": ("failed — partial report", "status-bad"),
}


def _header(report: Report, title: str) -> str:
    words, cls = _STATUS_WORDS.get(
        report.status, (f"{report.status} — partial report", "status-partial")
    )
    reference = "none" if report.reference is None else display_name(report.reference)
    meta = (
        f"{report.n_used} of {report.n_records} trials are results (used in the statistics) · "
        f"reference: {reference} · report v{report.version}"
    )
    warning = ""
    if report.status != "completed":
        c = report.counts
        pending = c.get("queued", 0) + c.get("running", 0)
        warning = (
            f'<p class="warning">This study is {escape(report.status)}: the report is partial. '
            f"{pending} trials are queued or running, {c.get('cancelled', 0)} were cancelled and "
            f"{c.get('failed', 0)} failed; every number below uses only the results that exist, "
            "and each comparison counts the cells it lacks.</p>"
        )
    return (
        f"<header><h1>{escape(title)}</h1>"
        f'<p class="meta"><span class="badge {cls}" id="status">{escape(words)}</span> · '
        f"{escape(meta)}</p>{warning}</header>"
    )


def _fmt_value(value: Any) -> str:
    """A spec or environment value as short text (not escaped)."""
    if value is None:
        return "–"
    if isinstance(value, dict):
        return ", ".join(f"{k} = {_fmt_value(v)}" for k, v in value.items()) or "–"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt_value(v) for v in value) or "–"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _fmt_lr_spec(lr: Any) -> str:
    if isinstance(lr, dict):
        if lr.get("values"):
            return _fmt_value(lr["values"])
        if {"min", "max", "points"} <= lr.keys():
            return (
                f"{lr['points']} log-spaced from {_fmt_value(lr['min'])} to {_fmt_value(lr['max'])}"
            )
    return _fmt_value(lr)


def _fmt_budget(budget: Any) -> str:
    if budget is None:
        return "the workload's default"
    if isinstance(budget, dict):
        if budget.get("steps") is not None:
            return f"{budget['steps']} steps"
        if budget.get("epochs") is not None:
            return f"{budget['epochs']} epochs"
    return _fmt_value(budget)


def _grid_seen(report: Report) -> dict[str, str]:
    """The grid as the results contain it (per axis)."""
    lrs = sorted({p.lr for c in report.configs for p in c.curve})
    seeds = sorted({v.seed for c in report.configs for p in c.curve for v in p.seed_values})
    beta3s = sorted({c.beta3 for c in report.configs if c.beta3 is not None})
    return {
        "optimizers": ", ".join(display_name(o) for o in report.optimizers),
        "lr": ", ".join(f"{x:.3g}" for x in lrs),
        "beta3": ", ".join(f"{b:g}" for b in beta3s),
        "warmup_steps": ", ".join(str(w) for w in sorted({c.warmup_steps for c in report.configs})),
        "schedule": ", ".join(sorted({c.schedule for c in report.configs})),
        "seeds": f"{len(seeds)} ({', '.join(map(str, seeds))})" if seeds else "",
    }


def _target_words(report: Report) -> str:
    t = report.target
    if t.loss is None:
        return "none (no reference results and no target_loss in the spec): no steps to target"
    if t.source == "spec":
        return f"{t.loss:.4g} (the spec's target_loss)"
    if t.source == "reference":
        of = f" of {t.config}" if t.config else ""
        return f"{t.loss:.4g} (reference: L*_ref + 0.1·(loss0_ref − L*_ref){of})"
    return f"{t.loss:.4g} ({t.source})"


def _spec_section(report: Report) -> str:
    spec = report.spec or {}
    reference = "none" if report.reference is None else display_name(report.reference)
    rows: list[list[str]] = []
    if report.spec is None:
        note = (
            '<p class="note">No spec was given to the report: the grid below is what the results '
            "contain.</p>"
        )
    else:
        note = ""
        for key, words in (("name", "name"), ("workload", "workload")):
            if key in spec:
                rows.append([words, _e(_fmt_value(spec[key]))])
        rows.append(["workload_config", _e(_fmt_value(spec.get("workload_config")))])
        rows.append(["budget per trial", _e(_fmt_budget(spec.get("budget")))])
        for key in ("betas", "eps", "weight_decay"):
            if key in spec:
                rows.append([key, _e(_fmt_value(spec[key]))])
    rows.append(["reference", f"{_e(reference)} — {_e(report.reference_reason)}"])
    rows.append(["target loss", _e(_target_words(report))])
    settings = _table(["setting", "value"], rows, text_cols=2)

    seen = _grid_seen(report)
    spec_grid = {
        "optimizers": _fmt_value([display_name(str(o)) for o in spec.get("optimizers") or []]),
        "lr": _fmt_lr_spec(spec.get("lr")),
        "beta3": _fmt_value(spec.get("beta3")) + " (AdaMod and DiffMod only)"
        if spec.get("beta3")
        else "–",
        "warmup_steps": _fmt_value(spec.get("warmup_steps")),
        "schedule": _fmt_value(spec.get("schedule")),
        "seeds": _fmt_value(spec.get("seeds")),
    }
    grid_rows = [
        [axis, _e(spec_grid[axis] if report.spec is not None else "–"), _e(seen[axis] or "–")]
        for axis in spec_grid
    ]
    grid = _table(["axis", "spec", "in the results"], grid_rows, text_cols=3)
    return f"<h2>Study</h2>{note}{settings}<h3>Grid</h3>{grid}"


def _trials_section(report: Report) -> str:
    counts = report.counts
    states = [s for s in _STATE_ORDER if s in counts]
    states += [s for s in counts if s not in states and s != "total"]
    header = [*(_e(s) for s in states), "total"]
    row = [str(counts.get(s, 0)) for s in states] + [str(counts.get("total", report.n_records))]
    out = ["<h2>Trials</h2>", _table(header, [row], text_cols=0)]
    out.append(
        '<p class="note">Results are completed or diverged trials (a diverged trial counts as '
        "loss0). Failed, cancelled, queued and running trials are no results: each comparison "
        "uses only the cells where both sides have one and lists the others.</p>"
    )
    if report.failures:
        shown, more = _capped(report.failures, "failures")
        rows = []
        for f in shown:
            params = ", ".join(f"{k}={_fmt_value(v)}" for k, v in f.params.items())
            rows.append(
                ["–" if f.trial_id is None else str(f.trial_id), _e(params), _error(f.error)]
            )
        out.append(f"<h3>Failures ({len(report.failures)})</h3>")
        out.append(_table(["trial", "params", "error"], rows, text_cols=3) + more)
    else:
        out.append("<p>No failed trials.</p>")
    return "".join(out)


def _error(error: str | None) -> str:
    """An error text: inline when short, else its first line with the whole in a <details>."""
    if not error:
        return "(no error text)"
    if len(error) <= _LONG_ERROR and "\n" not in error:
        return f"<code>{escape(error)}</code>"
    # A traceback's last line names the exception: the most useful summary.
    lines = [ln.strip() for ln in error.strip().splitlines() if ln.strip()]
    summary = lines[-1] if lines else ""
    if len(summary) > 100:
        summary = summary[:100] + "…"
    return _details(f"<code>{escape(summary)}</code>", f"<pre>{escape(error)}</pre>")


def _environment_section(report: Report) -> str:
    env = dict(report.environment)
    rows = [
        ["torch", _e(_fmt_value(env.pop("torch", None)) or "–")],
        ["devices", _e(_fmt_value(env.pop("devices", None)) or "–")],
    ]
    data = env.pop("data", None)
    if isinstance(data, dict) and data:
        for key, values in data.items():
            text = _fmt_value(values)
            if isinstance(values, list) and len(values) > 1:
                text += " (differs between trials)"
            rows.append([f"data: {_e(key)}", f"<code>{_e(text)}</code>"])
    else:
        rows.append(["data hashes", "not recorded"])
    for key, value in env.items():
        rows.append([_e(key), _e(_fmt_value(value))])
    if report.test_split:
        split = "yes: the test loss at each configuration's best lr is in the configuration table"
    else:
        split = "no test split: selection and every number use validation data only"
    rows.append(["test split", split])
    return f"<h2>Environment</h2>{_table(['item', 'value'], rows, text_cols=2)}"


def _warmups(c: Comparison) -> str:
    if c.warmup == c.reference_warmup:
        return str(c.warmup)
    return f"{c.warmup} vs {c.reference_warmup}"


def _comparison_details(c: Comparison) -> str:
    w = sum(p.wins for p in c.per_lr)
    t = sum(p.ties for p in c.per_lr)
    f = sum(p.both_failed for p in c.per_lr)
    lo = sum(p.losses for p in c.per_lr)
    rows = [
        [_lr(p.lr), str(p.n_seeds), str(p.wins), str(p.ties), str(p.both_failed), str(p.losses),
         _signed(p.mean_delta), _p(p.p), _p(p.p_holm)]
        for p in c.per_lr
    ]  # fmt: skip
    header = ["lr", "seeds", "wins", "ties", "both failed to learn", "losses", "mean Δ L", "p",
              "Holm p"]  # fmt: skip
    parts = [
        _details(
            f"per lr: {len(c.per_lr)} lrs · {w} wins / {t} ties / {f} both failed to learn / "
            f"{lo} losses",
            _table(header, rows, text_cols=0),
        )
    ]
    if c.missing_cells:
        shown, more = _capped(c.missing_cells, "missing cells")
        mrows = [[_lr(m.lr), str(m.seed), _e(m.challenger), _e(m.reference)] for m in shown]
        parts.append(
            _details(
                f"{c.n_missing} missing cell{'s' if c.n_missing != 1 else ''} (not in the test)",
                _table(["lr", "seed", "challenger", "reference"], mrows, text_cols=0) + more,
            )
        )
    if c.excluded_seeds:
        text = "; ".join(f"seed {s.seed}: {s.reason}" for s in c.excluded_seeds)
        parts.append(f'<p class="note">Excluded seeds: {escape(text)}.</p>')
    return "".join(parts)


def _comparison_section(report: Report) -> str:
    out = ["<h2>Comparisons with the reference (lr by lr)</h2>"]
    if not report.comparisons:
        out.append(
            "<p>No lr-by-lr comparison: the study has no results of the reference optimizer, or "
            "no optimizer of its family (Adam, AdamW, AdaMod, DiffMod, RAdam, NAdamW) to compare "
            "with it.</p>"
        )
    else:
        out.append(
            '<p class="note">Per seed, d = the challenger\'s normalized lr sensitivity minus the '
            "reference's, on that seed's common grid; d &lt; 0: the challenger is less sensitive "
            "to the lr. p: two-sided paired sign-flip test over seeds. Intervals from 5 seeds on; "
            "below 6 seeds no p can reach 0.05 (underpowered).</p>"
        )
        rows, subs = [], []
        for c in report.comparisons:
            rows.append([
                _e(c.challenger), _e(c.reference), _e(_warmups(c)), _e(c.schedule),
                str(c.n_seeds), _signed(c.mean_d), _pct(c.share_better), _p(c.p),
                _power_cell(c), str(c.n_missing),
            ])  # fmt: skip
            subs.append(_comparison_details(c))
        header = ["challenger", "reference", "warmup", "schedule", "seeds", "mean d",
                  "share better", "p", "95% intervals (t, bootstrap) or power",
                  "missing cells"]  # fmt: skip
        out.append(_table(header, rows, text_cols=4, sub_rows=subs))
    out.append("<h3>Best vs best</h3>")
    if not report.best_vs_best:
        out.append("<p>No best-vs-best comparison: nothing to pair with the reference.</p>")
        return "".join(out)
    out.append(
        '<p class="note">Each configuration at its own best lr against the reference at its best '
        "lr, paired by seed; d = L(challenger) − L(reference), d &lt; 0: the challenger reaches "
        "a lower validation loss. The only comparison across optimizer families.</p>"
    )
    rows = []
    for b in report.best_vs_best:
        row = [
            _e(b.challenger), _e(b.reference), str(b.warmup), _e(b.schedule),
            f"{_lr(b.challenger_best_lr)} / {_lr(b.reference_best_lr)}", str(b.n_seeds),
            _signed(b.mean_d), _pct(b.share_better), _p(b.p), _power_cell(b),
        ]  # fmt: skip
        if report.test_split:
            row.append(_signed(b.mean_test_delta))
        rows.append(row)
    header = ["challenger", "reference", "warmup", "schedule", "best lr (challenger / reference)",
              "seeds", "mean d", "share better", "p",
              "95% intervals (t, bootstrap) or power"]  # fmt: skip
    if report.test_split:
        header.append("mean test Δ")
    out.append(_table(header, rows, text_cols=4))
    if not report.test_split:
        out.append('<p class="note">No test split: no test-loss difference.</p>')
    return "".join(out)


def _good_lr(c: ConfigReport) -> str:
    if c.good_lr_decades is None:
        return "–"
    text = f"{c.good_lr_decades:.2f}"
    o = c.good_lr_open
    if o is not None and (o.low or o.high):
        where = "both ends" if o.low and o.high else ("low end" if o.low else "high end")
        text = f"≥ {text} (open at {where})"
    return text


def _range(r: tuple[float, float] | None) -> str:
    return "–" if r is None else f"{r[0]:.2g} – {r[1]:.2g}"


def _implicit(c: ConfigReport) -> str:
    if c.implicit_warmup_steps is not None:
        return f"{c.implicit_warmup_steps:.0f}"
    if c.optimizer in ("adamod", "diffmod"):
        return "not measured"
    return "–"


def _config_section(report: Report) -> str:
    out = ["<h2>Per configuration</h2>"]
    if not report.configs:
        out.append("<p>No completed or diverged trials yet.</p>")
        return "".join(out)
    rows = []
    for c in report.configs:
        row = [_e(c.label), _num(c.best_loss), _lr(c.best_lr)]
        if report.test_split:
            row.append(_num(c.test_loss_at_best))
        row += [
            _num(c.loss0), _num(c.lr_sensitivity), _num(c.lr_sensitivity_norm), _good_lr(c),
            _range(c.good_lr_range), _num(c.grid_spacing_decades, 2), _num(c.target_lr_decades, 2),
            _pct(c.divergence_rate), _num(c.seed_spread), _implicit(c),
            f"{c.n_trials} / {c.n_diverged} / {c.n_failed}",
        ]  # fmt: skip
        rows.append(row)
    header = ["configuration", "L*", "best lr"]
    if report.test_split:
        header.append("test loss at best lr")
    header += ["loss0", "lr_sensitivity", "lr_sensitivity_norm", "good lr decades",
               "good lr range", "resolution (grid spacing, decades)", "target lr decades",
               "diverged", "seed spread", "implicit warmup steps",
               "results / diverged / failed"]  # fmt: skip
    out.append(_table(header, rows))
    if not report.test_split:
        out.append('<p class="note">No test split: no test loss at the best lr.</p>')
    out.append(
        '<p class="note">good lr decades: width of the interval around the best lr where the '
        "normalized gap (L − L*)/(loss0 − L*) ≤ 0.1, interpolated between grid points; its "
        "resolution is the grid spacing. “≥ … (open)”: the interval reaches the end of the grid "
        "there, so it may be wider.</p>"
    )
    curve_rows = [
        [_e(c.label), _lr(p.lr), str(p.n_seeds), _num(p.median), f"{_num(p.p25)} – {_num(p.p75)}",
         str(p.n_diverged), str(p.n_failed), _num(p.uncapped_median), _num(p.steps_to_target)]
        for c in report.configs
        for p in c.curve
    ]  # fmt: skip
    curve_header = ["configuration", "lr", "seeds", "median L", "p25 – p75", "diverged", "failed",
                    "uncapped median loss", "median steps to target"]  # fmt: skip
    out.append(
        _details(
            "Per lr: median L, quartiles, divergences, failures, uncapped median, steps to target",
            _table(curve_header, curve_rows),
        )
    )
    return "".join(out)


def _warmup_section(report: Report) -> str:
    out = ["<h2>Warmup</h2>"]
    if not report.warmup:
        out.append("<p>No optimizer has results at more than one warmup.</p>")
    else:
        out.append("<ul>" + "".join(f"<li>{_e(w.summary)}</li>" for w in report.warmup) + "</ul>")
        rows = [
            [f"{_name(w.optimizer, w.beta3)}, {_e(w.schedule)}", _e(warmup_words(e.warmup_steps)),
             _num(e.best_loss), _lr(e.best_lr), _num(e.lr_sensitivity_norm),
             _num(e.good_lr_decades, 2), _pct(e.divergence_rate),
             "–" if e.implicit_warmup_steps is None else f"{e.implicit_warmup_steps:.0f}"]
            for w in report.warmup
            for e in w.entries
        ]  # fmt: skip
        header = ["optimizer, schedule", "warmup", "L*", "best lr", "lr_sensitivity_norm",
                  "good lr decades", "diverged", "implicit warmup steps"]  # fmt: skip
        out.append(_table(header, rows, text_cols=2))
    if any(c.kind == "no_warmup_vs_warmup" for c in report.comparisons):
        out.append(
            '<p class="note">The paper\'s claim, AdaMod without warmup against the reference with '
            "warmup, is tested in the comparisons above (rows with warmup “0 vs …”).</p>"
        )
    return "".join(out)


def _definitions_section(report: Report) -> str:
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in report.definitions.items())
    sources = "".join(f'<li><a href="{url}">{escape(text)}</a></li>' for text, url in _SOURCES)
    return '<h2 id="definitions">Definitions</h2>' + _details(
        "What every number means", f"<dl>{items}</dl><h3>Sources</h3><ul>{sources}</ul>"
    )


def _figure(name: str, png: bytes) -> str:
    """One figure as an inline base64 PNG with its caption."""
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="fig-{name}"><img alt="{escape(name)} figure" '
        f'src="data:image/png;base64,{data}"><figcaption>{escape(_CAPTIONS[name])}</figcaption>'
        "</figure>"
    )


def render_html(report: Report, title: str, *, figures: Mapping[str, bytes] | None = None) -> str:
    """The report as a self-contained HTML page: status, findings, tables, figures, definitions.

    `figures` maps plot names to PNG bytes already rendered (the service caches them); missing
    ones are rendered here with studies.plots.render_plot.
    """
    if not isinstance(report, Report):
        raise ValueError(f"report must be a Report, got {type(report).__name__}")
    if not isinstance(title, str):
        raise ValueError(f"title must be a str, got {type(title).__name__}")
    if figures is not None and not isinstance(figures, Mapping):
        raise ValueError(f"figures must be a mapping of plot name to PNG bytes, got {figures!r}")
    pngs = dict(figures or {})
    figure_html = "".join(
        _figure(name, pngs[name] if name in pngs else render_plot(report, name))
        for name in PLOT_NAMES
    )
    headline = "".join(f"<li>{_e(line)}</li>" for line in report.headline)
    body = "".join([
        _header(report, title),
        f"<h2>Findings</h2><ul>{headline}</ul>",
        _spec_section(report),
        _trials_section(report),
        _environment_section(report),
        _comparison_section(report),
        f"<h2>Figures</h2>{figure_html}",
        _config_section(report),
        _warmup_section(report),
        _definitions_section(report),
    ])  # fmt: skip
    return page_html(title, _CSS, body)


def page_html(title: str, css: str, body: str) -> str:
    """A self-contained HTML document: the escaped title, inline CSS, and the body as given."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{css}</style>
</head>
<body>
{body}
</body>
</html>
"""

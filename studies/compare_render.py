"""Draws a `studies.compare.Comparison`: the performance-profile figure (PNG, matplotlib Agg, no
pyplot) and a self-contained HTML page with the table, the figure inline and the definitions.

Compute first, present second: everything drawn here is a field of the Comparison.
"""

from __future__ import annotations

import base64
import io
import math
import threading
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from studies.compare import TAU_MAX, Comparison, PerformanceProfile
from studies.html import page_html

# Imported at module import: a first import of matplotlib from several threads at once (the service
# renders in a thread pool) fails half-initialized. The guard keeps the module importable.
try:
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ImportError as _exc:  # pragma: no cover - matplotlib is a declared dependency
    _MPL_ERROR: ImportError | None = _exc
else:
    _MPL_ERROR = None

__all__ = ["render_compare_html", "render_profiles"]

# matplotlib is not thread-safe: one figure at a time.
_RENDER_LOCK = threading.Lock()
_DPI = 100
_PANEL_W, _PANEL_H = 6.6, 4.4  # inches: about 660 × 440 px per panel at 100% zoom
# Families as in studies/plots.py: Adam-like warm colours, AdaMod blues, DiffMod greens.
_FAMILY = {
    "adam": "Reds",
    "adamw": "Oranges",
    "radam": "RdPu",
    "nadamw": "YlOrBr",
    "adamod": "Blues",
    "diffmod": "Greens",
    "sgd": "Greys",
}
_STYLES = ("-", "--", "-.", ":")
_Y_LABEL = "ρ(τ): share of workloads with r ≤ τ"
_X_LABEL = "τ: within a factor τ of the best configuration"


def _colors(profile: PerformanceProfile) -> list[Any]:
    """One colour per curve: the optimizer's family, shades spread within the family."""
    by_family: dict[str, list[int]] = {}
    for i, curve in enumerate(profile.curves):
        by_family.setdefault(curve.optimizer, []).append(i)
    out: list[Any] = [None] * len(profile.curves)
    for optimizer, members in by_family.items():
        cmap = colormaps[_FAMILY.get(optimizer, "Purples")]
        for rank, i in enumerate(members):
            shade = 0.75 if len(members) == 1 else 0.5 + 0.45 * rank / (len(members) - 1)
            out[i] = cmap(shade)
    return out


def _draw_profile(ax: Any, profile: PerformanceProfile, n_workloads: int) -> None:
    """Step lines of ρ, thickest first and lowest, so that coinciding lines stay visible."""
    colors = _colors(profile)
    n = len(profile.curves)
    for i, curve in enumerate(profile.curves):
        width = 3.6 - 2.2 * i / max(n - 1, 1)
        ax.step(
            profile.tau, curve.rho, where="post", color=colors[i], lw=width,
            ls=_STYLES[i % len(_STYLES)], alpha=0.9, zorder=3 + i,
            label=f"{curve.label}  (area {curve.area:.2f} / {TAU_MAX - 1:g})",
        )  # fmt: skip
    ax.set_xlim(1.0, TAU_MAX)
    ax.set_ylim(-0.03, 1.05)
    ax.set_xticks([1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0])
    ax.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlabel(_X_LABEL, fontsize=11)
    ax.set_ylabel(_Y_LABEL, fontsize=11)
    ax.set_title(profile.title, fontsize=12)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=10)
    if profile.no_finite_best:
        ax.text(
            0.98, 0.03,
            f"no finite cost on {len(profile.no_finite_best)} of {n_workloads} workloads",
            transform=ax.transAxes, ha="right", va="bottom", fontsize=9, color="0.3",
        )  # fmt: skip
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=10, frameon=False,
              ncol=1, handlelength=3.2)  # fmt: skip


def render_profiles(comparison: Comparison) -> bytes:
    """One PNG with the two performance profiles side by side (steps to target, sensitivity)."""
    if not isinstance(comparison, Comparison):
        raise ValueError(f"comparison must be a Comparison, got {type(comparison).__name__}")
    if _MPL_ERROR is not None:  # pragma: no cover
        raise ImportError("studies.compare_render needs matplotlib") from _MPL_ERROR
    profiles = comparison.profiles
    n_curves = max((len(p.curves) for p in profiles), default=1)
    legend_h = 0.22 * n_curves + 0.1
    height = _PANEL_H + 1.7 + legend_h
    width = _PANEL_W * len(profiles)
    with _RENDER_LOCK:
        fig = Figure(figsize=(width, height), dpi=_DPI)
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(profiles), squeeze=False).ravel().tolist()
        n_workloads = len(comparison.studies)
        for ax, profile in zip(axes, profiles, strict=True):
            _draw_profile(ax, profile, n_workloads)
        fig.suptitle(
            f"Performance profiles over {n_workloads} workloads (Dolan & Moré): "
            "higher and further left is better",
            fontsize=14,
        )
        # Fixed margins in inches (tight_layout does not see the legends below the axes).
        top, bottom = 0.75, 0.95 + legend_h
        fig.subplots_adjust(left=0.8 / width, right=1 - 0.3 / width, top=1 - top / height,
                            bottom=bottom / height, wspace=0.25)  # fmt: skip
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=_DPI)
        return buf.getvalue()


# --------------------------------------------------------------------------- HTML

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
tr.out td { color: #777; }
figure { margin: 1rem 0 2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.92rem; max-width: 70rem; }
dt { font-weight: 600; margin-top: 0.6rem; }
dd { margin-left: 1.5rem; }
"""

_CAPTION = (
    "For each workload (study) p and configuration o, r(p, o) is o's cost divided by the best "
    "configuration's cost on p; ρ_o(τ) is the share of workloads on which o is within a factor τ "
    "of the best. Left: the cost is the median number of steps to the study's target at o's best "
    "learning rate. Right: the cost is the normalized lr sensitivity (lower is more robust). A "
    "curve that starts high at τ = 1 is often the best; one that reaches 1 early is never far "
    "behind. Infinite ratios (never reached, undefined) never count. The legend gives the area "
    "under each curve (trapezoid rule on the τ grid), at most 3."
)


def _num(x: float | None, digits: int = 3) -> str:
    """A table cell number; an en dash for missing values."""
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def _table(header: Sequence[str], rows: Iterable[tuple[Sequence[str], str]], text_cols: int) -> str:
    """An HTML table of already escaped cells; rows are (cells, css class)."""
    head = "".join(
        f'<th class="text">{h}</th>' if i < text_cols else f"<th>{h}</th>"
        for i, h in enumerate(header)
    )
    body = "".join(
        (f'<tr class="{cls}">' if cls else "<tr>")
        + "".join(
            f'<td class="text">{c}</td>' if i < text_cols else f"<td>{c}</td>"
            for i, c in enumerate(cells)
        )
        + "</tr>"
        for cells, cls in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _studies_list(comparison: Comparison) -> str:
    items = []
    for s in comparison.studies:
        badge = (
            '<span class="badge complete">complete</span>'
            if s.complete
            else f'<span class="badge partial">{escape(s.status or "unknown")}: partial</span>'
        )
        target = (
            "no target" if s.target_loss is None
            else f"target loss {_num(s.target_loss, 4)} ({escape(s.target_source or '?')})"
        )  # fmt: skip
        items.append(
            f"<li><strong>{escape(s.name)}</strong> · workload {escape(s.workload or '?')} · "
            f"{badge} · {s.n_configs} configurations · {target}</li>"
        )
    return f"<ul>{''.join(items)}</ul>"


def _area_table(comparison: Comparison) -> str:
    header = ["configuration"]
    for p in comparison.profiles:
        header += [f"{escape(p.title)}: area", "best on", "finite on"]
    n = len(comparison.studies)
    rows = []
    for i, config in enumerate(comparison.configs):
        cells = [escape(config.label)]
        for p in comparison.profiles:
            c = p.curves[i]
            cells += [f"{c.area:.3f}", f"{c.n_best} / {n}", f"{c.n_finite} / {n}"]
        rows.append((cells, ""))
    return _table(header, rows, text_cols=1)


def _workload_table(comparison: Comparison) -> str:
    header = ["study", "workload", "configuration", "L*", "best lr", "lr_sensitivity_norm",
              "good lr decades", "target lr decades", "steps to target at best lr",
              "target (source)", "in profiles"]  # fmt: skip
    rows = []
    for r in comparison.table:
        steps = "never" if r.steps_to_target is None else f"{r.steps_to_target:g}"
        target = "none" if r.target_loss is None else (
            f"{_num(r.target_loss, 4)} ({escape(r.target_source or '?')})"
        )  # fmt: skip
        rows.append(([
            escape(r.study), escape(r.workload or "?"), escape(r.label), _num(r.best_loss),
            _num(r.best_lr), _num(r.lr_sensitivity_norm), _num(r.good_lr_decades, 2),
            _num(r.target_lr_decades, 2), steps, target, "yes" if r.in_profiles else "no",
        ], "" if r.in_profiles else "out"))  # fmt: skip
    return _table(header, rows, text_cols=3)


def _missing(comparison: Comparison) -> str:
    if not comparison.not_in_every_study:
        return "<p>Every configuration is in every study.</p>"
    items = "".join(
        f"<li>{escape(m.label)}: in {escape(', '.join(m.in_studies))}; "
        f"missing from {escape(', '.join(m.missing_from))}</li>"
        for m in comparison.not_in_every_study
    )
    return f"<p>Left out of the profiles:</p><ul>{items}</ul>"


def render_compare_html(comparison: Comparison, title: str | None = None) -> str:
    """The comparison as one self-contained page: studies, figure inline, tables, definitions."""
    if not isinstance(comparison, Comparison):
        raise ValueError(f"comparison must be a Comparison, got {type(comparison).__name__}")
    if title is None:
        title = f"Comparison of {len(comparison.studies)} studies"
    png = base64.b64encode(render_profiles(comparison)).decode("ascii")
    notes = "".join(f"<li>{escape(n)}</li>" for n in comparison.notes)
    notes_html = f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""
    definitions = "".join(
        f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in comparison.definitions.items()
    )
    body = f"""<h1>{escape(title)}</h1>
<p class="meta">{len(comparison.studies)} studies · {len(comparison.configs)} configurations in
every study · performance profiles (Dolan &amp; Moré 2002, as AlgoPerf)</p>
<h2>Studies</h2>
{_studies_list(comparison)}
{notes_html}
<h2>Performance profiles</h2>
<figure id="fig-profiles"><img alt="performance profiles figure"
src="data:image/png;base64,{png}"><figcaption>{escape(_CAPTION)}</figcaption></figure>
{_area_table(comparison)}
<h2>Per workload</h2>
{_workload_table(comparison)}
<h2>Configurations not in every study</h2>
{_missing(comparison)}
<h2>Definitions</h2>
<dl>{definitions}</dl>"""
    return page_html(title, _CSS, body)

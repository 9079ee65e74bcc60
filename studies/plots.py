"""The report's figures as PNG bytes, computed from a Report v2 only (matplotlib Agg, no pyplot).

Each figure has a pure "data" function (lr_curve_panels, surface_panels, warmup_panels,
budget_lines) that tests can check without pixels, and a drawing function. A figure of a study
that is not completed says so in its title; a figure with nothing to draw says why.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from studies.analysis.models import ConfigReport, Report, Target
from studies.analysis.names import display_name, warmup_words
from studies.analysis.stats import GOOD_GAP

# Imported once, at module import: a first import of matplotlib from several threads at once (the
# service renders in a thread pool) fails half-initialized. The guard keeps `studies` importable
# without matplotlib; render_plot then raises a clear ImportError.
try:
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.ticker import (
        FuncFormatter,
        LogLocator,
        MaxNLocator,
        NullLocator,
    )
except ImportError as _exc:  # pragma: no cover - matplotlib is a declared dependency
    _MPL_ERROR: ImportError | None = _exc
else:
    _MPL_ERROR = None
# matplotlib is not thread-safe; figures are rendered one at a time (the GIL serializes the work
# anyway, so nothing is lost).
_RENDER_LOCK = threading.Lock()

__all__ = [
    "PLOT_NAMES",
    "BudgetLine",
    "CurveLine",
    "CurvePanel",
    "SurfacePanel",
    "budget_k_axis",
    "budget_lines",
    "lr_curve_panels",
    "render_plot",
    "surface_panels",
    "target_label",
    "warmup_panels",
]

PLOT_NAMES = ("lr_curves", "beta3_surface", "warmup", "budget")

LOSS_LABEL = "capped validation loss L"
LR_LABEL = "learning rate (log scale)"
BUDGET_LABEL = "expected best L after k trials (lr × seed draws)"
_DPI = 100
_PANEL_W, _PANEL_H = 6.4, 4.6  # inches per panel: about 640 × 460 px at 100% zoom
_MAX_COLS = 2
_LEGEND_W = 3.9  # inches kept right of a single panel for its legend
# Colour families: Adam-like warm colours, AdaMod blues, DiffMod greens, so that families read at
# a glance; shades within a family tell β3 values apart.
_FAMILY = {
    "adam": "Reds",
    "adamw": "Oranges",
    "adamod": "Blues",
    "diffmod": "Greens",
    "radam": "RdPu",
    "nadamw": "YlOrBr",
    "sgd": "Greys",
}
_WARMUP_STYLES = ("-", "--", "-.", ":")
_TARGET_COLOR = "#6a3d9a"
# Warmup figure: one colour per warmup value, the same in every panel (the legend is shared).
_WARMUP_COLORS = ("#1f77b4", "#d95f02", "#1b9e77", "#e7298a")


# --------------------------------------------------------------------------- figure data


class CurveLine(NamedTuple):
    """One configuration's curve: median with its p25–p75 band, and every seed's value."""

    label: str
    optimizer: str
    shade: float  # 0..1 position within the optimizer's colour family
    style: str  # matplotlib line style
    lrs: list[float]
    median: list[float]
    p25: list[float]
    p75: list[float]
    # One entry per (lr, seed) result: lr, capped loss, diverged, and the seed's slot among the
    # seeds of its lr in [-0.5, 0.5] (for the jitter that keeps the dots apart).
    seed_lrs: list[float]
    seed_losses: list[float]
    seed_diverged: list[bool]
    seed_slots: list[float]
    color: str | None = None  # overrides the family colour (warmup figure: one per warmup)


class CurvePanel(NamedTuple):
    """One axes of curves, with the untrained model's loss and the target as horizontal lines."""

    title: str
    lines: list[CurveLine]
    loss0: float | None
    target: float | None
    note: str | None = None  # a second title line (the implicit warmup of the warmup figure)


class SurfacePanel(NamedTuple):
    """One heat map: rows β3, columns lr, None where no trial has a result."""

    title: str
    lrs: list[float]
    beta3s: list[float]
    values: list[list[float | None]]
    best: tuple[int, int]  # (row, column) of the best cell
    best_loss: float


class BudgetLine(NamedTuple):
    """Expected best L after k (lr, seed) trials of one configuration."""

    label: str
    optimizer: str
    shade: float
    style: str
    n_trials: int
    k: list[int]
    expected_best: list[float]


def _median(xs: Sequence[float]) -> float | None:
    """Median of a list (None when empty)."""
    return float(np.median(xs)) if len(xs) else None


def _shades(configs: Sequence[ConfigReport]) -> dict[tuple[str, float | None], float]:
    """Shade per (optimizer, β3): spread over the family, darker for larger β3."""
    out: dict[tuple[str, float | None], float] = {}
    by_opt: dict[str, list[float | None]] = {}
    for c in configs:
        b = by_opt.setdefault(c.optimizer, [])
        if c.beta3 not in b:
            b.append(c.beta3)
    for opt, betas in by_opt.items():
        betas.sort(key=lambda b: -1.0 if b is None else b)
        for i, b in enumerate(betas):
            out[(opt, b)] = 0.75 if len(betas) == 1 else 0.45 + 0.5 * i / (len(betas) - 1)
    return out


def _warmup_styles(configs: Sequence[ConfigReport]) -> dict[int, str]:
    """Line style per warmup value: solid without warmup, then dashed, dash-dot, dotted."""
    warmups = sorted({c.warmup_steps for c in configs})
    return {w: _WARMUP_STYLES[i % len(_WARMUP_STYLES)] for i, w in enumerate(warmups)}


def _short_name(optimizer: str, beta3: float | None) -> str:
    """'AdaMod β3=0.999' or 'Adam'."""
    return display_name(optimizer) + ("" if beta3 is None else f" β3={beta3:g}")


def _setting(warmup: int, schedule: str) -> str:
    """'no warmup, constant schedule'."""
    return f"{warmup_words(warmup)}, {schedule} schedule"


def _line(
    c: ConfigReport, label: str, shade: float, style: str = "-", color: str | None = None
) -> CurveLine:
    """A CurveLine from a ConfigReport."""
    seed_lrs: list[float] = []
    seed_losses: list[float] = []
    seed_diverged: list[bool] = []
    seed_slots: list[float] = []
    for p in c.curve:
        n = len(p.seed_values)
        for i, sv in enumerate(p.seed_values):
            seed_lrs.append(p.lr)
            seed_losses.append(sv.loss)
            seed_diverged.append(sv.diverged)
            seed_slots.append(0.0 if n == 1 else i / (n - 1) - 0.5)
    return CurveLine(
        label=label,
        optimizer=c.optimizer,
        shade=shade,
        style=style,
        lrs=[p.lr for p in c.curve],
        median=[p.median for p in c.curve],
        p25=[p.p25 for p in c.curve],
        p75=[p.p75 for p in c.curve],
        seed_lrs=seed_lrs,
        seed_losses=seed_losses,
        seed_diverged=seed_diverged,
        seed_slots=seed_slots,
        color=color,
    )


def _loss0(configs: Sequence[ConfigReport]) -> float | None:
    return _median([c.loss0 for c in configs if c.loss0 is not None])


def target_label(target: Target, *, wrap: bool = False) -> str | None:
    """'target 0.42 (reference: 10% band of Adam, warmup 0)' or '… (spec)'; None without one.

    `wrap` puts the source on a second line (for a legend beside a plot)."""
    if target.loss is None:
        return None
    sep = "\n" if wrap else " "
    if target.source == "spec":
        return f"target {target.loss:.3g}{sep}(spec)"
    if target.source == "reference":
        of = f" of {target.config}" if target.config else ""
        return f"target {target.loss:.3g}{sep}(reference: {GOOD_GAP:.0%} band{of})"
    return f"target {target.loss:.3g}{sep}({target.source})"


def lr_curve_panels(report: Report) -> list[CurvePanel]:
    """One panel per (warmup, schedule), one line per (optimizer, β3)."""
    shades = _shades(report.configs)
    panels = []
    keys = sorted({(c.schedule, c.warmup_steps) for c in report.configs})
    for schedule, w in keys:
        cs = [c for c in report.configs if (c.warmup_steps, c.schedule) == (w, schedule)]
        lines = [
            _line(c, _short_name(c.optimizer, c.beta3), shades[(c.optimizer, c.beta3)]) for c in cs
        ]
        n = sorted({p.n_seeds for c in cs for p in c.curve})
        seeds = f"{n[0]} seeds" if len(n) == 1 else f"{n[0]}–{n[-1]} seeds per lr"
        title = f"{_setting(w, schedule)} · {seeds}"
        panels.append(CurvePanel(title, lines, _loss0(cs), report.target.loss))
    return panels


def _implicit_note(configs: Sequence[ConfigReport]) -> str | None:
    """The implicit warmup of a bounded optimizer: measured where known, else 1/(1−β3)."""
    c = next((c for c in configs if c.warmup_steps == 0), configs[0])
    if c.optimizer not in ("adamod", "diffmod") or c.beta3 is None:
        return None
    expected = f"1/(1−β3) = {1.0 / (1.0 - c.beta3):.0f}" if c.beta3 < 1 else None
    if c.implicit_warmup_steps is not None:
        text = f"implicit warmup: {c.implicit_warmup_steps:.0f} steps measured"
        text += "" if c.warmup_steps == 0 else f" (at {warmup_words(c.warmup_steps)})"
        return text + (f"; {expected}" if expected else "")
    return None if expected is None else f"implicit warmup ≈ {expected} steps (not measured)"


def warmup_panels(report: Report) -> list[CurvePanel]:
    """One panel per (optimizer, β3, schedule) run at several warmups, one line per warmup.

    Panels of AdaMod and DiffMod also show the reference optimizer with warmup (grey): the
    paper's claim is that the bounded optimizer without warmup is as good.
    """
    styles = _warmup_styles(report.configs)
    warmups = sorted({c.warmup_steps for c in report.configs})
    colors = [_WARMUP_COLORS[i % len(_WARMUP_COLORS)] for i in range(len(warmups))]
    panels = []
    for wc in report.warmup:
        cs = [
            c
            for c in report.configs
            if (c.optimizer, c.beta3, c.schedule) == (wc.optimizer, wc.beta3, wc.schedule)
        ]
        cs.sort(key=lambda c: c.warmup_steps)
        lines = [
            _line(c, warmup_words(c.warmup_steps), 0.75, styles[c.warmup_steps], colors[w])
            for c in cs
            for w in [warmups.index(c.warmup_steps)]
        ]
        if wc.optimizer in ("adamod", "diffmod") and report.reference is not None:
            refs = [
                c
                for c in report.configs
                if c.optimizer == report.reference
                and c.schedule == wc.schedule
                and c.warmup_steps > 0
            ]
            lines += [
                _line(
                    c,
                    f"{display_name(c.optimizer)}, {warmup_words(c.warmup_steps)} (reference)",
                    0.75,
                    styles[c.warmup_steps],
                    "0.45",
                )
                for c in refs
            ]
        title = f"{_short_name(wc.optimizer, wc.beta3)}, {wc.schedule} schedule"
        panels.append(CurvePanel(title, lines, _loss0(cs), report.target.loss, _implicit_note(cs)))
    return panels


def surface_panels(report: Report) -> list[SurfacePanel]:
    """One heat map per bounded optimizer, warmup and schedule."""
    out = []
    for s in report.surfaces:
        row, col = s.beta3s.index(s.best_beta3), s.lrs.index(s.best_lr)
        title = f"{display_name(s.optimizer)}, {_setting(s.warmup_steps, s.schedule)}"
        out.append(SurfacePanel(title, s.lrs, s.beta3s, s.median_loss, (row, col), s.best_loss))
    return out


def budget_lines(report: Report) -> list[BudgetLine]:
    """One line per configuration (its label and its number of trials N)."""
    by_label = {c.label: c for c in report.configs}
    shades = _shades(report.configs)
    styles = _warmup_styles(report.configs)
    out = []
    for b in report.budget:
        c = by_label.get(b.label)
        shade = 0.75 if c is None else shades[(c.optimizer, c.beta3)]
        style = "-" if c is None else styles[c.warmup_steps]
        out.append(BudgetLine(b.label, b.optimizer, shade, style, b.n_trials, b.k, b.expected_best))
    return out


# --------------------------------------------------------------------------- drawing


def _mpl() -> tuple[Any, Any]:
    """The Figure and Agg canvas classes, or a clear ImportError when matplotlib is missing."""
    if _MPL_ERROR is not None:  # pragma: no cover
        raise ImportError("studies.plots needs matplotlib: pip install matplotlib") from _MPL_ERROR
    return Figure, FigureCanvasAgg


def _figure(
    n_panels: int, extra_width: float = 0.0, panel_h: float = _PANEL_H
) -> tuple[Any, list[Any]]:
    """A figure with n panels on a grid of at most _MAX_COLS columns (one panel: a wider one)."""
    figure_cls, canvas_cls = _mpl()
    cols = min(max(n_panels, 1), _MAX_COLS)
    rows = math.ceil(max(n_panels, 1) / cols)
    width = (_PANEL_W * cols if cols > 1 else 7.2) + extra_width
    fig = figure_cls(figsize=(width, panel_h * rows), dpi=_DPI)
    canvas_cls(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _png(fig: Any) -> bytes:
    """Encode a figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def _line_color(optimizer: str, shade: float) -> Any:
    """The colour of a line: its optimizer's family at a shade."""
    return colormaps[_FAMILY.get(optimizer, "Purples")](shade)


def _fmt_lr(lr: float) -> str:
    """A compact lr tick label: 1e-3, 3.2e-4."""
    mant, exp = f"{lr:.1e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return mant if int(exp) == 0 else f"{mant}e{int(exp)}"


def _status_note(report: Report) -> str | None:
    """A second title line for a study that is not completed: its figures show partial data."""
    if report.status == "completed":
        return None
    return (
        f"study {report.status}: partial data ({report.n_used} of {report.n_records} trials are "
        "results)"
    )


def _suptitle(fig: Any, name: str, report: Report | None) -> None:
    """The figure title, with the partial-data note under it when the study is not completed."""
    note = None if report is None else _status_note(report)
    fig.suptitle(_TITLES[name], fontsize=14, y=1 - 0.12 / fig.get_size_inches()[1], va="top")
    if note:
        fig.text(0.5, 1 - 0.42 / fig.get_size_inches()[1], note, ha="center", va="top",
                 fontsize=11, color="#b03a2e")  # fmt: skip


def _top_margin(report: Report | None) -> float:
    """Inches above the panels: the title, and the partial-data note when there is one."""
    return 0.95 if report is None or _status_note(report) is None else 1.2


def _no_data(name: str, why: str, report: Report | None = None) -> bytes:
    """A figure that says why there is nothing to draw."""
    figure_cls, canvas_cls = _mpl()
    fig = figure_cls(figsize=(_PANEL_W + 1.0, 2.6), dpi=_DPI)
    canvas_cls(fig)
    fig.text(0.5, 0.42, f"no data: {why}", ha="center", va="center", fontsize=13, wrap=True)
    _suptitle(fig, name, report)
    return _png(fig)


def _log_lr_axis(ax: Any) -> None:
    """Log-scale lr axis with plain-text labels (1e-3): mathtext labels are slow to lay out."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, numticks=12))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: _fmt_lr(x)))
    # No minor ticks: each tick is an artist, and minor ones made up most of a figure's time.
    ax.xaxis.set_minor_locator(NullLocator())


def _grid_step(panels: Sequence[CurvePanel]) -> float:
    """The smallest gap between neighbouring lrs of the panels, in decades (0.5 for one lr)."""
    xs = np.unique(np.round(np.log10([lr for p in panels for ln in p.lines for lr in ln.lrs]), 9))
    gaps = np.diff(xs)
    return float(gaps.min()) if gaps.size else 0.5


def _draw_curve_panels(axes: list[Any], panels: list[CurvePanel], *, seeds: bool) -> list[Any]:
    """Medians with p25–p75 bands, per-seed dots, diverged seeds as x at loss0, loss0 and target
    lines; returns the legend handles (one legend serves every panel)."""
    handles: dict[str, Any] = {}
    step = _grid_step(panels)
    for ax, panel in zip(axes, panels, strict=True):
        n_lines = len(panel.lines)
        # Dodge: each line's seed dots get their own slot around the lr, all within ±0.3 grid
        # steps, so that neither seeds nor configurations hide each other.
        slot = 0.6 * step / max(n_lines, 1)
        for i, line in enumerate(panel.lines):
            color = line.color or _line_color(line.optimizer, line.shade)
            if seeds and line.seed_lrs:
                centre = (i - (n_lines - 1) / 2) * slot
                offsets = centre + 0.7 * slot * np.asarray(line.seed_slots)
                x = np.asarray(line.seed_lrs) * 10.0**offsets
                y = np.asarray(line.seed_losses)
                div = np.asarray(line.seed_diverged, dtype=bool)
                ax.scatter(x[~div], y[~div], s=9, color=color, alpha=0.45, lw=0, zorder=2)
                if div.any():
                    ax.scatter(x[div], y[div], s=30, marker="x", color=color, alpha=0.8,
                               lw=1.4, zorder=2)  # fmt: skip
            elif any(line.seed_diverged):
                div_lrs = sorted({lr for lr, d in zip(line.seed_lrs, line.seed_diverged,
                                                      strict=True) if d})  # fmt: skip
                ys = [line.median[line.lrs.index(lr)] for lr in div_lrs]
                ax.scatter(div_lrs, ys, s=45, marker="x", color=color, lw=2, zorder=4)
            (h,) = ax.plot(line.lrs, line.median, line.style, color=color, lw=2, marker="o",
                           ms=4, label=line.label, zorder=3)  # fmt: skip
            ax.fill_between(line.lrs, line.p25, line.p75, color=color, alpha=0.15, lw=0, zorder=1)
            handles.setdefault(line.label, h)
        if panel.loss0 is not None:
            ax.axhline(panel.loss0, color="0.35", ls=":", lw=1.5, zorder=0)
        if panel.target is not None:
            ax.axhline(panel.target, color=_TARGET_COLOR, ls="--", lw=1.4, zorder=0)
            ax.annotate(f"target {panel.target:.3g}", (0.01, panel.target),
                        xycoords=("axes fraction", "data"), xytext=(0, 3),
                        textcoords="offset points", fontsize=9, color=_TARGET_COLOR,
                        ha="left", va="bottom")  # fmt: skip
        _log_lr_axis(ax)
        title = panel.title if panel.note is None else f"{panel.title}\n{panel.note}"
        ax.set_title(title, fontsize=11.5)
        ax.set_xlabel(LR_LABEL, fontsize=11)
        ax.set_ylabel(LOSS_LABEL, fontsize=11)
        ax.grid(True, which="major", alpha=0.3)
        ax.tick_params(labelsize=10)
    extra = [Patch(color="0.5", alpha=0.3, label="p25–p75 over seeds")]
    if seeds:
        extra.append(Line2D([], [], color="0.3", ls="", marker="o", ms=4, alpha=0.6,
                            label="one seed (jittered in lr)"))  # fmt: skip
        extra.append(Line2D([], [], color="0.3", ls="", marker="x", ms=7, mew=1.4,
                            label="diverged seed (L = loss0)"))  # fmt: skip
    else:
        extra.append(Line2D([], [], color="0.3", ls="", marker="x", ms=8, mew=2,
                            label="some seeds diverged (L = loss0)"))  # fmt: skip
    extra.append(Line2D([], [], color="0.35", ls=":", lw=1.5, label="loss0 (untrained model)"))
    return [*handles.values(), *extra]


def _layout(fig: Any, *, left: float, right: float, top: float, bottom: float) -> None:
    """Fixed margins in inches (tight_layout costs seconds on many log-scale panels)."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height,
                        bottom=bottom / height, wspace=0.25, hspace=0.55)  # fmt: skip


def _legend_and_layout(
    fig: Any, handles: list[Any], n_panels: int, report: Report, *, title_lines: int = 1
) -> None:
    """One shared legend: right of a single panel (keeps the plot tall), below several panels."""
    top = _top_margin(report) + 0.2 * (title_lines - 1)
    if n_panels == 1:
        width, height = fig.get_size_inches()
        fig.set_size_inches(width + _LEGEND_W, height)
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1 - _LEGEND_W / (
            width + _LEGEND_W) + 0.01, 0.5), fontsize=10, frameon=False)  # fmt: skip
        _layout(fig, left=0.8, right=_LEGEND_W + 0.1, top=top, bottom=0.7)
        return
    ncol = min(len(handles), 3)
    rows = math.ceil(len(handles) / ncol)
    legend_h = 0.25 * rows + 0.15
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, height + legend_h)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=10, frameon=False)
    _layout(fig, left=0.8, right=0.25, top=top, bottom=0.65 + legend_h)


def _plot_curve_figure(
    name: str, report: Report, panels: list[CurvePanel], *, seeds: bool
) -> bytes:
    fig, axes = _figure(len(panels), panel_h=_PANEL_H + (0.8 if len(panels) == 1 else 0.0))
    handles = _draw_curve_panels(axes, panels, seeds=seeds)
    label = target_label(report.target, wrap=len(panels) == 1)
    if label is not None:
        handles.append(Line2D([], [], color=_TARGET_COLOR, ls="--", lw=1.4, label=label))
    title_lines = 2 if any(p.note for p in panels) else 1
    _legend_and_layout(fig, handles, len(panels), report, title_lines=title_lines)
    _suptitle(fig, name, report)
    return _png(fig)


def _plot_lr_curves(report: Report) -> bytes:
    panels = lr_curve_panels(report)
    if not panels:
        return _no_data("lr_curves", "no completed or diverged trials yet", report)
    return _plot_curve_figure("lr_curves", report, panels, seeds=True)


def _plot_warmup(report: Report) -> bytes:
    panels = warmup_panels(report)
    if not panels:
        return _no_data(
            "warmup", "the study has no optimizer with results at more than one warmup", report
        )
    return _plot_curve_figure("warmup", report, panels, seeds=False)


def _plot_beta3_surface(report: Report) -> bytes:
    panels = surface_panels(report)
    if not panels:
        return _no_data("beta3_surface", "no AdaMod or DiffMod results with a β3 value yet", report)
    n_beta3 = max(len(p.beta3s) for p in panels)
    # room for the colour bar; a panel of one or two β3 rows need not be as tall as a curve panel
    fig, axes = _figure(len(panels), extra_width=1.4, panel_h=min(_PANEL_H, 2.4 + 0.6 * n_beta3))
    finite = [v for p in panels for row in p.values for v in row if v is not None]
    vmin, vmax = min(finite), max(finite)
    if vmax - vmin < 1e-9 * max(1.0, abs(vmax)):  # one value: a readable scale around it
        pad = 0.05 * max(abs(vmin), 1e-3)
        vmin, vmax = vmin - pad, vmax + pad
    image = None
    cmap = colormaps["viridis_r"]
    for ax, p in zip(axes, panels, strict=True):
        grid = np.array([[np.nan if v is None else v for v in row] for row in p.values])
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=vmin, vmax=vmax,
                          aspect="auto", origin="lower", interpolation="nearest")  # fmt: skip
        ax.set_facecolor("0.85")  # cells without a result show the background
        n_rows, n_cols = grid.shape
        if n_rows * n_cols <= 120 and n_cols <= 14:
            for r in range(n_rows):
                for c in range(n_cols):
                    if not np.isnan(grid[r, c]):
                        light = (grid[r, c] - vmin) / (vmax - vmin) < 0.5  # viridis_r: low = light
                        best = (r, c) == p.best
                        ax.text(c, r, f"{grid[r, c]:.2g}", ha="center", va="center",
                                fontsize=9 if best else 8, fontweight="bold" if best else "normal",
                                color="black" if light else "white")  # fmt: skip
        br, bc = p.best
        ax.add_patch(Rectangle((bc - 0.5, br - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
        step = max(1, math.ceil(n_cols / 7))
        ax.set_xticks(range(0, n_cols, step), [_fmt_lr(x) for x in p.lrs[::step]], fontsize=10)
        ax.set_yticks(range(n_rows), [f"{b:g}" for b in p.beta3s], fontsize=10)
        ax.set_xlabel("learning rate (log-spaced grid)", fontsize=11)
        ax.set_ylabel("β3", fontsize=11)
        ax.set_title(f"{p.title}\nbest: L = {p.best_loss:.3g} at lr {_fmt_lr(p.lrs[bc])}, "
                     f"β3 = {p.beta3s[br]:g}", fontsize=11)  # fmt: skip
    width, height = fig.get_size_inches()
    legend_h = 0.45
    fig.set_size_inches(width, height + legend_h)
    width, height = fig.get_size_inches()
    top = _top_margin(report) + 0.2
    bottom = 0.7 + legend_h
    right = 1 - 1.6 / width
    fig.subplots_adjust(bottom=bottom / height, top=1 - top / height, left=0.9 / width,
                        right=right, hspace=0.6, wspace=0.3)  # fmt: skip
    cax = fig.add_axes((right + 0.25 / width, bottom / height, 0.2 / width,
                        1 - (top + bottom) / height))  # fmt: skip
    cbar = fig.colorbar(image, cax=cax)
    bar_h = height - top - bottom  # inches: a short bar gets a short, two-line label
    label = (
        "median capped validation loss L (lower is better)"
        if bar_h >= 4.2
        else "median capped val. loss L\n(lower is better)"
        if bar_h >= 2.6
        else "median L\n(lower is better)"
    )
    cbar.set_label(label, fontsize=10.5)
    handles = [
        Patch(facecolor="none", edgecolor="red", lw=2.5, label="best cell (lowest median L)"),
        Patch(facecolor="0.85", label="no result"),
        Line2D([], [], ls="", label="β3: the bound's memory, about 1/(1−β3) steps"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=10, frameon=False)
    _suptitle(fig, "beta3_surface", report)
    return _png(fig)


_LOG_K = 40  # from this many trials on, the budget's k axis is logarithmic


def budget_k_axis(ax: Any, k_max: int) -> None:
    """Integer ticks on the k axis: linear up to _LOG_K trials, logarithmic (1, 2, 5, 10, …)
    beyond, where the early k, where the curves fall, would otherwise be squeezed together."""
    if k_max > _LOG_K:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:.0f}"))
        ax.set_xlim(0.9, k_max * 1.1)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
        ax.set_xlim(0.5, k_max + 0.5)


def _plot_budget(report: Report) -> bytes:
    lines = [ln for ln in budget_lines(report) if ln.k]
    if not lines:
        return _no_data("budget", "no completed or diverged trials yet", report)
    figure_cls, canvas_cls = _mpl()
    fig = figure_cls(figsize=(_PANEL_W * 1.2 + _LEGEND_W, _PANEL_H + 0.6), dpi=_DPI)
    canvas_cls(fig)
    ax = fig.subplots()
    markers = all(len(ln.k) <= 30 for ln in lines)
    sizes = sorted({ln.n_trials for ln in lines})
    for line in lines:
        label = line.label if len(sizes) == 1 else f"{line.label} (N={line.n_trials})"
        ax.plot(line.k, line.expected_best, line.style, color=_line_color(line.optimizer,
                line.shade), lw=2, label=label, marker="o" if markers else None,
                ms=3.5)  # fmt: skip
    k_max = max(max(ln.k) for ln in lines)
    budget_k_axis(ax, k_max)
    handles, _ = ax.get_legend_handles_labels()
    label = target_label(report.target, wrap=True)
    if report.target.loss is not None and label is not None:
        ax.axhline(report.target.loss, color=_TARGET_COLOR, ls="--", lw=1.4, zorder=0)
        handles.append(Line2D([], [], color=_TARGET_COLOR, ls="--", lw=1.4, label=label))
    ax.set_xlabel("trials k (log scale)" if k_max > _LOG_K else "trials k", fontsize=11)
    ax.set_ylabel(BUDGET_LABEL, fontsize=11)
    if len(sizes) == 1:
        what = f"every curve has N = {sizes[0]} trials (its lrs × seeds)"
    else:
        what = "each curve ends at its own N = lrs × seeds with a result"
    ax.set_title(f"lower is better; {what}", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=10)
    width = fig.get_size_inches()[0]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1 - _LEGEND_W / width + 0.01,
               0.5), fontsize=9.5 if len(handles) <= 20 else 8, frameon=False)  # fmt: skip
    _layout(fig, left=0.85, right=_LEGEND_W + 0.1, top=_top_margin(report), bottom=0.7)
    _suptitle(fig, "budget", report)
    return _png(fig)


_TITLES = {
    "lr_curves": "Capped validation loss vs learning rate (median, p25–p75 and every seed)",
    "beta3_surface": "Median capped validation loss over lr × β3",
    "warmup": "With and without warmup (median and p25–p75 over seeds)",
    "budget": "Tuning budget: expected best L after k random (lr, seed) trials",
}
_RENDERERS: dict[str, Callable[[Report], bytes]] = {
    "lr_curves": _plot_lr_curves,
    "beta3_surface": _plot_beta3_surface,
    "warmup": _plot_warmup,
    "budget": _plot_budget,
}


def render_plot(report: Report, name: str) -> bytes:
    """The PNG of figure `name` (one of PLOT_NAMES) drawn from `report`; ValueError if unknown."""
    if name not in _RENDERERS:
        raise ValueError(f"name must be one of {', '.join(PLOT_NAMES)}; got {name!r}")
    if not isinstance(report, Report):
        raise ValueError(f"report must be a Report, got {type(report).__name__}")
    with _RENDER_LOCK:
        return _RENDERERS[name](report)

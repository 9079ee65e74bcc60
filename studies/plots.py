"""The report's figures as PNG bytes, computed from a Report only (matplotlib Agg, no pyplot)."""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from studies.analysis.models import Report
from studies.report import display_name

# Imported once, at module import: a first import of matplotlib from several threads at once (the
# service renders in a thread pool) fails half-initialized. The guard keeps `studies` importable
# without matplotlib; render_plot then raises a clear ImportError.
try:
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
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
    "budget_lines",
    "lr_curve_panels",
    "render_plot",
    "surface_panels",
    "warmup_panels",
]

PLOT_NAMES = ("lr_curves", "beta3_surface", "warmup", "budget")

LOSS_LABEL = "capped val. loss L (loss units)"
LR_LABEL = "learning rate (log scale)"
_DPI = 100
_PANEL_W, _PANEL_H = 6.4, 4.4  # inches per panel: about 640 × 440 px at 100% zoom
_MAX_COLS = 2
# Colour families: Adam-like warm colours, AdaMod blues, DiffMod greens, so that families read at
# a glance; shades within a family tell β3 values apart.
_FAMILY = {
    "adam": "Reds",
    "adamw": "Oranges",
    "adamod": "Blues",
    "diffmod": "Greens",
    "sgd": "Greys",
}


# --------------------------------------------------------------------------- figure data


class CurveLine(NamedTuple):
    """One configuration's curve: median with its p25–p75 band and its diverged points."""

    label: str
    optimizer: str
    shade: float  # 0..1 position within the optimizer's colour family
    lrs: list[float]
    median: list[float]
    p25: list[float]
    p75: list[float]
    diverged_lrs: list[float]
    diverged_medians: list[float]


class CurvePanel(NamedTuple):
    """One axes of curves, with the untrained model's loss as a reference."""

    title: str
    lines: list[CurveLine]
    loss0: float | None


class SurfacePanel(NamedTuple):
    """One heat map: rows β3, columns lr, None where no trial finished."""

    title: str
    lrs: list[float]
    beta3s: list[float]
    values: list[list[float | None]]
    best: tuple[int, int]  # (row, column) of the best cell
    best_loss: float


class BudgetLine(NamedTuple):
    """Expected best loss after k configurations for one optimizer."""

    label: str
    optimizer: str
    k: list[int]
    expected_best: list[float]


def _line(c: Any, label: str, shade: float) -> CurveLine:
    """A CurveLine from a ConfigReport."""
    div = [p for p in c.curve if p.n_diverged > 0]
    return CurveLine(
        label=label,
        optimizer=c.optimizer,
        shade=shade,
        lrs=[p.lr for p in c.curve],
        median=[p.median for p in c.curve],
        p25=[p.p25 for p in c.curve],
        p75=[p.p75 for p in c.curve],
        diverged_lrs=[p.lr for p in div],
        diverged_medians=[p.median for p in div],
    )


def _median(xs: list[float]) -> float | None:
    """Median of a list (None when empty)."""
    xs = sorted(xs)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def _shades(report: Report) -> dict[tuple[str, float | None], float]:
    """Shade per (optimizer, β3): spread over the family, darker for larger β3."""
    out: dict[tuple[str, float | None], float] = {}
    by_opt: dict[str, list[float | None]] = {}
    for c in report.configs:
        b = by_opt.setdefault(c.optimizer, [])
        if c.beta3 not in b:
            b.append(c.beta3)
    for opt, betas in by_opt.items():
        betas.sort(key=lambda b: -1.0 if b is None else b)
        for i, b in enumerate(betas):
            out[(opt, b)] = 0.75 if len(betas) == 1 else 0.45 + 0.5 * i / (len(betas) - 1)
    return out


def _short_name(optimizer: str, beta3: float | None) -> str:
    """'AdaMod β3=0.999' or 'Adam'."""
    return display_name(optimizer) + ("" if beta3 is None else f" β3={beta3:g}")


def lr_curve_panels(report: Report) -> list[CurvePanel]:
    """One panel per warmup value, one line per (optimizer, β3)."""
    shades = _shades(report)
    panels = []
    for w in sorted({c.warmup_steps for c in report.configs}):
        cs = [c for c in report.configs if c.warmup_steps == w]
        lines = [_line(c, _short_name(c.optimizer, c.beta3), shades[(c.optimizer, c.beta3)])
                 for c in cs]  # fmt: skip
        title = "no warmup" if w == 0 else f"warmup {w} steps"
        panels.append(
            CurvePanel(title, lines, _median([c.loss0 for c in cs if c.loss0 is not None]))
        )
    return panels


def warmup_panels(report: Report) -> list[CurvePanel]:
    """One panel per (optimizer, β3) run with and without warmup, one line per warmup value."""
    panels = []
    for wc in report.warmup:
        cs = [c for c in report.configs if (c.optimizer, c.beta3) == (wc.optimizer, wc.beta3)]
        cs.sort(key=lambda c: c.warmup_steps)
        lines = [
            _line(c, "no warmup" if c.warmup_steps == 0 else f"warmup {c.warmup_steps} steps",
                  0.35 + 0.6 * i / max(len(cs) - 1, 1))
            for i, c in enumerate(cs)
        ]  # fmt: skip
        loss0 = _median([c.loss0 for c in cs if c.loss0 is not None])
        panels.append(CurvePanel(_short_name(wc.optimizer, wc.beta3), lines, loss0))
    return panels


def surface_panels(report: Report) -> list[SurfacePanel]:
    """One heat map per bounded optimizer and warmup value."""
    out = []
    for s in report.surfaces:
        row, col = s.beta3s.index(s.best_beta3), s.lrs.index(s.best_lr)
        title = f"{display_name(s.optimizer)}, " + (
            "no warmup" if s.warmup_steps == 0 else f"warmup {s.warmup_steps} steps"
        )
        out.append(SurfacePanel(title, s.lrs, s.beta3s, s.median_loss, (row, col), s.best_loss))
    return out


def budget_lines(report: Report) -> list[BudgetLine]:
    """One line per optimizer."""
    return [
        BudgetLine(f"{display_name(b.optimizer)} ({b.n_configurations} configurations)",
                   b.optimizer, b.k, b.expected_best)
        for b in report.budget
    ]  # fmt: skip


# --------------------------------------------------------------------------- drawing


def _mpl() -> tuple[Any, Any]:
    """The Figure and Agg canvas classes, or a clear ImportError when matplotlib is missing."""
    if _MPL_ERROR is not None:  # pragma: no cover
        raise ImportError("studies.plots needs matplotlib: pip install matplotlib") from _MPL_ERROR
    return Figure, FigureCanvasAgg


def _figure(n_panels: int, extra_width: float = 0.0) -> tuple[Any, list[Any]]:
    """A figure with n panels on a grid of at most _MAX_COLS columns (one panel: a wider one)."""
    figure_cls, canvas_cls = _mpl()
    cols = min(max(n_panels, 1), _MAX_COLS)
    rows = math.ceil(max(n_panels, 1) / cols)
    width = (_PANEL_W * cols if cols > 1 else 8.0) + extra_width
    fig = figure_cls(
        figsize=(width, _PANEL_H * rows + (1.2 if rows > 1 or cols > 1 else 0.6)), dpi=_DPI
    )
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


def _color(optimizer: str, shade: float) -> Any:
    """The line colour of an optimizer at a shade of its family."""
    return colormaps[_FAMILY.get(optimizer, "Purples")](shade)


def _fmt_lr(lr: float) -> str:
    """A compact lr tick label: 1e-3, 3.2e-4."""
    mant, exp = f"{lr:.1e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return mant if int(exp) == 0 else f"{mant}e{int(exp)}"


def _no_data(name: str, why: str) -> bytes:
    """A figure that says why there is nothing to draw."""
    fig, (ax,) = _figure(1)
    fig.set_size_inches(_PANEL_W, 2.4)
    ax.set_axis_off()
    ax.text(0.5, 0.5, f"no data: {why}", ha="center", va="center", fontsize=13, wrap=True)
    fig.suptitle(_TITLES[name], fontsize=14)
    return _png(fig)


def _draw_curves(fig: Any, axes: list[Any], panels: list[CurvePanel], *, by_family: bool) -> None:
    """Draw the panels, then the legend and layout (see _legend_and_layout)."""
    handles = _draw_curve_panels(axes, panels, by_family=by_family)
    _legend_and_layout(fig, handles, len(axes))


def _draw_curve_panels(axes: list[Any], panels: list[CurvePanel], *, by_family: bool) -> list[Any]:
    """Median lines with p25–p75 bands, diverged x marks and the loss0 line, one legend below."""
    handles: dict[str, Any] = {}
    for ax, panel in zip(axes, panels, strict=True):
        for i, line in enumerate(panel.lines):
            color = (_color(line.optimizer, line.shade) if by_family
                     else _color_cycle(i))  # fmt: skip
            style = "-" if by_family or i == 0 else "--"
            (h,) = ax.plot(
                line.lrs, line.median, style, color=color, lw=2, marker="o", ms=4, label=line.label
            )
            ax.fill_between(line.lrs, line.p25, line.p75, color=color, alpha=0.18, lw=0)
            if line.diverged_lrs:
                ax.plot(line.diverged_lrs, line.diverged_medians, "x", color=color, ms=10, mew=2.5)
            handles.setdefault(line.label, h)
        if panel.loss0 is not None:
            ax.axhline(panel.loss0, color="0.35", ls=":", lw=1.5)
        _log_lr_axis(ax)
        ax.set_title(panel.title, fontsize=12)
        ax.set_xlabel(LR_LABEL, fontsize=11)
        ax.set_ylabel(LOSS_LABEL, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.tick_params(labelsize=10)
    extra = [
        Patch(color="0.5", alpha=0.3, label="p25–p75 over seeds"),
        Line2D([], [], color="0.2", ls="", marker="x", ms=9, mew=2.5,
               label="some seeds diverged (count as loss0)"),
        Line2D([], [], color="0.35", ls=":", lw=1.5, label="loss0 (untrained model)"),
    ]  # fmt: skip
    return [*handles.values(), *extra]


def _log_lr_axis(ax: Any) -> None:
    """Log-scale lr axis with plain-text labels (1e-3): mathtext labels are slow to lay out."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, numticks=12))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: _fmt_lr(x)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _layout(fig: Any, *, left: float, right: float, top: float, bottom: float) -> None:
    """Fixed margins in inches (tight_layout costs seconds on many log-scale panels)."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height,
                        bottom=bottom / height, wspace=0.28, hspace=0.5)  # fmt: skip


def _legend_and_layout(fig: Any, handles: list[Any], n_panels: int) -> None:
    """One shared legend: right of a single panel (keeps the plot tall), below several panels."""
    if n_panels == 1:
        width = fig.get_size_inches()[0] + 3.6
        fig.set_size_inches(width, fig.get_size_inches()[1])
        fig.legend(handles=handles, loc="center right", fontsize=10, frameon=False)
        _layout(fig, left=0.8, right=3.9, top=0.9, bottom=0.7)
        return
    ncol = min(len(handles), 4)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=10, frameon=False)
    rows = math.ceil(len(handles) / ncol)
    _layout(fig, left=0.8, right=0.25, top=0.9, bottom=0.75 + 0.22 * rows + 0.1)


def _color_cycle(i: int) -> Any:
    """Distinct colours for lines of one panel that are not optimizer families (warmup values)."""
    return colormaps["tab10"](i % 10)


def _plot_lr_curves(report: Report) -> bytes:
    panels = lr_curve_panels(report)
    if not panels:
        return _no_data("lr_curves", "no completed or diverged trials yet")
    fig, axes = _figure(len(panels))
    fig.suptitle(_TITLES["lr_curves"], fontsize=14)
    _draw_curves(fig, axes, panels, by_family=True)
    return _png(fig)


def _plot_warmup(report: Report) -> bytes:
    panels = warmup_panels(report)
    if not panels:
        return _no_data("warmup", "the study has no optimizer run both with and without warmup")
    fig, axes = _figure(len(panels))
    fig.suptitle(_TITLES["warmup"], fontsize=14)
    # Warmup labels repeat across panels with the same colours, so one legend serves them all.
    _draw_curves(fig, axes, panels, by_family=False)
    return _png(fig)


def _plot_beta3_surface(report: Report) -> bytes:
    panels = surface_panels(report)
    if not panels:
        return _no_data("beta3_surface", "no AdaMod or DiffMod trials with a β3 value yet")
    fig, axes = _figure(len(panels), extra_width=1.6)  # room for the colour bar
    finite = [v for p in panels for row in p.values for v in row if v is not None]
    vmin, vmax = min(finite), max(finite)
    if vmax - vmin < 1e-9 * max(1.0, abs(vmax)):  # one value: a readable scale around it
        pad = 0.05 * max(abs(vmin), 1e-3)
        vmin, vmax = vmin - pad, vmax + pad
    image = None
    for ax, p in zip(axes, panels, strict=True):
        grid = np.array([[np.nan if v is None else v for v in row] for row in p.values])
        masked = np.ma.masked_invalid(grid)
        cmap = _mpl_cmap("viridis_r")
        image = ax.imshow(masked, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", origin="lower")
        ax.set_facecolor("0.85")  # missing cells show the background
        n_rows, n_cols = grid.shape
        if n_rows * n_cols <= 80:
            for r in range(n_rows):
                for c in range(n_cols):
                    if not np.isnan(grid[r, c]):
                        light = (grid[r, c] - vmin) / (vmax - vmin) < 0.5  # viridis_r: low = light
                        best = (r, c) == p.best
                        ax.text(c, r, f"{grid[r, c]:.2g}", ha="center", va="center",
                                fontsize=9 if best else 8, fontweight="bold" if best else "normal",
                                color="black" if light else "white")  # fmt: skip
        br, bc = p.best
        ax.add_patch(_rect(bc, br))
        step = max(1, math.ceil(n_cols / 8))
        ax.set_xticks(range(0, n_cols, step), [_fmt_lr(x) for x in p.lrs[::step]], fontsize=10)
        ax.set_yticks(range(n_rows), [f"{b:g}" for b in p.beta3s], fontsize=10)
        ax.set_xlabel("learning rate (log-spaced grid)", fontsize=11)
        ax.set_ylabel("β3 (bound memory, 1/(1−β3) steps)", fontsize=10)
        ax.set_title(p.title, fontsize=12)
    width, height = fig.get_size_inches()
    bottom = 1.2 / height
    right = 1 - 1.7 / width
    fig.subplots_adjust(bottom=bottom, top=1 - 0.8 / height, left=0.9 / width, right=right,
                        hspace=0.45, wspace=0.32)  # fmt: skip
    cax = fig.add_axes((right + 0.3 / width, bottom, 0.2 / width, 1 - 0.8 / height - bottom))
    cbar = fig.colorbar(image, cax=cax)
    cbar.set_label("median capped val. loss (lower is better)", fontsize=10)
    handles = [
        Patch(facecolor="none", edgecolor="red", lw=2.5, label="best cell (lowest median loss)"),
        Patch(facecolor="0.85", label="no finished trial"),
    ]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=10, frameon=False)
    fig.suptitle(_TITLES["beta3_surface"], fontsize=14)
    return _png(fig)


def _rect(col: int, row: int) -> Any:
    """An outline around one heat-map cell."""
    return Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, ec="red", lw=2.5)


def _mpl_cmap(name: str) -> Any:
    """A colormap by name."""
    return colormaps[name]


def _plot_budget(report: Report) -> bytes:
    lines = budget_lines(report)
    if not lines:
        return _no_data("budget", "no completed or diverged trials yet")
    fig, (ax,) = _figure(1)
    fig.set_size_inches(_PANEL_W * 1.25, _PANEL_H + 1.2)
    markers = all(len(ln.k) <= 30 for ln in lines)
    for line in lines:
        color = _color(line.optimizer, 0.75)
        ax.plot(line.k, line.expected_best, "-", color=color, lw=2.2, label=line.label,
                marker="o" if markers else None, ms=4)  # fmt: skip
    k_max = max(max(ln.k) for ln in lines)
    if k_max > 20:
        ax.set_xscale("log")
        ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if t <= k_max]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel("configurations tried k (grid points drawn at random)", fontsize=11)
    ax.set_ylabel("expected best median capped loss", fontsize=11)
    ax.set_title("lower is better; each curve ends at its optimizer's grid size", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=10, loc="upper right")
    fig.suptitle(_TITLES["budget"], fontsize=14)
    fig.tight_layout()
    return _png(fig)


_TITLES = {
    "lr_curves": "Capped validation loss vs learning rate (median over seeds)",
    "beta3_surface": "Median capped validation loss over lr × β3",
    "warmup": "With and without warmup",
    "budget": "Tuning budget: expected best loss after k random configurations",
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

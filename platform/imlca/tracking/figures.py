"""Figures of runs and sweeps, drawn with matplotlib's object API (no pyplot: no global state, no display).

Pure drawing: each function takes plain numbers and returns a `Figure`; tracking/ logs them to MLflow and the
report inlines them. Accuracies are percentages; an accuracy matrix is lower-triangular, row t = after task t.
"""
from __future__ import annotations

import io
import math
import statistics

from matplotlib.figure import Figure

from imlca.registries import METHODS

Matrix = list[list[float]]


def label(method: str) -> str:
    """`im_lca` → `IM+LCA`, as the paper's tables write it."""
    return METHODS[method].label if method in METHODS else method


def accuracy_curves(acc: dict[str, Matrix], title: str = "") -> Figure:
    """A_t (mean accuracy over the seen tasks after task t) against t, one line per method."""
    fig = Figure(figsize=(5.0, 3.4), layout="constrained")
    ax = fig.add_subplot()
    for method, rows in acc.items():
        ax.plot(range(len(rows)), [sum(r) / len(r) for r in rows], marker="o", label=label(method))
    ax.set(xlabel="after task", ylabel="A_t (%)", title=title or "accuracy over seen tasks")
    ax.set_xticks(range(max((len(r) for r in acc.values()), default=0)))
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def square(rows: Matrix) -> list[list[float]]:
    """Lower-triangular rows → a T×T grid with NaN above the diagonal (not evaluated yet)."""
    width = len(rows)
    return [[row[j] if j < len(row) else math.nan for j in range(width)] for row in rows]


def accuracy_heatmap(rows: Matrix, title: str = "") -> Figure:
    """acc[t][j]: accuracy on task j after task t, as a colour grid with the values written in."""
    grid = square(rows)
    fig = Figure(figsize=(4.2, 3.6), layout="constrained")
    ax = fig.add_subplot()
    mesh = ax.pcolormesh(grid, vmin=0, vmax=100, cmap="viridis")
    for t, row in enumerate(rows):
        for j, value in enumerate(row):
            ax.text(j + 0.5, t + 0.5, f"{value:.0f}", ha="center", va="center",
                    color="white" if value < 60 else "black", fontsize=8)
    ax.set(xlabel="task evaluated", ylabel="after task", title=title or "accuracy matrix (%)")
    ax.set_xticks([j + 0.5 for j in range(len(grid))], range(len(grid)))
    ax.set_yticks([t + 0.5 for t in range(len(grid))], range(len(grid)))
    ax.invert_yaxis()
    fig.colorbar(mesh, ax=ax)
    return fig


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def sweep_lines(points: dict[str, dict[float, list[float]]], key: str, metric: str = "Ā") -> Figure:
    """`metric` against one swept key: method → key value → values over seeds; mean line, std error bars."""
    fig = Figure(figsize=(5.0, 3.4), layout="constrained")
    ax = fig.add_subplot()
    for method, by_value in points.items():
        xs = sorted(by_value)
        stats = [mean_std(by_value[x]) for x in xs]
        ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3,
                    label=label(method))
    ax.set(xlabel=key, ylabel=f"{metric} (%)", title=f"{metric} against {key}")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def sweep_heatmap(cells: dict[tuple, list[float]], xkey: str, ykey: str, metric: str = "Ā") -> Figure:
    """Mean `metric` over seeds on the grid of two swept keys: (x value, y value) → values."""
    xs = sorted({x for x, _ in cells}, key=_order)
    ys = sorted({y for _, y in cells}, key=_order)
    grid = [[mean_std(cells[(x, y)])[0] if (x, y) in cells else math.nan for x in xs] for y in ys]
    fig = Figure(figsize=(4.6, 3.6), layout="constrained")
    ax = fig.add_subplot()
    mesh = ax.pcolormesh(grid, cmap="viridis")
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if not math.isnan(value):
                ax.text(j + 0.5, i + 0.5, f"{value:.1f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_xticks([j + 0.5 for j in range(len(xs))], [str(x) for x in xs])
    ax.set_yticks([i + 0.5 for i in range(len(ys))], [str(y) for y in ys])
    ax.set(xlabel=xkey, ylabel=ykey, title=f"mean {metric} (%)")
    fig.colorbar(mesh, ax=ax)
    return fig


def _order(value):
    """Numbers by value, anything else by name (swept values may be strings: merge rules)."""
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def method_bars(values: dict[tuple[str, str], list[float]], metric: str = "Ā") -> Figure:
    """(benchmark, method) → values over runs (seeds, other settings): grouped bars per benchmark, error bars =
    their std."""
    benchmarks = sorted({b for b, _ in values})
    methods = [m for m in METHODS if any(k[1] == m for k in values)]
    methods += sorted({m for _, m in values} - set(methods))
    width = 0.8 / max(len(methods), 1)
    fig = Figure(figsize=(1.6 + 1.6 * len(benchmarks), 3.4), layout="constrained")
    ax = fig.add_subplot()
    for i, method in enumerate(methods):
        xs = [b + (i - (len(methods) - 1) / 2) * width for b, name in enumerate(benchmarks)
              if (name, method) in values]
        stats = [mean_std(values[(name, method)]) for name in benchmarks if (name, method) in values]
        ax.bar(xs, [m for m, _ in stats], width, yerr=[s for _, s in stats], capsize=3, label=label(method))
    ax.set_xticks(range(len(benchmarks)), benchmarks)
    ax.set(ylabel=f"{metric} (%)", title=f"{metric} (mean ± std over runs)")
    ax.legend()
    return fig


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()

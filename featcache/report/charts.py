"""compare's charts (matplotlib, Agg): legends outside the axes and ``bbox_inches="tight"``, so no
legend covers a bar and no name is cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display needed, safe in threads
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _finish(fig, ax, xlabel: str, title: str, legend: bool, path: Path) -> Path:
    """Accuracy on y, a grid, the legend outside the axes (right), saved."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean CV accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    return _save(fig, path)


def plot_bars(names: list[str], series: dict[str, list[float | None]], path: Path, xlabel: str = "accuracy",
              title: str = "featcache compare", errors: dict[str, list[tuple[float, float]]] | None = None) -> Path:
    """Horizontal bars per name (first name at the top), one colour per series; ``errors``: (low,
    high) bounds drawn as whiskers."""
    plt = _pyplot()
    names = names[::-1]
    y = np.arange(len(names))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * len(names) * max(1, len(series)) ** 0.5))
    for i, (label, values) in enumerate(series.items()):
        vals = np.array([v if v is not None else np.nan for v in values[::-1]], float)
        pos = y + (len(series) - 1) * width / 2 - i * width
        err = None
        if errors and label in errors:
            bounds = np.array(errors[label][::-1], float)
            err = np.abs(np.stack([vals - bounds[:, 0], bounds[:, 1] - vals]))
        ax.barh(pos, vals, width, xerr=err, capsize=3, label=label)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, path)


MIN_Y_SPAN = 0.1  # accuracy: a narrower axis turns a 1-point gap into half the picture


def plain_log_ticks(ax, low: float, high: float, axis: str = "x") -> list[float]:
    """Plain tick labels (14, 20, 50; never 1.4x10^1) on a log axis from ``low`` to ``high``: 1-2-5
    steps of each decade, or every 1-9 step when that leaves fewer than three."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    decades = range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
    for steps in ((1, 2, 5), range(1, 10)):
        ticks = [m * 10.0 ** d for d in decades for m in steps if low <= m * 10.0 ** d <= high]
        if len(ticks) >= 3:
            break
    if len(ticks) < 2:  # a range inside one 1-9 step: its ends
        ticks = sorted({float(f"{low:.2g}"), float(f"{high:.2g}")})
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(FixedLocator(ticks))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_locator(NullLocator())
    target.set_minor_formatter(NullFormatter())
    return ticks


def pareto_figure(names: list[str], accuracy: list[float], throughput: list[float | None], front: list[bool],
                  intervals: list[tuple[float, float]] | None = None):
    """Accuracy (with its CV interval as an error bar) vs extraction throughput on a log axis; the
    Pareto front joined by a line, and named in the legend, only when it has two or more points.
    The y-range spans every interval (and at least 0.1), so gaps smaller than the intervals do not
    look like differences. -> (figure, axes)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    bounds = intervals or [(a, a) for a in accuracy]
    known = [(n, a, t, f, b) for n, a, t, f, b in zip(names, accuracy, throughput, front, bounds, strict=True) if t]
    for n, a, t, f, (lo, hi) in known:
        ax.errorbar([t], [a], yerr=[[a - lo], [hi - a]], fmt="*" if f else "o", markersize=11 if f else 7,
                    capsize=4, label=n, zorder=3)
    line = sorted((t, a) for _, a, t, f, _ in known if f)
    if len(line) >= 2:
        ax.plot(*zip(*line, strict=True), "k--", lw=1, label="Pareto front", zorder=2)
    ax.set_xscale("log")
    if known:
        speeds = [t for _, _, t, _, _ in known]
        low, high = min(speeds) / 1.25, max(speeds) * 1.25
        ax.set_xlim(low, high)
        plain_log_ticks(ax, low, high)
        lows, highs = [b[0] for *_, b in known], [b[1] for *_, b in known]
        y0, y1 = min(lows), max(highs)
        grow = max(MIN_Y_SPAN - (y1 - y0), 0) / 2 + 0.05 * max(y1 - y0, MIN_Y_SPAN)
        ax.set_ylim(y0 - grow, y1 + grow)
    return fig, ax


def plot_pareto(names: list[str], accuracy: list[float], throughput: list[float | None], front: list[bool],
                path: Path, intervals: list[tuple[float, float]] | None = None) -> Path:
    """pareto_figure, saved."""
    fig, ax = pareto_figure(names, accuracy, throughput, front, intervals)
    title = "accuracy (95% CV interval) vs cost" + (" (*: on the Pareto front)" if any(front) else "")
    return _finish(fig, ax, "backbone throughput (views/s as extracted, log scale)", title,
                   bool(ax.get_legend_handles_labels()[0]), path)


def plot_curves(curves: dict[str, dict[str, tuple[float, float, float]]], path: Path) -> Path:
    """Accuracy (mean, low, high) vs labelled images per class, one line per entry; "all" last."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = list(next(iter(curves.values())).keys()) if curves else []
    x = np.arange(len(labels))
    for name, points in curves.items():
        m = np.array([points[s] for s in labels], float)
        ax.plot(x, m[:, 0], marker="o", label=name)
        ax.fill_between(x, m[:, 1], m[:, 2], alpha=0.15)
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1.02)
    return _finish(fig, ax, "labelled images per class", "few-shot learning curves (band: 95% interval)",
                   bool(curves), path)

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


def plot_pareto(names: list[str], accuracy: list[float], throughput: list[float | None], front: list[bool],
                path: Path) -> Path:
    """Accuracy vs extraction throughput; the Pareto front joined by a line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    known = [(n, a, t, f) for n, a, t, f in zip(names, accuracy, throughput, front, strict=True) if t]
    for n, a, t, f in known:
        ax.scatter([t], [a], s=60, marker="*" if f else "o", label=n, zorder=3)
    line = sorted((t, a) for _, a, t, f in known if f)
    if line:
        ax.plot(*zip(*line, strict=True), "k--", lw=1, label="Pareto front", zorder=2)
    ax.set_xscale("log")
    return _finish(fig, ax, "backbone throughput (views/s as extracted, log scale)", "accuracy vs cost (*: on the Pareto front)",
                   bool(known), path)


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

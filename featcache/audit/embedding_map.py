"""A 2-D map of the view-0 embeddings, coloured by class, with the flagged images marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .sheets import agg_pyplot, save_figure, short_path

# finding -> (marker, colour, size, label): drawn over the class-coloured dots, in black with a white
# halo: no class colour (tab20, or turbo past 20 classes) is black, so a mark never reads as a class
MARKS = {
    "label_issues": ("x", "black", 55, "likely label error"),
    "duplicates": ("s", "black", 60, "duplicate"),
    "outliers": ("o", "black", 120, "outlier"),
}
LABEL_COLUMN = (1.02, 0.98, 0.045)  # outlier names: x, top y and spacing, in axes fractions (right of the map)
TSNE_INPUT_DIMS = 50  # t-SNE on a PCA reduction, as its authors advise: faster, and noise removed first


def embed_2d(unit: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(n, D) unit-normalised features -> (n, 2) coordinates. PCA of unit rows keeps the cosine
    geometry the audit uses; t-SNE shows local clusters better, at a cost of minutes per 10k images."""
    from sklearn.decomposition import PCA

    if len(unit) < 3:
        return np.zeros((len(unit), 2))
    if method == "pca":
        return PCA(2, random_state=seed).fit_transform(unit)
    from sklearn.manifold import TSNE

    reduced = PCA(min(TSNE_INPUT_DIMS, *unit.shape), random_state=seed).fit_transform(unit)
    return TSNE(2, init="pca", perplexity=min(30.0, (len(unit) - 1) / 3), random_state=seed).fit_transform(reduced)


def map_figure(xy: np.ndarray, labels: np.ndarray, classes: list[str], marks: dict[str, np.ndarray],
               paths: list[str], title: str, annotate: np.ndarray | None = None):
    """``marks``: finding type -> rows to mark; ``annotate``: rows to name, in a column right of the
    map, numbered by rank, each joined to its dot by a thin line (names never overlap, however close
    the dots). -> (figure, axes)."""
    from matplotlib import patheffects

    plt = agg_pyplot()
    fig, ax = plt.subplots(figsize=(10, 8))
    n = len(classes)
    cmap = class_colours(n)
    ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap=cmap, vmin=-0.5, vmax=max(n, 2) - 0.5, s=14, alpha=0.8,
               linewidths=0, rasterized=len(xy) > 5000)
    halo = [patheffects.withStroke(linewidth=3, foreground="white")]
    for finding, rows in marks.items():
        if len(rows):
            marker, colour, size, label = MARKS[finding]
            filled = marker == "x"
            ax.scatter(xy[rows, 0], xy[rows, 1], marker=marker, s=size, label=f"{label} ({len(rows)})",
                       facecolors=colour if filled else "none", edgecolors=None if filled else colour,
                       linewidths=1.6, path_effects=halo, zorder=3)
    rows = list(annotate if annotate is not None else [])
    x0, top, step = LABEL_COLUMN
    for rank, i in enumerate(rows, 1):  # in rank order, top down
        ax.annotate(f"{rank}. {short_path(paths[i])}", xy[i], xytext=(x0, top - (rank - 1) * step),
                    textcoords="axes fraction", fontsize=7, va="center", annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "color": "0.35", "lw": 0.6, "shrinkA": 0, "shrinkB": 5})
    if n <= 20:  # a legend of 40 colours would not tell them apart anyway
        for c, name in enumerate(classes):
            ax.scatter([], [], color=cmap(c), s=14, label=name)
    ax.legend(fontsize=7, loc="best", ncol=2 if n > 10 else 1, framealpha=0.8)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.subplots_adjust(left=0.02, right=0.72 if rows else 0.98, top=0.95, bottom=0.02)
    return fig, ax


def class_colours(n: int):
    """The colour map of ``n`` classes, one colour per class."""
    import matplotlib

    return matplotlib.colormaps["tab20" if n <= 20 else "turbo"].resampled(max(n, 2))


def draw_map(xy: np.ndarray, labels: np.ndarray, classes: list[str], marks: dict[str, np.ndarray],
             paths: list[str], path: Path, title: str, annotate: np.ndarray | None = None) -> Path:
    """map_figure, saved."""
    fig, _ = map_figure(xy, labels, classes, marks, paths, title, annotate)
    return save_figure(fig, path)

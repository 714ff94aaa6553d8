"""A 2-D map of the view-0 embeddings, coloured by class, with the flagged images marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .sheets import agg_pyplot, save_figure, short_path

# finding -> (marker, colour, size, label): drawn over the class-coloured dots
MARKS = {
    "label_issues": ("x", "red", 40, "likely label error"),
    "duplicates": ("s", "blue", 60, "duplicate"),
    "outliers": ("o", "black", 110, "outlier"),
}
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


def draw_map(xy: np.ndarray, labels: np.ndarray, classes: list[str], marks: dict[str, np.ndarray],
             paths: list[str], path: Path, title: str, annotate: np.ndarray | None = None) -> Path:
    """``marks``: finding type -> rows to mark; ``annotate``: rows to name on the map."""
    import matplotlib

    plt = agg_pyplot()
    fig, ax = plt.subplots(figsize=(10, 8))
    n = len(classes)
    cmap = matplotlib.colormaps["tab20" if n <= 20 else "turbo"].resampled(max(n, 2))
    ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap=cmap, vmin=-0.5, vmax=max(n, 2) - 0.5, s=14, alpha=0.8,
               linewidths=0, rasterized=len(xy) > 5000)
    for finding, rows in marks.items():
        if len(rows):
            marker, colour, size, label = MARKS[finding]
            ax.scatter(xy[rows, 0], xy[rows, 1], marker=marker, s=size, label=f"{label} ({len(rows)})",
                       facecolors=colour if marker == "x" else "none", edgecolors=colour, linewidths=1.2)
    for i in (annotate if annotate is not None else []):
        ax.annotate(short_path(paths[i]), xy[i], fontsize=7, xytext=(4, 4), textcoords="offset points")
    if n <= 20:  # a legend of 40 colours would not tell them apart anyway
        for c, name in enumerate(classes):
            ax.scatter([], [], color=cmap(c), s=14, label=name)
    ax.legend(fontsize=7, loc="best", ncol=2 if n > 10 else 1, framealpha=0.8)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return save_figure(fig, path)

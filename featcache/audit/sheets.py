"""Contact sheets: a grid of thumbnails, each captioned (path, labels, score), one PNG per finding type."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .images import ImageFiles

COLUMNS = 8
THUMB = 128  # pixels of the thumbnail's longer side
TILE_W, TILE_H, CAPTION_H, TITLE_H = 1.6, 2.15, 0.5, 0.45  # inches (100 dpi): three caption lines over each picture
PATH_CHARS = 26
FRAME = "0.55"  # grey frame around each thumbnail


@dataclass(frozen=True)
class Tile:
    index: int  # the image's row in the audited FeatureSet
    lines: tuple[str, ...]  # caption, under the path
    colour: str = "black"  # caption colour: the same for images of one duplicate group


def short_path(path: str, width: int = PATH_CHARS) -> str:
    """At most ``width`` characters, elided in the middle: the start of the path (the class folder)
    and the whole file name; a file name longer than that keeps its start and its end (the
    extension and any number before it)."""
    if len(path) <= width:
        return path
    folder, _, name = path.rpartition("/")
    room = width - len(name) - 2  # "…/" between the folder's start and the name
    if folder and room >= 1:
        return f"{folder[:room]}\u2026/{name}"
    if len(name) <= width:
        return name
    tail = (width - 1) // 2
    return f"{name[:width - 1 - tail]}\u2026{name[-tail:]}"


def agg_pyplot():
    """pyplot on the file-only Agg backend: no display needed, none opened."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    agg_pyplot().close(fig)
    return path


def contact_sheet(tiles: list[Tile], files: ImageFiles, path: Path, title: str, columns: int = COLUMNS) -> Path:
    """Tiles laid out by hand (no tight_layout): a caption never overlaps the picture above it, and
    a sheet of 48 tiles renders in about a second."""
    from matplotlib.patches import Rectangle

    plt = agg_pyplot()
    columns = max(1, min(columns, len(tiles)))
    rows = max(1, math.ceil(len(tiles) / columns))
    width, height = TILE_W * columns, TILE_H * rows + TITLE_H
    fig = plt.figure(figsize=(width, height))
    fig.text(0.01, 1 - 0.5 * TITLE_H / height, title, fontsize=11, va="center")
    for n, tile in enumerate(tiles):
        left, top = (n % columns) * TILE_W, TITLE_H + (n // columns) * TILE_H
        fig.text((left + 0.08) / width, 1 - (top + 0.05) / height,
                 "\n".join((short_path(files.paths[tile.index]), *tile.lines)), fontsize=6.5, color=tile.colour,
                 va="top", linespacing=1.3)
        ax = fig.add_axes(((left + 0.08) / width, 1 - (top + TILE_H - 0.05) / height,
                           (TILE_W - 0.16) / width, (TILE_H - CAPTION_H - 0.1) / height))
        ax.axis("off")
        thumb = files.thumbnail(tile.index, THUMB)
        if thumb is None:  # moved or deleted since extraction: say so in place of the picture
            ax.text(0.5, 0.5, "file not readable", ha="center", va="center", fontsize=7, color="red",
                    transform=ax.transAxes)
        else:  # framed: a blank or white image is still a visible cell
            ax.imshow(np.asarray(thumb), cmap=None, interpolation="antialiased")
            h, w = np.asarray(thumb).shape[:2]
            ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor=FRAME, linewidth=0.8))
    return save_figure(fig, path)

"""Training rows streamed from the store: what a head gets instead of arrays when they do not fit.

``TrainStream`` stands for the (n, V, D) training views, ``EvalStream`` for the (m, D) view-0
rows of validation or test. Both read through ``StoreRows`` (verified chunk reads) and look like
the arrays they replace where fit.py and the metrics need it (``shape``, ``len``).

An epoch of a Keras head: the chunks in a shuffled order, read a window of chunks at a time on a
prefetch thread (the next window is read while this one trains), the window's rows shuffled,
one cached view drawn per image (the draw of epoch e keyed by (seed, e), as ViewSampler's),
float16 kept until the batch is formed. Rows left over at a window's end open the next window's
first batch, so batches are full as in memory. The shuffle is within a window, not over all rows:
a window holds ``window_chunks`` chunks of a few thousand rows, chosen from the memory budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..stores.stream import StoreRows, prefetch


@dataclass
class TrainStream:
    rows: StoreRows
    images: np.ndarray  # positions among rows' usable images
    labels: np.ndarray  # (n,) in ``images`` order
    window_chunks: int  # chunks per shuffle window

    def __post_init__(self):
        self.images = np.asarray(self.images)
        self.labels = np.asarray(self.labels)
        self.groups = self.rows.chunk_groups(self.images)  # positions in ``images``, one array per chunk

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.images), self.rows.views, self.rows.dim)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)  # what batches hold

    def __len__(self) -> int:
        return len(self.images)

    def _read(self, at: np.ndarray, view: int | None = None) -> np.ndarray:
        return self.rows.read(self.images[at], view)

    def epoch(self, seed: int, epoch: int, batch_size: int) -> tuple[np.ndarray, Iterator]:
        """(the view drawn for each image, an iterator of (float32 batch, labels))."""
        rng = np.random.default_rng([seed, epoch])
        n, v = self.shape[:2]
        views = rng.integers(0, v, n)
        order = rng.permutation(len(self.groups))
        windows = [np.concatenate([self.groups[g] for g in order[i:i + self.window_chunks]])
                   for i in range(0, len(order), self.window_chunks)]
        shuffles = [rng.permutation(len(w)) for w in windows]  # drawn up front: the reads run on a thread

        def read_windows():
            for at, perm in zip(windows, shuffles, strict=True):
                at = at[perm]
                X = self._read(at)
                yield X[np.arange(len(at)), views[at]], self.labels[at]

        return views, _batches(prefetch(read_windows()), batch_size)

    def blocks(self, every: int = 1, view: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every ``every``-th chunk in store order: (r, V, D) rows (or (r, D) of one view), labels."""
        def read():
            for at in self.groups[::every]:
                yield self._read(at, view), self.labels[at]
        return prefetch(read())


def _batches(windows: Iterator, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Full batches across window boundaries (the remainder carried over), float32 at the last step."""
    carry_x, carry_y = None, None
    for X, y in windows:
        if carry_x is not None:
            X, y = np.concatenate([carry_x, X]), np.concatenate([carry_y, y])
        full = len(X) // batch_size * batch_size
        for i in range(0, full, batch_size):
            yield X[i:i + batch_size].astype(np.float32), y[i:i + batch_size]
        carry_x, carry_y = X[full:], y[full:]
    if carry_x is not None and len(carry_x):
        yield carry_x.astype(np.float32), carry_y


@dataclass
class EvalStream:
    """View 0 of validation or test images: (m, D). Held in memory (stored dtype) when ``cache``,
    else read again from the store at each pass."""

    rows: StoreRows
    images: np.ndarray
    cache: bool

    def __post_init__(self):
        # labels and rows follow the store's order, so each pass reads each chunk once
        groups = self.rows.chunk_groups(np.asarray(self.images))
        self.images = np.asarray(self.images)[np.concatenate(groups)] if groups else np.asarray(self.images)
        starts = np.cumsum([0, *map(len, groups)])[:-1]
        self.groups = [np.arange(s, s + len(g)) for s, g in zip(starts, groups, strict=True)]
        self.labels = self.rows.labels[self.images]
        self._held = self.rows.read(self.images, view=0) if self.cache and len(self.images) else None

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.images), self.rows.dim)

    def __len__(self) -> int:
        return len(self.images)

    def blocks(self) -> Iterator[np.ndarray]:
        if self._held is not None:
            for g in self.groups:
                yield self._held[g].astype(np.float32)
            return
        for X in prefetch(self.rows.read(self.images[g], view=0) for g in self.groups):
            yield X.astype(np.float32)


__all__ = ["EvalStream", "TrainStream"]

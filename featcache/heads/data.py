"""What a head is fed, in one interface: ``as_rows(X)``.

A head normalises its input once: ``rows = as_rows(X, y)``. A numpy array becomes an ``ArrayRows``
(rows in memory); a store's view (``featcache.stores.FeatureRows``, read chunk by chunk and
verified) already is one. Both give ``shape`` ((n, V, D) views or (n, D) rows), ``len``,
``in_memory``, ``labels``, ``view(v)``, ``columns(s)``, ``take(positions)``, ``concat(other)``, ``load()`` (float32),
``blocks(every, view)`` ((rows, labels) a block at a time), ``indexed_blocks()`` ((rows, their
positions)) and ``epoch(seed, epoch, batch_size)`` (the views drawn for a training epoch and its
(float32 batch, labels) batches). Heads only use this interface, so heads do not depend on stores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

EVAL_BLOCK = 4096  # rows per block of arrays in memory


def as_rows(X, y=None):
    """``X`` as rows a head reads: arrays are wrapped, a store view passes (with ``y`` as its labels)."""
    if hasattr(X, "indexed_blocks"):
        return X if y is None else X.with_labels(y)
    return ArrayRows(X, y)


def draw_epoch(n: int, views: int, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(the order of the n images, the view drawn for each) of an epoch in memory, keyed by (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(n), rng.integers(0, views, n)


class ArrayRows:
    """Rows held in memory, with the interface of a store's view."""

    in_memory = True

    def __init__(self, X, y=None):
        self.X = np.asarray(X)
        self.labels = None if y is None else np.asarray(y)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.X.shape

    def __len__(self) -> int:
        return len(self.X)

    def _with(self, X, labels) -> ArrayRows:
        return ArrayRows(X, labels)

    def take(self, positions) -> ArrayRows:
        return self._with(self.X[positions], None if self.labels is None else self.labels[positions])

    def view(self, v: int) -> ArrayRows:
        return self._with(self.X[:, v], self.labels)

    def columns(self, s: slice) -> ArrayRows:
        return self._with(self.X[..., s], self.labels)

    def with_labels(self, y) -> ArrayRows:
        return self._with(self.X, y)

    def concat(self, other: ArrayRows) -> ArrayRows:
        """These rows, then ``other``'s."""
        labels = None if self.labels is None or other.labels is None else np.concatenate([self.labels, other.labels])
        return self._with(np.concatenate([self.X, other.X]), labels)

    def load(self) -> np.ndarray:
        return np.asarray(self.X, np.float32)

    def indexed_blocks(self, every: int = 1, view: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        X = self.X if view is None else self.X[:, view]
        for i in range(0, len(X), EVAL_BLOCK * every):
            yield np.asarray(X[i:i + EVAL_BLOCK], np.float32), np.arange(i, min(i + EVAL_BLOCK, len(X)))

    def blocks(self, every: int = 1, view: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for X, at in self.indexed_blocks(every, view):
            yield X, self.labels[at]

    def epoch(self, seed: int, epoch: int, batch_size: int) -> tuple[np.ndarray, Iterator]:
        """Every image once in a shuffled order, one drawn view each (the draw keyed by (seed, epoch))."""
        order, views = draw_epoch(len(self.X), self.X.shape[1], seed, epoch)

        def batches():
            for i in range(0, len(order), batch_size):
                idx = order[i:i + batch_size]
                yield np.asarray(self.X[idx, views[idx]], np.float32), self.labels[idx]

        return views, batches()


def map_blocks(X, fn: Callable[[np.ndarray], np.ndarray], width: int) -> np.ndarray:
    """``fn`` over float32 blocks of ``X``'s rows, its outputs (of its dtype) in the rows' order:
    (m, width). A store's blocks come in store order, each with its rows' positions."""
    rows = as_rows(X)
    out = None
    for xb, at in rows.indexed_blocks():
        part = np.asarray(fn(np.asarray(xb, np.float32)))
        if out is None:
            out = np.zeros((len(rows), width), part.dtype)
        out[at] = part
    return out if out is not None else np.zeros((0, width), np.float32)


class EpochSampler:
    """Training batches of one drawn view per image, redrawn at every epoch (the rows' ``epoch``).

    ``drawn`` records the view index each image got in each epoch: proof that augmented views
    feed the training."""

    def __init__(self, rows, n_classes: int, batch_size: int, seed: int):
        self.rows, self.n_classes = rows, int(n_classes)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.drawn: list[np.ndarray] = []

    def on_epoch_begin(self) -> None:
        views, self._batches = self.rows.epoch(self.seed, len(self.drawn), self.batch_size)
        self.drawn.append(np.asarray(views).copy())

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def __iter__(self):
        eye = np.eye(self.n_classes, dtype=np.float32)
        for xb, yb in self._batches:
            yield xb, (np.asarray(yb, np.float32) if np.ndim(yb) == 2 else eye[yb])  # multi-hot as it is


class ViewSampler(EpochSampler):
    """An EpochSampler over arrays in memory with one-hot targets ``Y``; ``order`` and ``views``
    are the current epoch's draw."""

    def __init__(self, X: np.ndarray, Y: np.ndarray, batch_size: int, seed: int):
        Y = np.asarray(Y)
        super().__init__(ArrayRows(X, np.argmax(Y, axis=1)), Y.shape[1], batch_size, seed)

    def on_epoch_begin(self) -> None:
        self.order, self.views = draw_epoch(len(self.rows), self.rows.shape[1], self.seed, len(self.drawn))
        super().on_epoch_begin()


__all__ = ["ArrayRows", "EpochSampler", "ViewSampler", "as_rows", "draw_epoch", "map_blocks"]

"""What a head is fed: numpy arrays, or streams that stand for them (featcache.train.streaming).

A training stream has ``shape`` (n, V, D), ``labels``, ``epoch(seed, epoch, batch_size)`` (the
views drawn, an iterator of float32 batches) and ``blocks(every, view)`` (rows in store order);
an evaluation stream has ``shape`` (m, D) and ``blocks()`` (float32 rows in its own order, the
order of the labels it came with). Heads only duck-type them, so heads do not depend on stores.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

EVAL_BLOCK = 4096


def is_stream(X) -> bool:
    return not isinstance(X, np.ndarray) and hasattr(X, "blocks")


def eval_blocks(X) -> Iterator[np.ndarray]:
    """(r, D) float32 blocks of an evaluation array or stream, in order."""
    if is_stream(X):
        yield from X.blocks()
        return
    X = np.asarray(X)
    for i in range(0, len(X), EVAL_BLOCK):
        yield np.asarray(X[i:i + EVAL_BLOCK], np.float32)


class StreamSampler:
    """ViewSampler's interface (on_epoch_begin, len, iteration, ``drawn``) over a training stream."""

    def __init__(self, stream, n_classes: int, batch_size: int, seed: int):
        self.stream, self.n_classes = stream, int(n_classes)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.drawn: list[np.ndarray] = []

    def on_epoch_begin(self) -> None:
        views, self._batches = self.stream.epoch(self.seed, len(self.drawn), self.batch_size)
        self.drawn.append(views)

    def __len__(self) -> int:
        return -(-len(self.stream) // self.batch_size)

    def __iter__(self):
        eye = np.eye(self.n_classes, dtype=np.float32)
        for xb, yb in self._batches:
            yield xb, eye[yb]

"""The runner (mapper): uint8 image batches -> pooled features, through the backbone a record describes.

Every forward batch has exactly ``batch_size`` images (the last one padded), so a row's features do
not depend on which rows happened to share its batch: a resumed run writes the same numbers as an
uninterrupted one. The forward pass runs on its own thread while the next batch is gathered and
preprocessed into the other of two input buffers.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..backbones.model import build_feature_extractor
from ..backbones.spec import BackboneConfig
from ..config import FeatureConfig
from ..stores import WorkUnit
from .reader import SkippedImage


def _build_model(config: BackboneConfig, precision: str = "float32", together: tuple[BackboneConfig, ...] = ()):
    """build_feature_extractor, with weights="random" made ONE network: Keras draws the seed of an
    unseeded initializer from Python's global RNG, so without this every run (and every resume) of a
    "random" config would compute with different weights under the same store key."""
    if config.weights != "random":
        return build_feature_extractor(config, precision, together)
    import keras  # noqa: F401  (importing it draws from Python's RNG: do that before seeding)

    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(0)
    np.random.seed(0)
    try:
        return build_feature_extractor(config, precision, together)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _device_scope(device: str | None):
    if device is None:
        return contextlib.nullcontext()
    import tensorflow as tf

    return tf.device(device)


class BackboneRunner:
    """uint8 image batches -> pooled float32 features, at a fixed batch shape, on ``device`` (a
    TensorFlow device name; None: TensorFlow's choice). The preprocessing is the record's numbers
    (``cfg.backbone.preprocess``), the same ones export puts in the graph; the precision and XLA
    compilation are the record's too (``cfg.compute``). ``together``: taps of the same network
    computed in the same pass (each row's features are then ``cfg``'s followed by theirs, ``dims``)."""

    def __init__(self, cfg: FeatureConfig, batch_size: int, device: str | None = None,
                 together: tuple[FeatureConfig, ...] = ()):
        self.cfg = cfg
        self.batch_size = batch_size
        self.together = tuple(together)
        self.preprocess = cfg.backbone.preprocess
        self.device = device
        with _device_scope(device):
            self.model = _build_model(cfg.backbone, cfg.compute.precision, tuple(c.backbone for c in together))
        self.model.jit_compile = cfg.compute.jit
        self.dim = int(self.model.output_shape[-1])
        self.dims = [int(t.shape[-1]) for t in self.model.get_layer("features").input] if together else [self.dim]
        self._inputs: dict[int, np.ndarray] = {}  # float32 batches by slot, reused: no fresh pages per batch

    def prepare(self, images: np.ndarray, slot: int = 0) -> np.ndarray:
        """(1 <= n <= batch_size, S, S, 3) uint8 -> the preprocessed float32 model input, padded to the
        fixed batch shape with copies of the last image (same shape every call -> same numbers, one
        trace). Written into buffer ``slot``, valid until the next prepare() of that slot."""
        n = len(images)
        shape = (self.batch_size, *images.shape[1:])
        x = self._inputs.get(slot)
        if x is None or x.shape != shape:
            x = self._inputs[slot] = np.empty(shape, np.float32)
        self.preprocess(images, out=x[:n])
        x[n:] = x[n - 1]
        return x

    def predict(self, x: np.ndarray) -> np.ndarray:
        """A prepared batch -> (batch_size, D) float32 features."""
        with _device_scope(self.device):
            return np.asarray(self.model.predict_on_batch(x))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(n, S, S, 3) uint8 -> (n, D) float32, in fixed-size batches: features of a few images."""
        out = [self.predict(self.prepare(images[i:i + self.batch_size]))[:len(images[i:i + self.batch_size])]
               for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


@dataclass
class UnitFeatures:
    """The features of one unit's rows as they come out of the backbone, batch by batch."""

    unit: WorkUnit
    views: int  # V
    rows: list[int] = field(default_factory=list)  # rows that decoded, in order
    outputs: list[np.ndarray] = field(default_factory=list)  # (n, D) per forward batch
    failures: dict[int, SkippedImage] = field(default_factory=dict)

    def features(self) -> np.ndarray:
        """(len(rows), V, D)"""
        return np.concatenate(self.outputs).reshape(len(self.rows), self.views, -1)


class DoubleBuffer:
    """One forward batch in flight on a model thread while the caller prepares the next one into
    the other input buffer."""

    def __init__(self, runner: BackboneRunner):
        self.runner = runner
        self.slot = 0
        self.inflight: tuple[UnitFeatures, int, Future] | None = None
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="featcache-model")

    def submit(self, images: np.ndarray, owner: UnitFeatures) -> None:
        x = self.runner.prepare(images, self.slot)  # while the previous batch runs
        self.collect()  # the previous batch is done: its buffer is free for the next prepare
        self.inflight = (owner, len(images), self.thread.submit(self.runner.predict, x))
        self.slot ^= 1

    def collect(self) -> None:
        if self.inflight is not None:
            owner, n, fut = self.inflight
            self.inflight = None
            owner.outputs.append(fut.result()[:n])

    def close(self) -> None:
        self.thread.shutdown(wait=True, cancel_futures=True)


class UnitBatcher:
    """Feeds the decoded views of each unit's rows to the backbone in fixed-size batches that never
    straddle two units (a unit is written whole), and yields each unit once its last batch ran."""

    def __init__(self, runner: BackboneRunner, views: int, on_batch: Callable[[int], None] = lambda n: None):
        self.runner = runner
        self.views = views
        self.on_batch = on_batch
        self.batch: np.ndarray | None = None  # uint8 gather buffer
        self.filled = 0

    def run(self, rows: Iterable[tuple[WorkUnit, int, np.ndarray | SkippedImage]]) -> Iterator[UnitFeatures]:
        forward = DoubleBuffer(self.runner)
        current: UnitFeatures | None = None
        try:
            for unit, row, got in rows:
                if current is None or current.unit is not unit:
                    if current is not None:
                        yield self._finish(current, forward)
                    current = UnitFeatures(unit, self.views)
                if isinstance(got, SkippedImage):
                    current.failures[row] = got
                    continue
                current.rows.append(row)
                for view in got:  # a row's views may straddle two batches, as in one flat image stream
                    self._add(view, current, forward)
            if current is not None:
                yield self._finish(current, forward)
        finally:
            forward.close()

    def _add(self, view: np.ndarray, owner: UnitFeatures, forward: DoubleBuffer) -> None:
        if self.batch is None:
            self.batch = np.empty((self.runner.batch_size, *view.shape), np.uint8)
        self.batch[self.filled] = view
        self.filled += 1
        if self.filled == self.runner.batch_size:
            self._flush(owner, forward)

    def _flush(self, owner: UnitFeatures, forward: DoubleBuffer) -> None:
        if self.filled:
            forward.submit(self.batch[:self.filled], owner)
            self.on_batch(self.filled)
            self.filled = 0

    def _finish(self, unit: UnitFeatures, forward: DoubleBuffer) -> UnitFeatures:
        self._flush(unit, forward)
        forward.collect()
        return unit

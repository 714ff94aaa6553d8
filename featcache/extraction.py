"""Extraction: plan the missing rows, then read -> backbone -> write, one chunk-aligned unit at a time.

The reader decodes and augments rows on worker threads, a bounded window of rows ahead of the
backbone (across unit boundaries), so decoding overlaps the forward pass and memory stays bounded
by that window, two input batches and one unit's features, whatever the data set or chunk size.
The forward pass runs on its own thread while the next batch is gathered and preprocessed.
Batches are formed within a unit, in row order, and every forward batch has exactly
``batch_size`` images (the last one padded), so a row's features do not depend on which rows
happened to share its batch: a resumed run writes the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .augment import AugmentParams, augment_view
from .backbones import DEFAULT_BACKBONE, get_backbone
from .backbones.model import build_feature_extractor, resolve_config
from .backbones.spec import BackboneConfig
from .config import DTYPES, FeatureConfig
from .dataset import Manifest, SplitFractions, scan
from .errors import FeatcacheError, ImageDecodeError
from .images import read_image
from .progress import progress_bar
from .stores import DONE, FAILED, WorkUnit, open_store


@dataclass(frozen=True)
class SkippedImage:
    path: str
    reason: str


@dataclass
class ConfigRun:
    key: str
    backbone: str
    extracted: int  # rows computed in this run
    reused: int  # rows already in the store
    failed: int
    seconds: float
    views: int = 1

    @property
    def images_per_s(self) -> float | None:
        """Images through the backbone per second (rows x views), as the store's stats record it."""
        return None if not self.seconds or not self.extracted else self.extracted * self.views / self.seconds


@dataclass
class ExtractResult:
    store: str
    images: int
    classes: list[str]
    configs: list[ConfigRun] = field(default_factory=list)
    skipped: list[SkippedImage] = field(default_factory=list)


def _build_model(config: BackboneConfig):
    """build_feature_extractor, with weights="random" made ONE network: Keras draws the seed of an
    unseeded initializer from Python's global RNG, so without this every run (and every resume) of a
    "random" config would compute with different weights under the same store key."""
    if config.weights != "random":
        return build_feature_extractor(config)
    import keras  # noqa: F401  (importing it draws from Python's RNG: do that before seeding)

    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(0)
    np.random.seed(0)
    try:
        return build_feature_extractor(config)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class BackboneRunner:
    """The mapper: uint8 image batches -> pooled features, at a fixed batch shape."""

    def __init__(self, cfg: FeatureConfig, batch_size: int):
        self.cfg = cfg
        self.batch_size = batch_size
        self.preprocess = get_backbone(cfg.backbone.backbone).preprocess
        self.model = _build_model(cfg.backbone)
        self.dim = int(self.model.output_shape[-1])
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
        return np.asarray(self.model.predict_on_batch(x))

    def run_batch(self, images: np.ndarray) -> np.ndarray:
        """(n <= batch_size, S, S, 3) uint8 -> (n, D) float32."""
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.predict(self.prepare(images))[:len(images)]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = [self.run_batch(images[i:i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def feature_dim(cfg: FeatureConfig) -> int:
    """Pooled size without building the model; flatten needs the model's output shape."""
    if cfg.backbone.pooling == "flatten":
        return -1
    return get_backbone(cfg.backbone.backbone).feature_dim


class ImageReader:
    """The reader: decodes + augments rows on a thread pool, a bounded window of rows ahead."""

    def __init__(self, paths_by_digest: dict[str, str], row_digests: list[str], size: int,
                 augment: AugmentParams, workers: int):
        self.paths = paths_by_digest
        self.row_digests = row_digests
        self.size = size
        self.augment = augment
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="featcache-read")

    def _load(self, row: int) -> np.ndarray | SkippedImage:
        """(V, S, S, 3) uint8 views of one row's image, or why it could not be decoded."""
        digest = self.row_digests[row]
        path = self.paths[digest]
        try:
            image = read_image(path, self.size)
        except ImageDecodeError as exc:
            return SkippedImage(path, exc.reason)
        out = np.empty((self.augment.n_views, *image.shape), np.uint8)
        for v in range(self.augment.n_views):
            out[v] = augment_view(image, self.augment, digest, v)
        return out

    def iter_rows(self, units: Sequence[WorkUnit], window: int
                  ) -> Iterator[tuple[WorkUnit, int, np.ndarray | SkippedImage]]:
        """(unit, row, views or SkippedImage) for every pending row, in order, at most ``window``
        rows decoded or decoding ahead of the consumer. The first window is submitted at once, so
        decoding starts while the caller is still building its model."""
        pending = ((unit, row) for unit in units for row in unit.rows)
        inflight: deque[tuple[WorkUnit, int, Future]] = deque()

        def submit_next() -> None:
            for unit, row in pending:
                inflight.append((unit, row, self.pool.submit(self._load, row)))
                return

        for _ in range(window):
            submit_next()

        def drain():
            try:
                while inflight:
                    unit, row, fut = inflight.popleft()
                    submit_next()
                    yield unit, row, fut.result()
            finally:
                for _, _, fut in inflight:
                    fut.cancel()

        return drain()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _UnitFeatures:
    """The features of one unit's rows as they come out of the backbone, batch by batch."""

    unit: WorkUnit
    views: int
    rows: list[int] = field(default_factory=list)  # rows that decoded, in order
    outputs: list[np.ndarray] = field(default_factory=list)  # (n, D) per forward batch
    failures: dict[int, SkippedImage] = field(default_factory=dict)

    def features(self) -> np.ndarray:
        return np.concatenate(self.outputs)  # (len(rows) * V, D)


def _apply_unit(store, done: _UnitFeatures) -> None:
    unit, views = done.unit, done.views
    region, status = store.read_unit(unit)
    region = np.array(region)
    status = np.array(status)
    if done.rows:
        feats = done.features().reshape(len(done.rows), views, -1)
        region[np.asarray(done.rows) - unit.start] = feats
        status[np.asarray(done.rows) - unit.start] = DONE
    for row in done.failures:
        status[row - unit.start] = FAILED
    store.write_unit(unit, region, status)


def _run_units(runner: BackboneRunner, rows: Iterator, views: int,
               on_batch: Callable[[int], None] = lambda n: None) -> Iterator[_UnitFeatures]:
    """Feed the decoded views of each unit's rows to the backbone in fixed-size batches that never
    straddle two units; yield each unit's features once its last batch has run.

    The forward pass runs on its own thread, one batch at a time, while this thread gathers and
    preprocesses the next batch into the other of two input buffers."""
    b = runner.batch_size
    batch: np.ndarray | None = None  # uint8 gather buffer
    filled = 0
    slot = 0
    current: _UnitFeatures | None = None
    inflight: tuple[_UnitFeatures, int, Future] | None = None
    model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="featcache-model")

    def collect() -> None:
        nonlocal inflight
        if inflight is not None:
            owner, n, fut = inflight
            inflight = None
            owner.outputs.append(fut.result()[:n])

    def flush() -> None:
        nonlocal filled, slot, inflight
        if filled:
            x = runner.prepare(batch[:filled], slot)  # while the previous batch runs
            collect()  # the previous batch is done: its buffer is free for the next prepare
            inflight = (current, filled, model_thread.submit(runner.predict, x))
            on_batch(filled)
            slot ^= 1
            filled = 0

    try:
        for unit, row, got in rows:
            if current is None or current.unit is not unit:
                if current is not None:
                    flush()
                    collect()
                    yield current
                current = _UnitFeatures(unit, views)
            if isinstance(got, SkippedImage):
                current.failures[row] = got
                continue
            if batch is None:
                batch = np.empty((b, *got.shape[1:]), np.uint8)
            current.rows.append(row)
            for view in got:  # a row's views may straddle two batches, as in one flat image stream
                batch[filled] = view
                filled += 1
                if filled == b:
                    flush()
        if current is not None:
            flush()
            collect()
            yield current
    finally:
        model_thread.shutdown(wait=True, cancel_futures=True)


def extract(
    data_dir: str | Path,
    store: str | Path,
    backbones: Sequence[str] = (DEFAULT_BACKBONE,),
    *,
    augment: AugmentParams | None = None,
    split: SplitFractions | str | None = None,
    image_size: int | None = None,
    pooling: str = "avg",
    weights: str = "imagenet",
    dtype: str = "float16",
    batch_size: int = 32,
    workers: int | None = None,
    chunk_rows: int | None = None,
    strict: bool = False,
    progress: bool = True,
    manifest: Manifest | None = None,
) -> ExtractResult:
    """Extract features of every image under ``data_dir`` for each backbone into ``store``.

    Re-running finishes only what is missing: rows already computed for the same configuration
    and the same image content are reused, new or changed images are extracted.
    """
    augment = augment or AugmentParams()
    if isinstance(backbones, str):  # one name, not a sequence of one-letter names
        backbones = (backbones,)
    if dtype not in DTYPES:
        raise FeatcacheError(f"unknown dtype {dtype!r}; choose {' or '.join(DTYPES)}")
    if batch_size < 1:
        raise FeatcacheError("--batch-size must be at least 1")
    if augment.views < 0:
        raise FeatcacheError("--augment must be 0 or more views")
    if weights not in ("imagenet", "random") and len(backbones) > 1:
        raise FeatcacheError("--weights PATH applies to a single backbone; extract one -b at a time")
    configs = [FeatureConfig(resolve_config(b, image_size, pooling, weights), augment, dtype) for b in backbones]

    st = open_store(store, mode="a")
    try:
        if split is None and manifest is None:
            split = st.b.get_attrs().get("split")  # keep the store's split unless asked otherwise
        manifest = manifest or scan(data_dir, split)
        st.write_manifest(manifest)
        paths = {}
        for i, d in enumerate(manifest.digests):
            paths.setdefault(d, str(manifest.abspath(i)))
        result = ExtractResult(str(st.path), len(manifest), manifest.classes)
        if strict and (known_bad := _skipped_images(st, manifest)):
            # failed rows are never redone, so an earlier run's failures must stop a strict run too
            first = known_bad[0]
            raise FeatcacheError(f"{manifest.root}/{first.path}: {first.reason} (--strict; {len(known_bad)} "
                                 "image(s) in this store could not be decoded)")
        for cfg in configs:
            result.configs.append(_extract_config(st, cfg, manifest, paths, batch_size, workers, chunk_rows,
                                                  strict, progress))
        result.skipped = _skipped_images(st, manifest)
        return result
    finally:
        st.close()


def _skipped_images(st, manifest: Manifest) -> list[SkippedImage]:
    """Manifest images whose row is FAILED in any config of the store (decoding is config-independent)."""
    failed_rows = {d for key in st.keys() for d, s in zip(st.row_digests(key), st.status(key), strict=True)
                   if s == FAILED}
    reasons = st.skipped()
    return [SkippedImage(p, reasons.get(d, {}).get("reason", "could not be decoded"))
            for p, d in zip(manifest.paths, manifest.digests, strict=True) if d in failed_rows]


def _extract_config(st, cfg: FeatureConfig, manifest: Manifest, paths: dict[str, str], batch_size: int,
                    workers: int | None, chunk_rows: int | None, strict: bool, progress: bool) -> ConfigRun:
    runner = None
    dim = feature_dim(cfg)
    if dim < 0:  # flatten: the size depends on the spatial output, so build the model first
        runner = BackboneRunner(cfg, batch_size)
        dim = runner.dim
    key = st.ensure_config(cfg, dim, chunk_rows)
    units = st.plan(key, manifest.digests)
    todo = sum(len(u.rows) for u in units)
    run = ConfigRun(key, cfg.backbone.backbone, 0, len(set(manifest.digests)) - todo, 0, 0.0, cfg.augment.n_views)
    if not units:
        return run
    views = cfg.augment.n_views
    workers = workers or min(4, os.cpu_count() or 1)
    reader = ImageReader(paths, st.row_digests(key), cfg.backbone.input_size, cfg.augment, workers)
    # rows decoding ahead: two forward batches' worth keeps the backbone fed, and bounds memory
    window = max(2 * workers, 2 * -(-batch_size // views))
    start = time.perf_counter()
    rows = reader.iter_rows(units, window)  # decoding starts now, while the model is built
    bar = progress_bar(total=todo * views, desc=cfg.backbone.backbone, unit="img", enabled=progress)
    try:
        runner = runner or BackboneRunner(cfg, batch_size)
        for done in _run_units(runner, rows, views, on_batch=bar.update):
            _apply_unit(st, done)
            run.extracted += len(done.rows)
            run.failed += len(done.failures)
            bar.update(len(done.failures) * views)
            st.record_skipped({reader.row_digests[row]: {"path": s.path, "reason": s.reason}
                               for row, s in done.failures.items()})
            if strict and done.failures:
                first = next(iter(done.failures.values()))
                raise FeatcacheError(f"{first.path}: {first.reason} (--strict; the {run.extracted} images "
                                     "extracted so far are saved)")
    finally:
        run.seconds = time.perf_counter() - start
        bar.close()
        reader.close()
        if run.extracted:
            st.add_stats(key, run.extracted, run.extracted * views, run.seconds)
    return run


__all__ = ["BackboneRunner", "ConfigRun", "ExtractResult", "SkippedImage", "extract"]

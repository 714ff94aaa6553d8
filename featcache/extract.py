"""Extraction: plan the missing rows, then read -> backbone -> write, one chunk-aligned unit at a time.

The reader decodes and augments images on worker threads one unit ahead of the backbone, so
decoding overlaps the forward pass and memory stays bounded by two units whatever the data set
size. Every forward batch has exactly ``batch_size`` images (the last one padded), so a row's
features do not depend on which rows happened to share its batch: a resumed run writes the same
numbers as an uninterrupted one.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .augment import AugmentParams, augment_view
from .backbones import DEFAULT_BACKBONE, get_backbone
from .backbones.model import build_feature_extractor, resolve_config
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

    @property
    def images_per_s(self) -> float | None:
        return None if not self.seconds or not self.extracted else self.extracted / self.seconds


@dataclass
class ExtractResult:
    store: str
    images: int
    classes: list[str]
    configs: list[ConfigRun] = field(default_factory=list)
    skipped: list[SkippedImage] = field(default_factory=list)


class BackboneRunner:
    """The mapper: uint8 image batches -> pooled features, at a fixed batch shape."""

    def __init__(self, cfg: FeatureConfig, batch_size: int):
        self.cfg = cfg
        self.batch_size = batch_size
        self.preprocess = get_backbone(cfg.backbone.backbone).preprocess
        self.model = build_feature_extractor(cfg.backbone)
        self.dim = int(self.model.output_shape[-1])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), self.batch_size):
            batch = images[i:i + self.batch_size]
            n = len(batch)
            if n < self.batch_size:  # pad: same batch shape every call -> same numbers, one trace
                batch = np.concatenate([batch, np.repeat(batch[-1:], self.batch_size - n, axis=0)])
            out.append(np.asarray(self.model.predict_on_batch(self.preprocess(batch)))[:n])
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def feature_dim(cfg: FeatureConfig) -> int:
    """Pooled size without building the model; flatten needs the model's output shape."""
    if cfg.backbone.pooling == "flatten":
        return -1
    return get_backbone(cfg.backbone.backbone).feature_dim


@dataclass
class _LoadedUnit:
    unit: WorkUnit
    rows: list[int]  # rows that decoded
    images: np.ndarray  # (len(rows) * V, S, S, 3) uint8
    failures: dict[int, SkippedImage]


class ImageReader:
    """The reader: decodes + augments the rows of units on a thread pool, one unit ahead."""

    def __init__(self, paths_by_digest: dict[str, str], row_digests: list[str], size: int,
                 augment: AugmentParams, workers: int):
        self.paths = paths_by_digest
        self.row_digests = row_digests
        self.size = size
        self.augment = augment
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="featcache-read")

    def _load(self, row: int) -> np.ndarray | SkippedImage:
        digest = self.row_digests[row]
        path = self.paths[digest]
        try:
            image = read_image(path, self.size)
        except ImageDecodeError as exc:
            return SkippedImage(path, exc.reason)
        return np.stack([augment_view(image, self.augment, digest, v) for v in range(self.augment.n_views)])

    def _submit(self, unit: WorkUnit) -> tuple[WorkUnit, list[Future]]:
        return unit, [self.pool.submit(self._load, r) for r in unit.rows]

    def _collect(self, unit: WorkUnit, futures: list[Future]) -> _LoadedUnit:
        rows, stacks, failures = [], [], {}
        for row, fut in zip(unit.rows, futures, strict=True):
            got = fut.result()
            if isinstance(got, SkippedImage):
                failures[row] = got
            else:
                rows.append(row)
                stacks.append(got)
        images = (np.concatenate(stacks) if stacks
                  else np.zeros((0, self.size, self.size, 3), np.uint8))
        return _LoadedUnit(unit, rows, images, failures)

    def iter_units(self, units: Sequence[WorkUnit], lookahead: int = 1) -> Iterator[_LoadedUnit]:
        queue: deque = deque()
        pending = iter(units)
        try:
            for unit in pending:
                queue.append(self._submit(unit))
                if len(queue) > lookahead:
                    yield self._collect(*queue.popleft())
            while queue:
                yield self._collect(*queue.popleft())
        finally:
            for _, futures in queue:
                for f in futures:
                    f.cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _apply_unit(store, loaded: _LoadedUnit, feats: np.ndarray, views: int) -> None:
    unit = loaded.unit
    region, status = store.read_unit(unit)
    region = np.array(region)
    status = np.array(status)
    for i, row in enumerate(loaded.rows):
        region[row - unit.start] = feats[i * views:(i + 1) * views]
        status[row - unit.start] = DONE
    for row in loaded.failures:
        status[row - unit.start] = FAILED
    store.write_unit(unit, region.astype(region.dtype, copy=False), status)


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
        if split is None and manifest is None and "split" in st.b.get_attrs():
            split = st.b.get_attrs()["split"]  # keep the store's split unless asked otherwise
        manifest = manifest or scan(data_dir, split)
        st.write_manifest(manifest)
        paths = {}
        for i, d in enumerate(manifest.digests):
            paths.setdefault(d, str(manifest.abspath(i)))
        result = ExtractResult(str(st.path), len(manifest), manifest.classes)
        for cfg in configs:
            result.configs.append(_extract_config(st, cfg, manifest, paths, batch_size, workers, chunk_rows,
                                                  strict, progress, result))
        failed_rows = {d for key in st.keys() for d, s in zip(st.row_digests(key), st.status(key), strict=True)
                       if s == FAILED}
        skipped = st.skipped()
        result.skipped = [SkippedImage(p, skipped.get(d, {}).get("reason", "could not be decoded"))
                          for p, d in zip(manifest.paths, manifest.digests, strict=True) if d in failed_rows]
        return result
    finally:
        st.close()


def _extract_config(st, cfg: FeatureConfig, manifest: Manifest, paths: dict[str, str], batch_size: int,
                    workers: int | None, chunk_rows: int | None, strict: bool, progress: bool,
                    result: ExtractResult) -> ConfigRun:
    runner = None
    dim = feature_dim(cfg)
    if dim < 0:  # flatten: the size depends on the spatial output, so build the model first
        runner = BackboneRunner(cfg, batch_size)
        dim = runner.dim
    key = st.ensure_config(cfg, dim, chunk_rows)
    units = st.plan(key, manifest.digests)
    todo = sum(len(u.rows) for u in units)
    run = ConfigRun(key, cfg.backbone.backbone, 0, len(set(manifest.digests)) - todo, 0, 0.0)
    if not units:
        return run
    runner = runner or BackboneRunner(cfg, batch_size)
    views = cfg.augment.n_views
    reader = ImageReader(paths, st.row_digests(key), cfg.backbone.input_size, cfg.augment,
                         workers or min(4, os.cpu_count() or 1))
    start = time.perf_counter()
    bar = progress_bar(total=todo * views, desc=cfg.backbone.backbone, unit="img", enabled=progress)
    try:
        for loaded in reader.iter_units(units):
            feats = runner(loaded.images)
            _apply_unit(st, loaded, feats, views)
            run.extracted += len(loaded.rows)
            run.failed += len(loaded.failures)
            st.record_skipped({reader.row_digests[row]: {"path": s.path, "reason": s.reason}
                               for row, s in loaded.failures.items()})
            bar.update(len(loaded.unit.rows) * views)
            if strict and loaded.failures:
                first = next(iter(loaded.failures.values()))
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

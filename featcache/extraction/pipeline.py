"""extract(): take the store's lock, scan, write the manifest, plan the missing (or damaged) rows of
each feature config into chunk-aligned work units, then read -> run -> write them, one unit at a time.

The reader decodes and augments rows on worker threads, a bounded window of rows ahead of the
backbone (across unit boundaries), so decoding overlaps the forward pass and memory stays bounded
by that window, two input batches and one unit's features, whatever the data set or chunk size.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import FeatureConfig
from ..errors import FeatcacheError
from ..ingest.scan import Manifest, scan
from ..progress import progress_bar
from ..stores import FeatureStore, open_store
from .options import ExtractOptions
from .reader import ImageReader, SkippedImage
from .runner import BackboneRunner, UnitBatcher, feature_dim
from .writer import UnitWriter


@dataclass
class ConfigRun:
    key: str
    backbone: str  # the backbone's name
    extracted: int  # rows computed in this run
    reused: int  # rows already in the store
    failed: int
    seconds: float
    views: int = 1  # V = 1 + K stored views per image
    repaired: int = 0  # of the rows extracted, rows whose stored data was damaged
    batch_size: int = 0  # the forward batch size used: the one the config was started with

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
    skipped: list[SkippedImage] = field(default_factory=list)  # image files that could not be used
    empty_classes: list[str] = field(default_factory=list)  # class folders without a usable image

    @property
    def complete(self) -> bool:
        """False when some image files could not be read (each is in ``skipped``, with the reason)."""
        return not self.skipped


def extract(data_dir: str | Path, store: str | Path, options: ExtractOptions | None = None, *,
            manifest: Manifest | None = None) -> ExtractResult:
    """Extract features of every image under ``data_dir`` for each backbone into ``store``.

    Re-running finishes only what is missing: rows already computed for the same configuration
    and the same image content are reused (after checking their checksums: damaged rows are
    computed again), new or changed images are extracted.
    """
    options = options or ExtractOptions()
    configs = options.feature_configs()
    st = open_store(store, mode="a")  # the lock: a second writer is refused now. Nothing is created yet
    try:
        split = options.split
        if split is None and manifest is None:
            split = st.stored_split()  # keep the store's split unless asked otherwise
        manifest = manifest or scan(data_dir, split)  # before the store's first write: a bad folder leaves none
        if options.strict and manifest.unreadable:
            first = manifest.unreadable[0]
            raise FeatcacheError(f"{manifest.root}/{first.path}: {first.reason} (strict mode; "
                                 f"{len(manifest.unreadable)} file(s) could not be read)")
        st.write_manifest(manifest)
        paths: dict[str, str] = {}
        for i, d in enumerate(manifest.digests):
            paths.setdefault(d, str(manifest.abspath(i)))
        result = ExtractResult(str(st.path), len(manifest), manifest.classes, empty_classes=manifest.empty_classes)
        if options.strict and (known_bad := _skipped_images(st, manifest)):
            # failed rows are never redone, so an earlier run's failures must stop a strict run too
            first = known_bad[0]
            raise FeatcacheError(f"{manifest.root}/{first.path}: {first.reason} (strict mode; {len(known_bad)} "
                                 "image(s) in this store could not be decoded)")
        for cfg in configs:
            result.configs.append(_extract_config(st, cfg, manifest, paths, options))
        result.skipped = manifest.unreadable + _skipped_images(st, manifest)
        return result
    finally:
        st.close()


def _skipped_images(st: FeatureStore, manifest: Manifest) -> list[SkippedImage]:
    """Manifest images whose row is FAILED in any config of the store (decoding is config-independent)."""
    return [SkippedImage(p, reason) for p, reason in st.failed_images(manifest.paths, manifest.digests)]


def _extract_config(st: FeatureStore, cfg: FeatureConfig, manifest: Manifest, paths: dict[str, str],
                    options: ExtractOptions) -> ConfigRun:
    runner = None
    # A resume keeps the batch size the config was started with: other batch shapes round differently
    found = st.find_config(cfg)
    batch_size = (st.batch_size(found) if found is not None else None) or options.batch_size
    dim = feature_dim(cfg)
    if dim is None:  # flatten: the size depends on the spatial output, so build the model first
        runner = BackboneRunner(cfg, batch_size)
        dim = runner.dim
    key = st.ensure_config(cfg, dim, options.chunk_rows, batch_size)
    units = st.plan(key, manifest.digests)
    todo = sum(len(u.rows) for u in units)
    views = cfg.augment.views
    run = ConfigRun(key, cfg.backbone.name, 0, len(set(manifest.digests)) - todo, 0, 0.0, views,
                    repaired=sum(len(u.repairs) for u in units), batch_size=batch_size)
    if not units:
        return run
    if st.batch_size(key) is None:  # a config of an older featcache: from now on, this one
        st.record_batch_size(key, batch_size)
    workers = options.workers or min(4, os.cpu_count() or 1)
    row_digests = st.row_digests(key)
    reader = ImageReader(paths, row_digests, cfg.backbone.input_size, cfg.augment, workers)
    writer = UnitWriter(st, row_digests)
    # rows decoding ahead: two forward batches' worth keeps the backbone fed, and bounds memory
    window = max(2 * workers, 2 * -(-batch_size // views))
    start = time.perf_counter()
    rows = reader.iter_rows(units, window)  # decoding starts now, while the model is built
    bar = progress_bar(total=todo * views, desc=cfg.backbone.name, unit="img", enabled=options.progress)
    try:
        runner = runner or BackboneRunner(cfg, batch_size)
        for done in UnitBatcher(runner, views, on_batch=bar.update).run(rows):
            writer.write(done)
            run.extracted += len(done.rows)
            run.failed += len(done.failures)
            bar.update(len(done.failures) * views)
            if options.strict and done.failures:
                first = next(iter(done.failures.values()))
                raise FeatcacheError(f"{first.path}: {first.reason} (strict mode; the {run.extracted} images "
                                     "extracted so far are saved)")
    finally:
        run.seconds = time.perf_counter() - start
        bar.close()
        reader.close()
        if run.extracted:
            st.add_stats(key, run.extracted, run.extracted * views, run.seconds)
    return run

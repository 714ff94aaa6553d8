"""neighbors(): the stored images most similar to query image files.

The queries' features are computed with the store's own FeatureConfig record (same backbone,
weights, input size, preprocessing numbers and pooling), from files decoded by the code extract
uses, and rounded through the store's dtype: a query that is a stored image finds itself first,
at a similarity of 1 (up to the backbone's batch-to-batch rounding).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import ParameterError
from ..ingest.decode import collect_image_files, iter_image_batches
from ..progress import progress_bar
from .knn import search, unit_rows
from .records import Neighbor, NeighborsResult, QueryNeighbors
from .source import load_images


def neighbors(store: str | Path, backbone: str, images, *, k: int = 10, batch_size: int = 32,
              progress: bool = False) -> NeighborsResult:
    """The ``k`` most similar stored images (cosine similarity of view-0 features, exact search) for
    each image file or folder in ``images``; unreadable files get ``error`` and no neighbours."""
    from ..extraction.runner import BackboneRunner  # TensorFlow: only once a query is to be computed

    if k < 1:
        raise ParameterError("k", f"must be at least 1, got {k}")
    if batch_size < 1:
        raise ParameterError("batch_size", f"must be at least 1, got {batch_size}")
    started = time.perf_counter()
    files = collect_image_files([images] if isinstance(images, (str, Path)) else images)
    stored = load_images(store, backbone, view=0)  # view 0 is all the search reads
    cfg, refs = stored.config, stored.refs
    rows = unit_rows(stored.features.features)
    loaded = time.perf_counter()

    runner = BackboneRunner(cfg, batch_size)
    feats, found, errors = [], [], {}
    with progress_bar(len(files), "queries", enabled=progress) as bar:
        for batch in iter_image_batches(files, [cfg.backbone.input_size], batch_size):
            errors.update({batch.paths[i]: why for i, why in batch.errors.items()})
            if len(batch.images[0]):
                feats.append(runner(batch.images[0]).astype(cfg.dtype).astype(np.float32))
                found += [batch.paths[i] for i in batch.decoded]
            bar.update(len(batch.paths))
    computed = time.perf_counter()

    hits = search(rows, unit_rows(np.concatenate(feats)), k) if feats else None
    position = {p: n for n, p in enumerate(found)}
    queries = []
    for path in files:
        if path in errors:
            queries.append(QueryNeighbors(str(path), error=errors[path]))
            continue
        q = position[path]
        queries.append(QueryNeighbors(str(path), tuple(
            Neighbor(refs[i], float(s)) for i, s in zip(hits.indices[q].tolist(), hits.similarities[q].tolist(),
                                                        strict=True))))
    done = time.perf_counter()
    return NeighborsResult(str(store), stored.key, len(refs), queries, {
        "load": round(loaded - started, 3), "features": round(computed - loaded, 3), "search": round(done - computed, 3)})

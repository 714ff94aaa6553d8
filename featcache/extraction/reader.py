"""The reader: decodes and augments rows on a thread pool, a bounded window of rows ahead.

Images of a URL data root are fetched on a second pool of ``FETCH_THREADS`` threads as their rows
enter the window (an object store answers many requests at once, each after its latency), and
decoded on the decoding threads as for local files."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ..errors import ImageDecodeError
from ..ingest.augment import AugmentParams, augment_view
from ..ingest.decode import read_image
from ..ingest.scan import SkippedImage
from ..ingest.sources import is_url, read_location
from ..stores import WorkUnit

FETCH_THREADS = 16  # objects of a URL data root fetched at once, at most


def decode_threads(workers: int | None = None) -> int:
    """``workers`` decoding threads, or the default: one per core, up to 4."""
    return workers or min(4, os.cpu_count() or 1)


class ImageReader:
    def __init__(self, paths_by_digest: Mapping[str, str], row_digests: Sequence[str] | Mapping[int, str], size: int,
                 augment: AugmentParams, workers: int, jpeg_draft: bool = False):
        self.paths = paths_by_digest
        self.row_digests = row_digests
        self.size = size
        self.augment = augment
        self.jpeg_draft = jpeg_draft
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="featcache-read")
        self.fetcher: ThreadPoolExecutor | None = None  # made at the first URL

    def fetch(self, row: int) -> Future | None:
        """The bytes of a row's object at a URL, being fetched; None for a local file."""
        path = self.paths[self.row_digests[row]]
        if not is_url(path):
            return None
        if self.fetcher is None:
            self.fetcher = ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="featcache-fetch")
        return self.fetcher.submit(read_location, path)

    def load(self, row: int, fetched: Future | None = None) -> np.ndarray | SkippedImage:
        """(V, S, S, 3) uint8 views of one row's image, or why it could not be decoded."""
        digest = self.row_digests[row]
        path = self.paths[digest]
        try:
            data = fetched.result() if fetched is not None else None
            image = read_image(path, self.size, self.jpeg_draft, data)
        except ImageDecodeError as exc:
            return SkippedImage(path, exc.reason)
        out = np.empty((self.augment.views, *image.shape), np.uint8)
        for v in range(self.augment.views):
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
                fetched = self.fetch(row)
                job = self.pool.submit(self.load, row) if fetched is None else self.pool.submit(self.load, row, fetched)
                inflight.append((unit, row, job))
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
        if self.fetcher is not None:
            self.fetcher.shutdown(wait=True, cancel_futures=True)

"""The images fine-tuning trains on: the store's manifest (paths, labels, split) under the data
folder, each checked against the content digest the store recorded, then read in batches on a
thread pool with featcache's own decode and augmentation, so pixels match extraction's."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..backbones.spec import Preprocess
from ..errors import FeatcacheError, ParameterError, shortlist
from ..ingest.augment import AugmentParams, augment_view
from ..ingest.decode import read_image
from ..ingest.scan import SPLITS, digest_files
from ..ingest.sources import local_root
from ..paths import printable_path
from ..stores import open_store
from ..train.fit import HOLDOUT_FRACTION, _holdout
from ..train.run import RunConfig, ValidationSource


@dataclass(frozen=True)
class ImageSplit:
    paths: tuple[Path, ...]
    digests: tuple[str, ...]  # content digests: they key each image's augmented views
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, idx: np.ndarray) -> ImageSplit:
        return ImageSplit(tuple(self.paths[i] for i in idx), tuple(self.digests[i] for i in idx), self.labels[idx])


@dataclass(frozen=True)
class ImageSet:
    root: Path
    classes: list[str]
    train: ImageSplit
    validation: ImageSplit
    test: ImageSplit
    validation_source: ValidationSource

    @property
    def n(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def load_image_set(run: RunConfig, data: str | Path | None) -> ImageSet:
    """The run's store's images under ``data`` (default: the folder the store was extracted from),
    split as the run's head was trained: the store's split, or fit-head's holdout when the store has
    no validation images. Images that failed to decode at extraction are left out, as fit-head did."""
    with open_store(run.store_path) as st:
        manifest = st.manifest()
        failed = {p for p, _ in st.failed_images(manifest.paths, manifest.digests)}
    if manifest.classes != run.classes:
        raise FeatcacheError(f"the classes of store {run.store_path} are no longer those the run was trained on; "
                             "fit the head on the store again before fine-tuning")
    root = local_root(str(data) if data is not None else manifest.data_root, "fine-tuning")
    if not root.is_dir():
        raise ParameterError("data", f"{printable_path(root)} is not a folder; give the image folder the store "
                                     "was extracted from")
    rows = [i for i, p in enumerate(manifest.paths) if p not in failed]
    paths = [root / manifest.paths[i] for i in rows]
    digests = [manifest.digests[i] for i in rows]
    _check_digests(paths, digests, root)
    every = ImageSplit(tuple(paths), tuple(digests), manifest.labels[rows])
    splits = manifest.splits[rows]
    train, val, test = (np.flatnonzero(splits == SPLITS.index(s)) for s in SPLITS)
    source = ValidationSource.STORE
    if len(val) == 0:  # fit-head held validation out of the training images: the same ones
        held = _holdout(every.labels[train], HOLDOUT_FRACTION, run.seed)
        val, train = train[held], train[~held]
        source = ValidationSource.TRAIN_HOLDOUT if len(val) else ValidationSource.NONE
    return ImageSet(root, manifest.classes, every.take(train), every.take(val), every.take(test), source)


def _check_digests(paths: list[Path], digests: list[str], root: Path) -> None:
    """Every image must be the file the store was extracted from: a moved or edited data folder
    would otherwise train on other pixels than the head was fitted on."""
    found = digest_files(paths)
    wrong = [f"{printable_path(p)} ({why or 'changed'})" for p, (got, why), want in zip(paths, found, digests, strict=True)
             if got != want]
    if wrong:
        raise ParameterError("data", f"{len(wrong)} of {len(paths)} images under {printable_path(root)} are missing or "
                                     f"differ from the ones the store was extracted from: {shortlist(wrong, 3)}; "
                                     "give the folder the store was extracted from")


class BatchReader:
    """Batches of one view of some images of a split: decoded, augmented and preprocessed on
    ``workers`` threads, the next batch while the caller uses this one. View 0 is the image
    itself; views 1, 2, ... are the store's augmentation, seeded per (seed, image, view)."""

    def __init__(self, size: int, preprocess: Preprocess, augment: AugmentParams, workers: int):
        self.size = size
        self.preprocess = preprocess
        self.augment = augment
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="featcache-finetune")

    def load(self, path: Path, digest: str, view: int) -> np.ndarray:
        return augment_view(read_image(path, self.size), self.augment, digest, view)

    def batches(self, split: ImageSplit, order: np.ndarray, batch_size: int, view: int
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(preprocessed float32 images, labels) of ``order``'s images, ``batch_size`` at a time."""
        starts = iter(range(0, len(order), batch_size))
        inflight: deque = deque()

        def submit_next() -> None:
            for start in starts:
                idx = order[start:start + batch_size]
                inflight.append((idx, [self.pool.submit(self.load, split.paths[i], split.digests[i], view)
                                       for i in idx]))
                return

        submit_next()
        try:
            while inflight:
                idx, futures = inflight.popleft()
                submit_next()
                yield self.preprocess(np.stack([f.result() for f in futures])), split.labels[idx]
        finally:
            for _, futures in inflight:
                for f in futures:
                    f.cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

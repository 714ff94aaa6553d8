"""The images full-integer quantization calibrates on: by default a seeded sample of the store's own
training images, decoded by the same code extract used, so the int8 ranges are those of the data
the head was trained on. (The options are imported by the CLI: the store and decode code only
when used.)"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import FeatcacheError, ParameterError
from ..ingest.sources import is_url

if TYPE_CHECKING:
    from ..train.run import TrainedRun

DEFAULT_SIZE = 100  # TFLite's guidance: 100-500 representative images


@dataclass(frozen=True)
class CalibrationOptions:
    """``images``: files or folders to calibrate on (empty: the store's training images);
    ``size``: how many of them (a seeded random sample when there are more)."""

    images: tuple[str, ...] = ()
    size: int = DEFAULT_SIZE
    seed: int = 0

    def __post_init__(self):
        if self.size < 1:
            raise ParameterError("calibration_size", f"must be at least 1, not {self.size}")


@dataclass(frozen=True)
class CalibrationSet:
    """The files chosen, and where they came from (said in the export's report)."""

    files: tuple[Path, ...]
    source: str

    def decode(self, sizes: list[int]) -> list[list[np.ndarray]]:
        """Per image, one (1, S, S, 3) uint8 array per input size; unreadable files are left out."""
        from ..ingest.decode import iter_image_batches

        samples: list[list[np.ndarray]] = []
        for batch in iter_image_batches(list(self.files), sizes, 32):
            samples += [[arr[i:i + 1] for arr in batch.images] for i in range(len(batch.decoded))]
        if not samples:
            raise FeatcacheError(f"none of the {len(self.files)} calibration images from {self.source} can be "
                                 "read", remedy="give others as calibration_images", mentions=("calibration_images",))
        return samples


def choose(options: CalibrationOptions, run: TrainedRun) -> CalibrationSet:
    from ..ingest.decode import collect_image_files

    if options.images:
        files, source = collect_image_files(options.images), ", ".join(options.images)
        if not files:
            raise ParameterError("calibration_images", f"no image files in {source}")
    else:
        files, source = _training_images(run), f"the training images of store {run.config.store_path}"
    if len(files) > options.size:
        picked = np.random.default_rng(options.seed).choice(len(files), options.size, replace=False)
        files = [files[i] for i in sorted(picked)]
    return CalibrationSet(tuple(files), source)


def _training_images(run: TrainedRun) -> list[Path]:
    from ..stores import open_store

    store = run.config.store_path
    if not Path(store).exists():
        raise FeatcacheError(f"int8 calibrates on the training images of the run's store, and {store} does not "
                             "exist (moved or deleted)", remedy="give images like them with calibration_images DIR",
                             mentions=("calibration_images",))
    with open_store(store) as st:  # the images the run's features were trained on (decoded, verified)
        rows = st.rows(list(run.config.keys), allow_incomplete=True).split("train")
        m = rows.manifest
        if is_url(m.data_root):
            raise FeatcacheError(f"int8 calibration reads the store's training images from a local folder, and "
                                 f"these are at {m.data_root}", remedy="give a local copy of some with "
                                 "calibration_images DIR", mentions=("calibration_images",))
        files = [Path(m.data_root) / p for p in rows.paths]
    present = [f for f in files if f.exists()]
    if not present:
        raise FeatcacheError(f"none of the {len(files)} training images of store {store} is under "
                             f"{m.data_root} any more", remedy="give images like them with calibration_images DIR",
                             mentions=("calibration_images",))
    return present

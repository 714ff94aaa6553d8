"""What an export format is, and what one export hands it and gets back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..calibration import CalibrationSet

# What every exported model takes, said once for sidecars and docs.
INPUT_NOTE = "RGB images, (batch, size, size, 3), 0-255 (uint8; the .keras model also takes floats)"


@dataclass(frozen=True)
class TensorInfo:
    """An input or output as featcache checks it (the two attributes a Keras tensor has)."""

    name: str
    shape: tuple


@dataclass
class ExportJob:
    """One trained model to write: the end-to-end Keras model (RGB 0-255 in, probabilities out),
    its class names, where it came from (for messages), and the images int8 calibrates on."""

    model: Any
    classes: list[str]
    source: str
    calibration: CalibrationSet | None = None
    progress: bool = False  # a progress bar where writing takes a while (int8 calibration)

    @property
    def input_sizes(self) -> list[int]:
        return [int(t.shape[1]) for t in self.model.inputs]

    @cached_property
    def graph(self):
        """The TensorFlow functions the SavedModel and TFLite formats are made of, traced once for
        every format written from this job."""
        from ..graph import ServingGraph

        return ServingGraph(self.model, self.classes)


@dataclass
class ExportResult:
    path: Path
    format: str
    quantize: str
    sidecar: Path | None  # filled in by export, which writes it once the model is in place
    size_bytes: int
    calibration: dict | None = None  # int8: the images it was calibrated on and its top-1 agreement

    def to_dict(self) -> dict:
        return {"path": str(self.path), "format": self.format, "quantize": self.quantize,
                "labels": str(self.sidecar), "size_bytes": self.size_bytes, "calibration": self.calibration}


@dataclass(frozen=True)
class ExportFormat:
    """A way to write a trained model (``write``) and to read one back for predict (``holds``,
    ``load``). ``quantizations``: what ``--quantize`` accepts, the default first. ``suffix``: the
    ending ``--out`` must have ("" for a folder). ``write(job, path, quantize)`` writes the model
    only, at ``path``: a new temporary name beside ``--out`` (with its suffix) that export renames
    into place once complete, so a killed export leaves the previous model whole; export then
    writes the sidecar."""

    name: str
    suffix: str
    description: str
    write: Callable[[ExportJob, Path, str], ExportResult]
    holds: Callable[[Path], bool]
    load: Callable[[Path], Any]  # -> predict.Classifier
    quantizations: tuple[str, ...] = ("none",)


def size_of(path: Path) -> int:
    """Bytes of a model file, or of every file in a model folder."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

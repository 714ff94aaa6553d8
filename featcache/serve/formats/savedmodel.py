"""SavedModel: a folder TF Serving, TensorFlow.js converters and ``tf.saved_model.load`` read.

Signatures: ``serving_default`` takes uint8 RGB images (``image``, or ``image_<S>`` per input
size), ``serving_bytes`` takes encoded JPEG/PNG/BMP/GIF files (``image_bytes``, a string per
image) and decodes and resizes them in the graph. Both return ``probabilities`` (batch, classes),
``class_names`` (batch, classes) and ``label`` (batch,), the top class's name."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import FeatcacheError, describe_error
from ..labels import read_sidecar, sidecar_path
from .base import ExportFormat, ExportJob, ExportResult, TensorInfo, size_of

SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"


def write(job: ExportJob, out: Path, quantize: str) -> ExportResult:
    import keras
    import tensorflow as tf

    graph = job.graph
    archive = keras.export.ExportArchive()
    archive.track(job.model)
    archive.add_endpoint(SIGNATURE, graph.from_pixels, input_signature=graph.specs)
    archive.add_endpoint(BYTES_SIGNATURE, graph.from_bytes,
                         input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")])
    archive.write_out(str(out), verbose=False)
    return ExportResult(out, "savedmodel", quantize, None, size_of(out))


def holds(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").is_file()


class SavedModelRunner:
    """A SavedModel's serving signature behind what featcache asks of a Keras model: ``inputs``,
    ``outputs`` and ``predict_on_batch``."""

    def __init__(self, path: Path):
        import tensorflow as tf

        try:
            self._signature = tf.saved_model.load(str(path)).signatures[SIGNATURE]
        except KeyError:
            raise FeatcacheError(f"{path}: the SavedModel has no {SIGNATURE!r} signature") from None
        except Exception as exc:  # a damaged folder: TensorFlow raises many types
            raise FeatcacheError(f"{path}: cannot load as a SavedModel ({describe_error(exc)})") from exc
        specs = self._signature.structured_input_signature[1]
        # ascending input size, as a Keras export orders its inputs
        self._specs = sorted(specs.items(), key=lambda kv: (tuple(kv[1].shape)[1:2], kv[0]))
        self.inputs = [TensorInfo(name, tuple(spec.shape)) for name, spec in self._specs]
        outputs = self._signature.structured_outputs
        self._output = "probabilities" if "probabilities" in outputs else next(iter(outputs))
        self.outputs = [TensorInfo(self._output, tuple(outputs[self._output].shape))]

    def _call(self, images: list[np.ndarray]) -> dict:
        import tensorflow as tf

        feed = {name: tf.constant(np.asarray(a).astype(spec.dtype.as_numpy_dtype, copy=False))
                for (name, spec), a in zip(self._specs, images, strict=True)}
        return self._signature(**feed)

    def predict_on_batch(self, x) -> np.ndarray:
        return self._call(x if isinstance(x, list) else [x])[self._output].numpy()

    def class_names(self) -> list[str] | None:
        """The names a featcache SavedModel returns beside the probabilities (one blank image in)."""
        shapes = [tuple(spec.shape)[1:] for _, spec in self._specs]
        if "class_names" not in self._signature.structured_outputs or any(None in s for s in shapes):
            return None
        blank = [np.zeros((1, *s), np.uint8) for s in shapes]
        return [c.decode() for c in self._call(blank)["class_names"].numpy()[0]]


def load(path: Path):
    from ..classifier import Classifier

    runner = SavedModelRunner(path)
    if (classes := runner.class_names()) is not None:
        return Classifier(runner, classes, str(path), f"its {SIGNATURE} signature's class_names")
    return Classifier(runner, read_sidecar(path), str(path), str(sidecar_path(path)))


FORMAT = ExportFormat("savedmodel", "", "TensorFlow SavedModel folder (uint8 and image-bytes signatures)",
                      write, holds, load)

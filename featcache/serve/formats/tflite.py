"""TFLite (LiteRT): one ``.tflite`` file for phones and small devices, run with ``ai-edge-litert``
(no TensorFlow needed). Input: uint8 RGB pixels (1, S, S, 3) as they are, for every quantization.

- ``none``: float32 weights and arithmetic: the same numbers as the Keras model (within ~1e-5).
- ``float16``: weights stored as float16, half the file; the arithmetic stays float32 on CPUs.
- ``int8``: full-integer quantization, integer-only ops from the input to the output (what NPUs,
  Edge TPUs and microcontrollers run), calibrated on a sample of the store's training images; the
  output is uint8 with the scale 1/256 recorded in the file (probability = scale * (q - zero)).

The class names are in the ``.labels.json`` sidecar (TFLite's own metadata schema needs a separate
library to write)."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np

from ...atomic import create_exclusive
from ...errors import FeatcacheError, ParameterError, describe_error
from ...progress import progress_bar
from ...quiet import stderr_silenced
from ..labels import read_sidecar, sidecar_path
from .base import ExportFormat, ExportJob, ExportResult, TensorInfo, size_of

QUANTIZATIONS = ("none", "float16", "int8")


def convert(job: ExportJob, quantize: str, samples: list[list[np.ndarray]] | None = None) -> bytes:
    """The TFLite flatbuffer of ``job``'s model; ``samples`` (int8 only): per calibration image,
    one (1, S, S, 3) uint8 array per input."""
    frozen = job.graph.frozen
    absl = logging.getLogger("absl")  # the converter's notes about its own conversion path, not the model
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # the int8 converter prints its quantization summary from C++; its calibration (the
            # model run on each image) takes tens of seconds: a bar counts the images
            with stderr_silenced(keep_python=True), progress_bar(len(samples or ()), "int8 calibration",
                                                 enabled=job.progress and samples is not None) as bar:
                return _converter(frozen, quantize, _Counted(samples, bar) if samples else None).convert()
    except Exception as exc:  # the converter raises many types, with pages of MLIR
        raise FeatcacheError(f"{job.source}: cannot convert to TFLite {quantize} ({describe_error(exc)})") from exc
    finally:
        absl.setLevel(level)


class _Counted:
    """The calibration images, counted on ``bar`` as the converter reads them."""

    def __init__(self, items: list, bar):
        self.items, self.bar = items, bar

    def __iter__(self):
        for item in self.items:
            yield item
            self.bar.update(1)


def _converter(frozen, quantize: str, samples):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    if quantize in ("float16", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        converter.representative_dataset = lambda: iter(samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]  # integer only, or fail
        converter.inference_input_type = tf.uint8  # raw pixels: the graph's own cast keeps scale 1, zero 0
        converter.inference_output_type = tf.uint8
    return converter


def write(job: ExportJob, out: Path, quantize: str) -> ExportResult:
    samples = None
    if quantize == "int8":
        if job.calibration is None:
            raise ParameterError("quantize", "int8 needs calibration images")
        samples = job.calibration.decode(job.input_sizes)
    data = convert(job, quantize, samples)
    try:
        with os.fdopen(create_exclusive(out), "wb") as f:  # a new temporary name: nothing there followed
            f.write(data)
    except OSError as exc:
        raise ParameterError("out", f"cannot write {out} ({exc.strerror})") from exc
    report = None if samples is None else _agreement(job, TFLiteRunner(out), samples)
    return ExportResult(out, "tflite", quantize, None, size_of(out), report)


def _agreement(job: ExportJob, runner: TFLiteRunner, samples: list[list[np.ndarray]]) -> dict:
    """How often the int8 model's top class is the float model's, on the calibration images."""
    batch = [np.concatenate(per_size) for per_size in zip(*samples, strict=True)]
    x = batch[0] if len(batch) == 1 else batch
    same = np.argmax(np.asarray(job.model.predict_on_batch(x)), 1) == np.argmax(runner.predict_on_batch(x), 1)
    return {"images": len(samples), "source": job.calibration.source,
            "top1_agreement_with_float": float(np.mean(same))}


class TFLiteRunner:
    """A .tflite classifier behind what featcache asks of a Keras model: ``inputs``, ``outputs`` and
    ``predict_on_batch`` (one image per invocation: the file's batch size is 1). Quantized inputs
    and outputs are converted with the scale and zero point the file records."""

    def __init__(self, path: Path):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # no LiteRT wheel for this platform: TensorFlow's own, deprecated but still there
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter  # noqa: N806
        try:
            with stderr_silenced():  # "Created TensorFlow Lite XNNPACK delegate for CPU", from C++
                self._interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count() or 1)
                self._interpreter.allocate_tensors()
        except Exception as exc:  # not a flatbuffer, truncated, unsupported ops
            raise FeatcacheError(f"{path}: cannot load as a TFLite model ({describe_error(exc)})") from exc
        # ascending input size, as a Keras export orders its inputs
        self._inputs = sorted(self._interpreter.get_input_details(), key=lambda d: (tuple(d["shape"])[1:2], d["name"]))
        self._outputs = self._interpreter.get_output_details()
        self.inputs = [TensorInfo(d["name"], (None, *map(int, d["shape"][1:]))) for d in self._inputs]
        self.outputs = [TensorInfo(d["name"], (None, *map(int, d["shape"][1:]))) for d in self._outputs]

    @property
    def output_step(self) -> float:
        """The output's quantization step (0: float output)."""
        return float(self._outputs[0]["quantization"][0])

    def predict_on_batch(self, x) -> np.ndarray:
        images = x if isinstance(x, list) else [x]
        out = self._outputs[0]
        rows = []
        for i in range(len(images[0])):
            for d, arr in zip(self._inputs, images, strict=True):
                self._interpreter.set_tensor(d["index"], _to_input(arr[i:i + 1], d))
            self._interpreter.invoke()
            rows.append(_from_output(self._interpreter.get_tensor(out["index"])[0], out))
        return np.stack(rows) if rows else np.zeros((0, *out["shape"][1:]), np.float32)


def _to_input(x: np.ndarray, d: dict) -> np.ndarray:
    scale, zero = d["quantization"]
    if not scale:
        return x.astype(d["dtype"], copy=False)
    info = np.iinfo(d["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(d["dtype"])


def _from_output(q: np.ndarray, d: dict) -> np.ndarray:
    scale, zero = d["quantization"]
    return (q.astype(np.float32) - zero) * scale if scale else q.astype(np.float32, copy=False)


def holds(path: Path) -> bool:
    return path.suffix == ".tflite" and path.is_file()


def load(path: Path):
    from ..classifier import PROBABILITY_TOLERANCE, Classifier

    runner = TFLiteRunner(path)
    classes = read_sidecar(path)
    # each quantized probability is off by up to half a step: their sum by up to C half-steps
    tolerance = max(PROBABILITY_TOLERANCE, len(classes) * runner.output_step / 2)
    return Classifier(runner, classes, str(path), str(sidecar_path(path)), tolerance=tolerance)


FORMAT = ExportFormat("tflite", ".tflite", "TFLite/LiteRT flatbuffer (float32, float16 or full-integer int8)",
                      write, holds, load, QUANTIZATIONS)

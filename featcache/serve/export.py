"""Re-attach the frozen backbone(s) to a trained head: one model from raw RGB images to class
probabilities, written as a Keras file, a SavedModel or a TFLite model (``formats/``).

The model takes (B, S, S, 3) RGB images, 0-255, at the backbone's input size, and does the
backbone's preprocessing in the graph, with the numbers recorded in the run's feature configs (the
ones extraction used). With several backbones of different input sizes it has one input per size,
named ``image_<S>``, in ascending size order. It is made of Keras' own layers only, so every
format loads without featcache. The class names travel inside the model where the format allows
and in a sidecar ``<model name>.labels.json`` (labels.py).

An export is written under a temporary name beside ``out`` and renamed over it when complete (a
folder swapped in one step, featcache/atomic.py): a killed export leaves the previous one whole.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .. import atomic
from ..config import FeatureConfig
from ..errors import FeatcacheError, ParameterError, describe_error
from ..stores.lock import RunLock
from ..train.probe import TINY
from ..train.run import CONFIG_FILE, TrainedRun, load_run, make_folder
from .calibration import CalibrationOptions, choose
from .checks import check_model
from .formats import FORMATS, ExportFormat, ExportJob, ExportResult
from .formats.base import INPUT_NOTE
from .labels import check_sidecar_path, own_sidecar_path, write_sidecar


def build_end_to_end(features: list[FeatureConfig], head_model, classes: list[str], temperature: float = 1.0):
    """Images (one input per distinct input size) -> backbone(s) -> concatenated features -> head
    (-> softmax(log p / temperature) when calibrated)."""
    import keras

    from ..backbones.model import build_feature_extractor
    from .layers import preprocessing

    sizes = sorted({f.backbone.input_size for f in features})
    inputs = {s: keras.Input((s, s, 3), name="image" if len(sizes) == 1 else f"image_{s}") for s in sizes}
    parts = []
    for i, cfg in enumerate(features):
        x = preprocessing(inputs[cfg.backbone.input_size], cfg.backbone.preprocess, name=f"preprocess_{i}")
        extractor = build_feature_extractor(cfg.backbone, cfg.compute.precision)  # as extracted
        extractor.name = f"backbone_{i}_{cfg.backbone.name}"
        parts.append(extractor(x))
    x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="features")(parts)
    takes, given = tuple(head_model.input_shape[1:]), tuple(x.shape[1:])
    if takes != given:  # Keras' own error here names neither the head nor the backbones
        raise FeatcacheError(f"the head takes features of shape {takes} but the backbone(s) give {given}")
    probabilities = head_model(x)
    if temperature != 1.0:  # Keras ops and layers only: the model still loads without featcache
        logp = keras.ops.log(keras.ops.maximum(probabilities, TINY))
        probabilities = keras.layers.Softmax(name="calibrated")(keras.layers.Rescaling(1.0 / temperature)(logp))
    return keras.Model([inputs[s] for s in sizes], probabilities, name="featcache_classifier")


def build_run_model(run: TrainedRun):
    """The end-to-end model of a loaded run folder. Its records may be hand-edited into something
    the backbones and head cannot be rebuilt from: a FeatcacheError naming the folder, whatever
    the backbone or head code raised."""
    try:
        return build_end_to_end(run.config.features, run.head.to_keras(), run.config.classes,
                                run.config.temperature)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, FeatcacheError) else describe_error(exc)
        raise FeatcacheError(f"run folder {run.path}: cannot rebuild its model from {CONFIG_FILE} and its head "
                             f"({reason}); restore the folder or fit the head again") from exc


def resolve_format(name: str | None, out: str | Path) -> ExportFormat:
    """The named format; without a name, tflite for an --out ending in .tflite, else keras."""
    if name is None:
        name = "tflite" if Path(out).suffix == ".tflite" else "keras"
    try:
        return FORMATS.get(name)
    except FeatcacheError as exc:
        raise ParameterError("format", str(exc)) from None


def check_options(fmt: ExportFormat, quantize: str, calibration: CalibrationOptions | None) -> None:
    if quantize not in fmt.quantizations:
        quantized = [f"{f.name} ({', '.join(f.quantizations)})" for f in FORMATS if len(f.quantizations) > 1]
        raise ParameterError("quantize", f"{quantize!r} is not a quantization of the {fmt.name} format, which "
                                         f"takes {', '.join(fmt.quantizations)}; quantized formats: "
                                         f"{'; '.join(quantized)}")
    if calibration is not None and quantize != "int8":
        raise ParameterError("calibration_images" if calibration.images else "calibration_size",
                             "only an int8 model is calibrated", remedy="set quantize int8, or leave this out",
                             mentions=("quantize",))


def check_out(out: str | Path, fmt: ExportFormat) -> Path:
    """Where the model and its sidecar can be written; checked before the model is built."""
    out = Path(out).expanduser()
    if fmt.suffix:
        if out.is_dir():
            raise ParameterError("out", f"{out} is a folder; give the model file to write, e.g. "
                                        f"{out / ('model' + fmt.suffix)}")
        if out.suffix != fmt.suffix:
            raise ParameterError("out", f"{out}: the exported {fmt.name} model file must end in {fmt.suffix}",
                                 remedy="or give format savedmodel|tflite" if fmt.name == "keras" else None,
                                 mentions=("format",))
    elif out.is_file():
        raise ParameterError("out", f"{out} is a file; a {fmt.name} model is a folder: give a new folder name")
    elif out.is_dir() and any(out.iterdir()) and not fmt.holds(out):
        raise ParameterError("out", f"{out} is a folder holding other files; give a new folder name")
    check_sidecar_path(out)
    make_folder(out.parent, "out")
    return out


def export_model(run_dir: str | Path, out: str | Path, format: str | None = None, quantize: str = "none",
                 calibration: CalibrationOptions | None = None, progress: bool = False) -> ExportResult:
    """A fit-head run folder -> one model in ``format`` (keras, savedmodel, tflite; default: from
    ``out``'s ending) plus its ``.labels.json`` sidecar. ``quantize`` (tflite): none, float16 or
    int8; int8 calibrates on ``calibration`` (default: 100 of the store's training images)."""
    fmt = resolve_format(format, out)
    check_options(fmt, quantize, calibration)
    out = check_out(out, fmt)  # before the backbones are built: a bad path should fail at once
    run = load_run(run_dir)
    images = choose(calibration or CalibrationOptions(), run) if quantize == "int8" else None
    model = build_run_model(run)
    check_model(model, run.config.classes, f"run folder {run.path}", str(run.path / CONFIG_FILE))
    job = ExportJob(model, run.config.classes, f"run folder {run.path}", images, progress)
    lock = None
    try:
        lock = RunLock.acquire(out)  # one export to a name at a time: each clears what a killed one left
        for leftover in (out, own_sidecar_path(out)):
            atomic.remove_leftovers(leftover)
        with atomic.replaced(out) as tmp:  # the previous export at ``out`` stays whole until this one is
            result = fmt.write(job, tmp, quantize)
        sidecar = write_sidecar(out, job.classes, job.input_sizes, INPUT_NOTE, run.config.thresholds)
    except OSError as exc:  # no permission, disk full
        raise ParameterError("out", f"cannot write {out} ({exc.strerror})") from exc
    finally:
        if lock is not None:
            lock.release()
    return replace(result, path=out, sidecar=sidecar)


def export(run_dir: str | Path, out: str | Path, **options) -> Path:
    """``export_model``, returning the model's path."""
    return export_model(run_dir, out, **options).path

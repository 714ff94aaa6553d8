"""Re-attach the frozen backbone(s) to a trained head: one Keras model from raw RGB images to class
probabilities, saved as a single ``.keras`` file.

The model takes (B, S, S, 3) RGB images, uint8 or float in 0-255, at the backbone's input size,
and does the backbone's preprocessing in the graph, with the numbers recorded in the run's feature
configs (the ones extraction used). With several backbones of different input sizes it has one
input per size, named ``image_<S>``, in ascending size order. The class names travel inside the
file (config of the final ``ClassNames`` layer) and in a sidecar ``<model>.labels.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import __version__
from ..config import FeatureConfig
from ..errors import FeatcacheError, ParameterError, describe_error
from ..train.run import CONFIG_FILE, TrainedRun, load_run, make_folder
from .checks import check_model


def build_end_to_end(features: list[FeatureConfig], head_model, classes: list[str]):
    """Images (one input per distinct input size) -> backbone(s) -> concatenated features -> head."""
    import keras

    from ..backbones.model import build_feature_extractor
    from .layers import ChannelAffine, ClassNames

    sizes = sorted({f.backbone.input_size for f in features})
    inputs = {s: keras.Input((s, s, 3), name="image" if len(sizes) == 1 else f"image_{s}") for s in sizes}
    parts = []
    for i, cfg in enumerate(features):
        x = ChannelAffine.from_preprocess(cfg.backbone.preprocess, name=f"preprocess_{i}")(
            inputs[cfg.backbone.input_size])
        extractor = build_feature_extractor(cfg.backbone)
        extractor.name = f"backbone_{i}_{cfg.backbone.name}"
        parts.append(extractor(x))
    x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="features")(parts)
    takes, given = tuple(head_model.input_shape[1:]), tuple(x.shape[1:])
    if takes != given:  # Keras' own error here names neither the head nor the backbones
        raise FeatcacheError(f"the head takes features of shape {takes} but the backbone(s) give {given}")
    probs = ClassNames(classes, name="class_names")(head_model(x))
    return keras.Model([inputs[s] for s in sizes], probs, name="featcache_classifier")


def build_run_model(run: TrainedRun):
    """The end-to-end model of a loaded run folder. Its records may be hand-edited into something
    the backbones and head cannot be rebuilt from: a FeatcacheError naming the folder, whatever
    the backbone or head code raised."""
    try:
        return build_end_to_end(run.config.features, run.head.to_keras(), run.config.classes)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, FeatcacheError) else describe_error(exc)
        raise FeatcacheError(f"run folder {run.path}: cannot rebuild its model from {CONFIG_FILE} and its head "
                             f"({reason}); restore the folder or re-run fit-head") from exc


def _check_out(out: str | Path) -> Path:
    """Where the model and its sidecar can be written; checked before the model is built."""
    out = Path(out).expanduser()
    if out.is_dir():
        raise ParameterError("out", f"{out} is a folder; give the model file to write, e.g. {out / 'model.keras'}")
    if out.suffix != ".keras":
        raise ParameterError("out", f"{out}: the exported model file must end in .keras")
    sidecar = out.with_suffix(".labels.json")
    if sidecar.is_dir():
        raise ParameterError("out", f"{sidecar} is a folder, where the model's class names would be written; "
                                    "choose another model file name")
    make_folder(out.parent, "out")
    return out


def save_model(model, classes: list[str], out: str | Path) -> Path:
    """The model as ``out`` (.keras) plus the ``.labels.json`` sidecar."""
    out = _check_out(out)
    labels = {"classes": list(classes), "input_sizes": [int(t.shape[1]) for t in model.inputs],
              "input": "RGB images, uint8 or float 0-255, (batch, size, size, 3)",
              "featcache_version": __version__}
    try:
        model.save(out)
        out.with_suffix(".labels.json").write_text(json.dumps(labels, indent=2))
    except OSError as exc:  # no permission, disk full
        raise ParameterError("out", f"cannot write {out} ({exc.strerror})") from exc
    return out


def export(run_dir: str | Path, out: str | Path) -> Path:
    """A fit-head run folder -> one end-to-end ``.keras`` model file."""
    _check_out(out)  # before the backbones are built: a bad path should fail at once
    run = load_run(run_dir)
    model = build_run_model(run)
    check_model(model, run.config.classes, f"run folder {run.path}", str(run.path / CONFIG_FILE))
    return save_model(model, run.config.classes, out)

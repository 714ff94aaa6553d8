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
from ..errors import ParameterError


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
    probs = ClassNames(classes, name="class_names")(head_model(x))
    return keras.Model([inputs[s] for s in sizes], probs, name="featcache_classifier")


def save_model(model, classes: list[str], out: str | Path) -> Path:
    """The model as ``out`` (.keras) plus the ``.labels.json`` sidecar."""
    out = Path(out)
    if out.suffix != ".keras":
        raise ParameterError("out", f"{out}: the exported model file must end in .keras")
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    labels = {"classes": list(classes), "input_sizes": [int(t.shape[1]) for t in model.inputs],
              "input": "RGB images, uint8 or float 0-255, (batch, size, size, 3)",
              "featcache_version": __version__}
    out.with_suffix(".labels.json").write_text(json.dumps(labels, indent=2))
    return out


def export(run_dir: str | Path, out: str | Path) -> Path:
    """A fit-head run folder -> one end-to-end ``.keras`` model file."""
    from ..train.run import load_run

    run = load_run(run_dir)
    model = build_end_to_end(run.config.features, run.head.to_keras(), run.config.classes)
    return save_model(model, run.config.classes, out)

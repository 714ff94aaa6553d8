"""Re-attach the frozen backbone(s) to a trained head: one Keras model from raw RGB images to class
probabilities, exported as a single ``.keras`` file, and a predictor over image files.

The exported model takes (B, S, S, 3) RGB images, uint8 or float in 0-255, at the backbone's input
size, and does the backbone's preprocessing in the graph. With several backbones of different
input sizes it has one input per size, named ``image_<S>``, in ascending size order. The class
names travel inside the file (config of the final ``ClassNames`` layer) and in a sidecar
``<model>.labels.json`` for consumers that load it without featcache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .config import FeatureConfig
from .errors import FeatcacheError
from .images import collect_image_files, iter_image_batches
from .progress import progress_bar


def build_end_to_end(features: list[FeatureConfig], head_model, classes: list[str]):
    """Images (one input per distinct input size) -> backbone(s) -> concatenated features -> head."""
    import keras

    from .backbones.model import build_feature_extractor
    from .layers import ChannelAffine, ClassNames

    sizes = sorted({f.backbone.input_size for f in features})
    inputs = {s: keras.Input((s, s, 3), name="image" if len(sizes) == 1 else f"image_{s}") for s in sizes}
    parts = []
    for i, cfg in enumerate(features):
        x = ChannelAffine.from_preprocess(cfg.backbone.preprocess, name=f"preprocess_{i}")(inputs[cfg.backbone.input_size])
        extractor = build_feature_extractor(cfg.backbone)
        extractor.name = f"backbone_{i}_{cfg.backbone.backbone}"
        parts.append(extractor(x))
    x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="features")(parts)
    probs = head_model(x)
    probs = ClassNames(classes, name="class_names")(probs)
    return keras.Model([inputs[s] for s in sizes], probs, name="featcache_classifier")


@dataclass
class FilePrediction:
    path: str
    probabilities: list[float] = field(default_factory=list)
    label: str | None = None
    confidence: float | None = None
    error: str | None = None

    def top(self, classes: list[str], k: int) -> list[tuple[str, float]]:
        order = np.argsort(-np.asarray(self.probabilities))
        return [(classes[i], float(self.probabilities[i])) for i in (order[:k] if k > 0 else order)]


class Classifier:
    """Raw image files -> class probabilities, through one end-to-end Keras model."""

    def __init__(self, model, classes: list[str]):
        self.model = model
        self.classes = list(classes)
        self.input_sizes = [int(t.shape[1]) for t in model.inputs]

    def predict_images(self, images_by_size: list[np.ndarray]) -> np.ndarray:
        x = images_by_size[0] if len(images_by_size) == 1 else images_by_size
        return np.asarray(self.model.predict_on_batch(x))

    def predict(self, inputs, batch_size: int = 32, progress: bool = False) -> list[FilePrediction]:
        """Predict image files and folders (walked recursively). Unreadable files get .error."""
        files = collect_image_files([inputs] if isinstance(inputs, (str, Path)) else inputs)
        results: list[FilePrediction] = []
        bar = progress_bar(len(files), "predict", enabled=progress and len(files) > batch_size)
        for batch in iter_image_batches(files, self.input_sizes, batch_size):
            preds = [FilePrediction(str(p), error=batch.errors.get(i)) for i, p in enumerate(batch.paths)]
            results += preds
            if batch.decoded:
                probs = self.predict_images(batch.images)
                for i, p in zip(batch.decoded, probs, strict=True):
                    preds[i].probabilities = [float(v) for v in p]
                    preds[i].label = self.classes[int(np.argmax(p))]
                    preds[i].confidence = float(np.max(p))
            bar.update(len(batch.paths))
        bar.close()
        return results

    def save(self, out: str | Path) -> Path:
        out = Path(out)
        if out.suffix != ".keras":
            raise FeatcacheError(f"{out}: the exported model file must end in .keras")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.model.save(out)
        labels = {"classes": self.classes, "input_sizes": self.input_sizes,
                  "input": "RGB images, uint8 or float 0-255, (batch, size, size, 3)",
                  "featcache_version": __version__}
        out.with_suffix(".labels.json").write_text(json.dumps(labels, indent=2))
        return out


def load_classifier(path: str | Path) -> Classifier:
    """A run folder written by `featcache fit-head`, or a `.keras` file written by `featcache export`."""
    path = Path(path).expanduser()
    if path.is_dir():
        from .heads import load_run

        run = load_run(path)
        model = build_end_to_end(run.config.features, run.head.to_keras(), run.config.classes)
        return Classifier(model, run.config.classes)
    if path.suffix == ".keras" and path.is_file():
        import keras

        from . import layers  # noqa: F401  (registers featcache's layers for deserialisation)

        try:
            model = keras.saving.load_model(path)
        except Exception as exc:  # keras raises many types for a bad file
            raise FeatcacheError(f"{path}: cannot load as a Keras model ({exc})") from exc
        try:
            classes = model.get_layer("class_names").class_names
        except ValueError:
            sidecar = path.with_suffix(".labels.json")
            if not sidecar.is_file():
                raise FeatcacheError(f"{path}: no class names inside and no {sidecar.name} beside it") from None
            classes = json.loads(sidecar.read_text())["classes"]
        return Classifier(model, classes)
    raise FeatcacheError(f"{path}: expected a run folder from `featcache fit-head` or a .keras file "
                         "from `featcache export`")


def export(run_dir: str | Path, out: str | Path) -> Path:
    return load_classifier(run_dir).save(out)

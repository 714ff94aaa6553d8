"""Classify image files with a trained model: a fit-head run folder (the backbone re-attached to
the head on the fly) or a ``.keras`` file written by export."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FeatcacheError
from ..ingest.decode import collect_image_files, iter_image_batches
from ..progress import progress_bar


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


def load_classifier(path: str | Path) -> Classifier:
    """A run folder written by `featcache fit-head`, or a `.keras` file written by `featcache export`."""
    path = Path(path).expanduser()
    if path.is_dir():
        from ..train.run import load_run
        from .export import build_end_to_end

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


@dataclass
class FolderLabelScore:
    """Accuracy against each file's parent folder name taken as its true class."""

    correct: int
    scored: int  # files predicted (unreadable ones are not scored)
    unknown_folders: list[str]  # folder names that are not among the model's classes

    @property
    def accuracy(self) -> float:
        return self.correct / max(1, self.scored)


def score_folder_labels(predictions: list[FilePrediction], classes: list[str]) -> FolderLabelScore:
    scored = [(p.label, Path(p.path).parent.name) for p in predictions if p.error is None]
    unknown = sorted({true for _, true in scored} - set(classes))
    return FolderLabelScore(sum(label == true for label, true in scored), len(scored), unknown)

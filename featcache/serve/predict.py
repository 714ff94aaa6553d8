"""Classify image files with a trained model: a fit-head run folder (the backbone re-attached to
the head on the fly) or a model written by export: a ``.keras`` file, a SavedModel folder or a
``.tflite`` file (``formats/`` reads each).

A model from elsewhere works too when featcache can feed it: RGB inputs of one fixed square size
each, one (batch, classes) output of probabilities, and its class names inside or in a
``<model>.labels.json`` sidecar. Anything else (variable or non-square image size, greyscale
input, class names not matching the outputs, outputs that are not probabilities) is refused with a
FeatcacheError rather than guessed at; an image the model gives NaN or infinite numbers for gets an
error record, never a label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import FeatcacheError
from ..train.run import CONFIG_FILE, load_run
from .classifier import Classifier, FilePrediction

WHAT = "a run folder (a head fitted on cached features) or an exported model (.keras, .tflite or a SavedModel folder)"


def load_classifier(path: str | Path) -> Classifier:
    """A run folder written by `featcache fit-head`, or a model written by `featcache export`: a
    .keras file, a SavedModel folder or a .tflite file (or any such classifier of RGB images with
    its class names in a ``.labels.json`` sidecar)."""
    from .formats import format_holding
    from .labels import sidecar_thresholds

    path = Path(path).expanduser()
    if (fmt := format_holding(path)) is not None:
        clf = fmt.load(path)
        if (thresholds := sidecar_thresholds(path)) is not None:  # a multi-label export
            return Classifier(clf.model, clf.classes, clf.source, "its sidecar", clf.tolerance, clf.augment,
                              thresholds)
        return clf
    if path.is_dir():
        from .export import build_run_model

        run = load_run(path)
        augments = {f.augment for f in run.config.features}
        return Classifier(build_run_model(run), run.config.classes, f"run folder {run.path}",
                          str(run.path / CONFIG_FILE), augment=augments.pop() if len(augments) == 1 else None,
                          thresholds=run.config.thresholds)
    if not path.exists():
        raise FeatcacheError(f"{path} does not exist", remedy=f"give {WHAT}")
    raise FeatcacheError(f"{path}: expected {WHAT}")


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

"""A Classifier: image files -> class probabilities, whatever model holds the network (a run
folder's rebuilt model, or an exported file read by its format).

A multi-label classifier (``thresholds``: one decision threshold per class) gives an independent
probability per class; each image's predicted label set is the classes at or above their threshold."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FeatcacheError, ParameterError
from ..ingest.augment import AugmentParams, augment_view
from ..ingest.decode import collect_image_files, iter_image_batches
from ..ingest.scan import content_digest
from ..paths import printable_path
from ..progress import progress_bar
from .checks import check_model


@dataclass
class FilePrediction:
    path: str
    probabilities: list[float] = field(default_factory=list)
    label: str | None = None
    confidence: float | None = None
    error: str | None = None
    labels: list[str] | None = None  # multi-label: the predicted label set (None: single-label)

    def top(self, classes: list[str], k: int) -> list[tuple[str, float]]:
        order = np.argsort(-np.asarray(self.probabilities))
        return [(classes[i], float(self.probabilities[i])) for i in (order[:k] if k > 0 else order)]


# Largest gap from 1 tolerated in a row's sum (and below 0): float32 softmax strays by ~1e-6,
# float16 by a few 1e-3; logits or ReLU outputs miss by far more.
PROBABILITY_TOLERANCE = 1e-2
NOT_FINITE = "the model gave NaN or infinite probabilities for this image"


def _finite_rows(probs: np.ndarray, source: str, tolerance: float = PROBABILITY_TOLERANCE,
                 multilabel: bool = False) -> np.ndarray:
    """Which rows are finite. Finite rows must be probability distributions: checked on the
    outputs themselves, of every batch (cheap), because the softmax may sit in a Dense layer's
    activation, an Activation or Softmax layer, or a custom layer, so no layer inspection is sure;
    and a model giving logits would still give an argmax that looks like a label."""
    finite = np.isfinite(probs).all(axis=1)
    rows = probs[finite].astype(np.float64)  # a float16 sum would add its own error
    if len(rows) and multilabel:  # independent per-class probabilities: each in [0, 1]
        low, high = float(rows.min()), float(rows.max())
        if low < -tolerance or high > 1 + tolerance:
            raise FeatcacheError(f"{source}: its outputs are not per-class probabilities (each must be from 0 to 1; "
                                 f"got {low:.4g} to {high:.4g}); end the model with a sigmoid activation")
    elif len(rows):
        low, gap = float(rows.min()), float(np.abs(rows.sum(axis=1) - 1).max())
        if low < -tolerance or gap > tolerance:
            raise FeatcacheError(f"{source}: its outputs are not class probabilities (each image's values must be "
                                 f">= 0 and sum to 1; got a value of {low:.4g} and a sum off by {gap:.4g}); end "
                                 "the model with a softmax activation")
    return finite


class Classifier:
    """Raw image files -> class probabilities, through one end-to-end model: a Keras model, or
    anything with its ``inputs``, ``outputs`` and ``predict_on_batch`` (formats/ wraps SavedModel
    and TFLite so). ``source`` names the model in error messages, ``classes_from`` where its class
    names came from; ``tolerance``: how far a row's sum may stray from 1 (quantized outputs stray
    further)."""

    def __init__(self, model, classes: list[str], source: str = "the model", classes_from: str = "the class list",
                 tolerance: float = PROBABILITY_TOLERANCE, augment: AugmentParams | None = None,
                 thresholds: list[float] | None = None):
        self.model = model
        self.thresholds = None if thresholds is None else [float(t) for t in thresholds]
        self.augment = augment  # the views extraction made (a run folder's record): what --tta averages over
        self.classes = list(classes)
        self.source = source
        self.tolerance = tolerance
        self.input_sizes = check_model(model, self.classes, source, classes_from)
        if self.thresholds is not None and len(self.thresholds) != len(self.classes):
            raise FeatcacheError(f"{source}: {len(self.thresholds)} thresholds for {len(self.classes)} classes")

    @property
    def multilabel(self) -> bool:
        return self.thresholds is not None

    def predict_images(self, images_by_size: list[np.ndarray]) -> np.ndarray:
        x = images_by_size[0] if len(images_by_size) == 1 else images_by_size
        return np.asarray(self.model.predict_on_batch(x))

    def predict_views(self, images_by_size: list[np.ndarray], paths: list[Path]) -> np.ndarray:
        """Test-time augmentation: the mean probabilities over the V views extraction made of each
        image (seeded by its content digest: the same views as the cached ones)."""
        digests = [content_digest(p) for p in paths]
        views = [[np.stack([augment_view(img, self.augment, d, v) for img, d in zip(images, digests, strict=True)])
                  for images in images_by_size] for v in range(self.augment.views)]
        return np.mean([self.predict_images(v) for v in views], axis=0)

    def check_tta(self) -> None:
        if self.augment is None:
            raise ParameterError("tta", f"{self.source} records no augmentation; test-time augmentation needs a "
                                        "run folder (a head fitted on cached features)")
        if self.augment.views == 1:
            raise ParameterError("tta", f"{self.source} was trained on features without augmented views "
                                        "(extracted with none): there is nothing to average")

    def predict(self, inputs, batch_size: int = 32, progress: bool = False, tta: bool = False) -> list[FilePrediction]:
        """Predict image files and folders (walked recursively). Unreadable files, and images the
        model gives NaN or infinite numbers for, get .error and no label. ``tta``: average over
        the augmented views the run's features were extracted with."""
        if tta:
            self.check_tta()
        files = collect_image_files([inputs] if isinstance(inputs, (str, Path)) else inputs)
        results: list[FilePrediction] = []
        bar = progress_bar(len(files), "predict", enabled=progress and len(files) > batch_size)
        for batch in iter_image_batches(files, self.input_sizes, batch_size):
            preds = [FilePrediction(printable_path(p), error=batch.errors.get(i)) for i, p in enumerate(batch.paths)]
            results += preds
            if batch.decoded:
                probs = (self.predict_views(batch.images, [batch.paths[i] for i in batch.decoded]) if tta
                         else self.predict_images(batch.images))
                finite = _finite_rows(probs, self.source, self.tolerance, self.multilabel)
                for i, p, ok in zip(batch.decoded, probs, finite, strict=True):
                    if not ok:
                        preds[i].error = NOT_FINITE
                        continue
                    preds[i].probabilities = [float(v) for v in p]
                    preds[i].label = self.classes[int(np.argmax(p))]
                    preds[i].confidence = float(np.max(p))
                    if self.thresholds is not None:
                        preds[i].labels = [c for c, v, t in zip(self.classes, p, self.thresholds, strict=True)
                                           if v >= t]
            bar.update(len(batch.paths))
        bar.close()
        return results

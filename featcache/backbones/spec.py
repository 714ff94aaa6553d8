"""What a backbone carries with it: input size, preprocessing, feature size and weights source.

Like timm's pretrained configs, the data pipeline is derived from the spec, so a user never has to
remember that InceptionV3 wants 299x299 in [-1, 1] while ResNet50 wants 224x224 BGR minus the mean.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # keep TensorFlow out of `featcache --help`
    import keras

POOLINGS = ("avg", "max", "flatten")


@dataclass(frozen=True)
class Preprocess:
    """Per-channel affine map of RGB 0-255 pixels: ``y = x[..., order] * scale + offset``.

    Every keras.applications ``preprocess_input`` mode ("caffe", "tf", "torch") and
    EfficientNet-Lite's ``(x - 127) / 128`` are of this form, so one description serves both the
    numpy pipeline and the exported Keras graph.
    """

    name: str
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    bgr: bool = False

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(..., 3) RGB 0-255 -> float32, written into ``out`` when given (no allocation in the
        extraction hot path). The same float32 multiply-add whichever branch runs; a scale shared by
        all channels goes as one scalar operation because broadcasting a 3-vector makes numpy's inner
        loops 3 long, several times slower."""
        x = np.asarray(x)
        src = x[..., ::-1] if self.bgr else x
        out = np.empty(x.shape, np.float32) if out is None else out
        scale, offset = np.asarray(self.scale, np.float32), np.asarray(self.offset, np.float32)
        if (scale == scale[0]).all() and (offset == offset[0]).all():
            np.multiply(src, scale[0], out=out)
            out += offset[0]
        else:
            for c in range(3):
                np.multiply(src[..., c], scale[c], out=out[..., c])
                out[..., c] += offset[c]
        return out


PREPROCESS = {
    "none": Preprocess("none"),
    "tf": Preprocess("tf", (1 / 127.5,) * 3, (-1.0,) * 3),
    "caffe": Preprocess("caffe", (1.0,) * 3, (-103.939, -116.779, -123.68), bgr=True),
    "torch": Preprocess(
        "torch",
        tuple(1 / (255.0 * s) for s in (0.229, 0.224, 0.225)),
        tuple(-m / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), strict=True)),
    ),
    "efficientnet_lite": Preprocess("efficientnet_lite", (1 / 128.0,) * 3, (-127 / 128.0,) * 3),
}


# builder(input_size, weights) -> Keras model from preprocessed (B, H, W, 3) to a 4-D feature map.
# weights is "imagenet", "random" or a local file path.
FeatureMapBuilder = Callable[[int, str], "keras.Model"]
# classifier_builder(input_size, weights) -> model from preprocessed images to 1000 ImageNet probabilities.
ClassifierBuilder = Callable[[int, str], "keras.Model"]


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    input_size: int
    feature_dim: int  # channels of the feature map = size of the avg/max pooled feature
    preprocess: Preprocess
    build_features: FeatureMapBuilder
    weights_source: str  # where the pretrained weights come from, for humans
    weights_available: Callable[[], bool] = lambda: False
    weights_identity: Callable[[int], str] = lambda input_size: "imagenet"  # which weights load at that size
    build_classifier: ClassifierBuilder | None = None
    fixed_input_size: bool = False  # True when the pretrained classifier only accepts input_size
    min_input_size: int = 32
    family: str = "custom"


@dataclass(frozen=True)
class BackboneConfig:
    """Everything a stored feature depends on, on the backbone side."""

    backbone: str
    input_size: int
    pooling: str = "avg"
    weights: str = "imagenet"  # "imagenet", "random", or a local weights file
    weights_id: str = ""  # identity of the weights actually loaded (file digest, package file name)
    preprocess: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def file_digest(path: str | Path, algo: str = "sha256", block: int = 1 << 20) -> str:
    h = hashlib.new(algo)
    with Path(path).open("rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return f"{algo}:{h.hexdigest()[:16]}"

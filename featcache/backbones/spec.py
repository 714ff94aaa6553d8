"""What a backbone carries with it (BackboneSpec), and the record of one resolved configuration
of it (BackboneConfig) that stores and run folders keep.

Like timm's pretrained configs, the data pipeline is derived from the spec, so a user never has to
remember that InceptionV3 wants 299x299 in [-1, 1] while ResNet50 wants 224x224 BGR minus the mean.
Records, not names: a BackboneConfig holds the preprocessing NUMBERS and a reference to the code
that builds the network, so another process (or machine) rebuilds the same computation from it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FeatcacheError, ParameterError

if TYPE_CHECKING:  # keep TensorFlow out of `featcache --help`
    import keras

MAP_POOLINGS = ("avg", "max", "flatten")
# A transformer's tokens: avg/max over the patch tokens (what avg/max are on a feature map), the CLS
# token, CLS and the patch mean concatenated (DINOv2's linear evaluation), or the model's own
# pooled embedding (SigLIP's attention-pooling head, CLIP's projected image embedding).
TOKEN_POOLINGS = ("avg", "max", "cls", "cls_avg", "embedding")
POOLINGS = (*MAP_POOLINGS, "cls", "cls_avg", "embedding")
CHANNEL_ORDERS = ("rgb", "bgr")


@dataclass(frozen=True)
class Preprocess:
    """Per-channel affine map of RGB 0-255 pixels: ``y = x[..., order] * scale + offset``.

    Every keras.applications ``preprocess_input`` mode ("caffe", "tf", "torch") and
    EfficientNet-Lite's ``(x - 127) / 128`` are of this form, so one description serves the numpy
    pipeline and the exported Keras graph. ``name`` is a label for people; the numbers are what count.
    """

    name: str = "none"
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    channel_order: str = "rgb"  # "bgr": channels are reversed before scale/offset (caffe)

    def __post_init__(self):
        object.__setattr__(self, "scale", tuple(float(v) for v in self.scale))
        object.__setattr__(self, "offset", tuple(float(v) for v in self.offset))
        if len(self.scale) != 3 or len(self.offset) != 3:
            raise ParameterError("preprocess", f"{self.name}: scale and offset need 3 numbers (one per channel)")
        if not all(np.isfinite(self.scale + self.offset)):
            raise ParameterError("preprocess", f"{self.name}: scale and offset must be finite numbers")
        if self.channel_order not in CHANNEL_ORDERS:
            raise ParameterError("preprocess", f"{self.name}: channel_order must be one of {CHANNEL_ORDERS}")

    @property
    def bgr(self) -> bool:
        return self.channel_order == "bgr"

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

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "scale": list(self.scale), "offset": list(self.offset),
                "channel_order": self.channel_order}

    @classmethod
    def from_dict(cls, d: dict | str) -> Preprocess:
        if isinstance(d, str):  # featcache 0.1 recorded only a name: fill in the built-in numbers
            if d not in PREPROCESS:
                raise FeatcacheError(f"this store or run was written by featcache 0.1 with preprocessing {d!r}, "
                                     "whose numbers it did not record; re-extract the features")
            return PREPROCESS[d]
        return cls(d["name"], tuple(d["scale"]), tuple(d["offset"]), d.get("channel_order", "rgb"))


PREPROCESS = {
    "none": Preprocess("none"),
    "tf": Preprocess("tf", (1 / 127.5,) * 3, (-1.0,) * 3),
    "caffe": Preprocess("caffe", (1.0,) * 3, (-103.939, -116.779, -123.68), channel_order="bgr"),
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
class WeightsRecord:
    """What a spec's ``record_weights`` says of the weights that will load: the weights as
    recorded, their identity, the preprocessing numbers that go with them (a preset's own image
    converter) and further facts the features depend on (``BackboneConfig.details``)."""

    weights: str
    weights_id: str
    preprocess: Preprocess
    details: dict[str, Any] = field(default_factory=dict)


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
    min_input_size: int = 32
    # "module:attr" that yields this spec (an entry-point value), so a process that has not
    # registered it can still rebuild it; set by the registry for entry-point plugins.
    reference: str = ""
    # The blocks `fine-tune --unfreeze N` counts from the top: a regex whose first group names the
    # block of a layer (re.match on the layer name); layers it does not match join the next block
    # that it does (the last one at the end). "": every layer with weights is a block of its own.
    block_pattern: str = ""
    # Weights of the (untapped) feature extractor, for compare's cost column: a convolutional
    # trunk has the same count at every input size. None: counted once by building it.
    parameters: int | None = None
    max_input_size: int | None = None  # None: model.MAX_INPUT_SIZE
    # The poolings it takes, its own first. A transformer (build_features gives tokens (B, T, D),
    # or [tokens, its own pooled embedding]) takes TOKEN_POOLINGS; prefix_tokens (the CLS token and
    # registers) come before the patch tokens; embedding_dim is the size of its own embedding.
    poolings: tuple[str, ...] = MAP_POOLINGS
    patch_size: int = 0  # a transformer's patch: its input size is a multiple of it
    prefix_tokens: int = 0
    embedding_dim: int = 0
    family: str = ""  # for people: "dinov2", "clip", ... ("" for the CNNs)
    # (weights, input_size) -> WeightsRecord, for a spec whose weights are more than a file (a
    # preset folder: its digests, its converter's numbers). None: the file rules of resolve_config.
    record_weights: Callable[[str, int], WeightsRecord] | None = None

    def pooled_dim(self, pooling: str, width: int | None = None) -> int:
        """Features per image for ``pooling`` of tokens (or channels) ``width`` wide (the final
        layer's when None)."""
        width = self.feature_dim if width is None else width
        if pooling == "embedding":
            return self.embedding_dim
        return 2 * width if pooling == "cls_avg" else width


@dataclass(frozen=True)
class BackboneConfig:
    """Everything a stored feature depends on, on the backbone side: enough to rebuild it."""

    name: str
    input_size: int
    pooling: str = "avg"
    weights: str = "imagenet"  # "imagenet", "random", or a local weights file
    weights_id: str = ""  # identity of the weights actually loaded (file digest, package file name)
    preprocess: Preprocess = field(default_factory=Preprocess)
    builder: str = ""  # BackboneSpec.reference: where the network's code lives ("" = in-process only)
    # A block of the network (see backbones/blocks.py) whose output is pooled instead of the final
    # feature map: only the network up to it runs. "": the final feature map.
    tap: str = ""
    # Further facts the features depend on, as (name, value) pairs: a keras-hub preset's handle,
    # patch size, resize policy, weight-file digests, keras-hub version. Recorded only when set.
    details: tuple[tuple[str, Any], ...] = ()

    @property
    def details_dict(self) -> dict[str, Any]:
        return {k: _thaw(v) for k, v in self.details}

    @property
    def label(self) -> str:
        """What people call this feature: the backbone's name, or ``name.tap`` for a tap."""
        return f"{self.name}.{self.tap}" if self.tap else self.name

    def to_dict(self) -> dict[str, Any]:
        """The record; ``tap`` only when set, so the records and keys of untapped configs stay
        what they were before taps existed."""
        d = {**asdict(self), "preprocess": self.preprocess.to_dict(), "details": self.details_dict}
        for optional in ("tap", "details"):
            if not d[optional]:
                del d[optional]
        return d

    def identity(self) -> dict[str, Any]:
        """What the features depend on: not where the weights file or the builder code lives,
        nor which preset handle or keras-hub version found the same weight files."""
        d = {k: v for k, v in self.to_dict().items() if k not in ("weights", "builder")}
        if "details" in d:
            d["details"] = {k: v for k, v in d["details"].items() if k not in _LOCATION_DETAILS}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BackboneConfig:
        d = dict(d)
        if "backbone" in d:  # featcache 0.1
            d["name"] = d.pop("backbone")
        d["preprocess"] = Preprocess.from_dict(d.get("preprocess") or "none")
        d["details"] = freeze_details(d.get("details") or {})
        return cls(**{k: d[k] for k in ("name", "input_size", "pooling", "weights", "weights_id", "preprocess",
                                        "builder", "tap", "details") if k in d})


_LOCATION_DETAILS = ("preset", "keras_hub_version")  # where the same weights came from, not what they are


def _freeze(v):
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    return tuple(_freeze(x) for x in v) if isinstance(v, list | tuple) else v


def _thaw(v):
    if isinstance(v, tuple) and v and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in v):
        return {k: _thaw(x) for k, x in v}
    return [_thaw(x) for x in v] if isinstance(v, tuple) else v


def freeze_details(details: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Details as hashable (name, value) pairs, sorted: records are hashed as cache keys."""
    return tuple(sorted((k, _freeze(v)) for k, v in details.items()))


def file_digest(path: str | Path, algo: str = "sha256", block: int = 1 << 20) -> str:
    h = hashlib.new(algo)
    with Path(path).open("rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return f"{algo}:{h.hexdigest()[:16]}"

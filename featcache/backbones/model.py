"""Turn a BackboneConfig into a Keras feature extractor (preprocessed images -> pooled features)."""

from __future__ import annotations

from pathlib import Path

from ..errors import FeatcacheError
from . import get_backbone
from .spec import POOLINGS, BackboneConfig, file_digest


def resolve_config(name: str, input_size: int | None = None, pooling: str = "avg",
                   weights: str = "imagenet") -> BackboneConfig:
    """Validate the options against the backbone's spec and pin the identity of its weights."""
    spec = get_backbone(name)
    size = int(input_size or spec.input_size)
    if size < spec.min_input_size:
        raise FeatcacheError(f"{name}: input size {size} is below its minimum of {spec.min_input_size}")
    if pooling not in POOLINGS:
        raise FeatcacheError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    if weights in ("imagenet", "random"):
        weights_id = spec.weights_identity(size) if weights == "imagenet" else "random"
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FeatcacheError(f"{name}: weights file {path} does not exist")
        weights, weights_id = str(path.resolve()), file_digest(path)
    return BackboneConfig(name, size, pooling, weights, weights_id, spec.preprocess.name)


def build_feature_extractor(config: BackboneConfig):
    """Keras model: preprocessed (B, S, S, 3) float32 -> (B, D) pooled (or flattened) features."""
    import keras

    spec = get_backbone(config.backbone)
    trunk = spec.build_features(config.input_size, config.weights)
    trunk.trainable = False
    x = trunk.output
    if len(x.shape) == 4:
        pool = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D,
                "flatten": keras.layers.Flatten}[config.pooling]
        x = pool(name=f"{config.pooling}_pool")(x)
    return keras.Model(trunk.input, x, name=f"{config.backbone}_features")

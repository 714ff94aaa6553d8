"""The network fine-tuning trains: the run's backbone, rebuilt from its record exactly as export
rebuilds it, with the run's head on top; the top blocks trainable, BatchNorm frozen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import FeatureConfig
from ..errors import FeatcacheError
from ..heads import Head
from .blocks import Unfrozen, all_layers, freeze_batchnorm, unfreeze_top


@dataclass
class Network:
    model: Any  # keras.Model: preprocessed images -> class probabilities
    trunk: Any  # keras.Model: the backbone's own layers; its weights file is what the new run carries
    head: Any  # keras.Model: features -> probabilities, the head's Keras form (trained in place)
    unfrozen: Unfrozen


def build_network(feature: FeatureConfig, head: Head, unfreeze: int | str, seed: int) -> Network:
    import keras

    from ..backbones import spec_for
    from ..backbones.model import build_feature_extractor

    keras.utils.set_random_seed(seed)
    extractor = build_feature_extractor(feature.backbone)  # the feature network export builds
    # the backbone's own model: the extractor ends with its pooling, whose input is the feature map
    trunk = keras.Model(extractor.input, extractor.layers[-1].input, name=feature.backbone.name)
    head_model = head.to_keras()
    takes, given = tuple(head_model.input_shape[1:]), tuple(extractor.output.shape[1:])
    if takes != given:
        raise FeatcacheError(f"the head takes features of shape {takes} but the backbone gives {given}")
    images = keras.Input(tuple(extractor.input.shape[1:]), name="image")
    # training=False: the backbone runs in inference mode while its top blocks train (Keras guide)
    model = keras.Model(images, head_model(extractor(images, training=False)), name="fine_tune")
    spec = spec_for(feature.backbone)
    unfrozen = unfreeze_top(extractor.layers, spec.block_pattern, unfreeze, feature.backbone.name)
    freeze_batchnorm(model)
    seed_dropout(model, seed)
    return Network(model, trunk, head_model, unfrozen)


def seed_dropout(model, seed: int) -> None:
    """Dropout masks drawn from ``seed``: a loaded head's dropout layers took their seeds from
    whatever state the process's random generator was in when the head was loaded."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in all_layers(model):
        for value in vars(layer).values():
            if isinstance(value, keras.random.SeedGenerator):
                value.state.assign(np.array([rng.integers(1, 2**30), 0]).astype(value.state.dtype))

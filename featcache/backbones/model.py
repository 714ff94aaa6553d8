"""BackboneConfig records: resolve one from a name and options, and build its Keras feature extractor."""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from ..errors import FeatcacheError, ParameterError, shortlist
from . import get_backbone, spec_for
from .blocks import Block, backbone_blocks
from .spec import POOLINGS, BackboneConfig, BackboneSpec, file_digest
from .trained_weights import fine_tuned_weights

MAX_INPUT_SIZE = 2048  # a 2048x2048x3 float32 batch of 32 is 1.6 GB already


def resolve_config(name: str, input_size: int | None = None, pooling: str = "avg",
                   weights: str = "imagenet") -> BackboneConfig:
    """Validate the options against the backbone's spec; record its preprocessing numbers, its
    builder and the identity of the weights that will load. ``weights`` may be a fine-tune run
    folder: its backbone file, at the run's input size unless ``input_size`` is given."""
    spec = get_backbone(name)
    if weights not in ("imagenet", "random") and Path(weights).expanduser().is_dir():
        weights, input_size = fine_tuned_weights(Path(weights).expanduser(), name, input_size)
    size = spec.input_size if input_size is None else input_size  # 0 is a size (refused), not "the default"
    if isinstance(size, bool) or size != int(size) or not spec.min_input_size <= size <= MAX_INPUT_SIZE:
        raise ParameterError("image_size", f"{name} takes input sizes from {spec.min_input_size} to "
                                           f"{MAX_INPUT_SIZE}, got {size}")
    size = int(size)
    if pooling not in POOLINGS:
        raise ParameterError("pooling", f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    if weights in ("imagenet", "random"):
        weights_id = spec.weights_identity(size) if weights == "imagenet" else "random"
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ParameterError("weights", f"{name}: weights file {path} does not exist")
        weights, weights_id = str(path.resolve()), file_digest(path)
    return BackboneConfig(name, size, pooling, weights, weights_id, spec.preprocess, spec.reference)


def check_weights(config: BackboneConfig) -> None:
    """A local weights file must still be the one the features were computed with."""
    if config.weights in ("imagenet", "random"):
        return
    path = Path(config.weights)
    if not path.is_file():
        raise FeatcacheError(f"{config.name}: weights file {path} (recorded when the features were extracted) "
                             "no longer exists; put it back, or re-extract with another weights file")
    if config.weights_id and file_digest(path) != config.weights_id:
        raise FeatcacheError(f"{config.name}: weights file {path} changed since the features were extracted "
                             f"(digest {file_digest(path)}, recorded {config.weights_id}); restore it, or "
                             "re-extract and re-fit with the new file")


def known_feature_dim(config: BackboneConfig) -> int | None:
    """The feature size without loading weights: the spec's, or a tap's block's channels; None
    when only the network with its weights is asked (flatten of the final map)."""
    if config.tap:
        shape = block_shapes(config)[config.tap]
        return math.prod(shape) if config.pooling == "flatten" else shape[-1]
    return None if config.pooling == "flatten" else spec_for(config).feature_dim


def _blocks(trunk, spec: BackboneSpec) -> dict[str, Block]:
    """The blocks of a freshly built network (its layers still trainable), by name, bottom to top."""
    return {b.name: b for b in backbone_blocks(trunk.layers, spec.block_pattern)}


def _unknown_tap(name: str, tap: str, blocks: list[str]) -> ParameterError:
    return ParameterError("taps", f"{name} has no block {tap!r}; its blocks, bottom to top: {shortlist(blocks, 24)}")


def block_outputs(name: str, input_size: int | None = None) -> dict[str, tuple[int, ...]]:
    """The blocks of backbone ``name``, bottom to top (what a tap can name), each with the (H, W, C)
    shape of its output at ``input_size``. Builds the network (random weights: nothing is read or
    downloaded)."""
    return block_shapes(resolve_config(name, input_size, weights="random"))


def block_shapes(config: BackboneConfig) -> dict[str, tuple[int, ...]]:
    """The blocks of ``config``'s network with their output shapes: one random-weights build per
    backbone and size, however many taps ask (checking their names, learning their sizes)."""
    return _block_shapes(replace(config, tap="", weights="random", weights_id=""))


@lru_cache(maxsize=16)
def _block_shapes(config: BackboneConfig) -> dict[str, tuple[int, ...]]:
    spec = spec_for(config)
    blocks = _blocks(spec.build_features(config.input_size, "random"), spec)
    return {n: tuple(b.layers[-1].output.shape[1:]) for n, b in blocks.items()}


def tap_configs(config: BackboneConfig, taps: tuple[str, ...]) -> list[BackboneConfig]:
    """``config`` tapped at each of ``taps``, checked against its blocks (one network build for all)."""
    if not taps:
        return []
    names = list(block_shapes(config))
    for tap in taps:
        if tap not in names:
            raise _unknown_tap(config.name, tap, names)
    return [replace(config, tap=tap) for tap in taps]


def _tap_output(trunk, config: BackboneConfig):
    """The output of the last layer of the tapped block: a model ending there runs only the
    network up to it."""
    blocks = _blocks(trunk, spec_for(config))
    if config.tap not in blocks:
        raise _unknown_tap(config.name, config.tap, list(blocks))
    return blocks[config.tap].layers[-1].output


def build_feature_extractor(config: BackboneConfig, precision: str = "float32",
                            together: tuple[BackboneConfig, ...] = ()):
    """Keras model: preprocessed (B, S, S, 3) float32 -> (B, D) pooled (or flattened) float32
    features of the final feature map, or of the tapped block's output. ``precision``: the Keras
    dtype policy of the network; the pooling always runs in float32, so features come out float32
    whatever the policy. ``together``: other taps of the same network (configs that differ from
    ``config`` in ``tap`` only), computed in the same pass, their features concatenated after
    ``config``'s: the same numbers as their own models give, for one pass over the network."""
    import keras

    check_weights(config)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        trunk = spec_for(config).build_features(config.input_size, config.weights)
    finally:
        keras.config.set_dtype_policy(previous)
    # the taps' outputs are found before freezing: blocks are told apart by their trainable weights
    outputs = [(c, _tap_output(trunk, c) if c.tap else trunk.output) for c in (config, *together)]
    trunk.trainable = False
    pooled = [_pooled(c, x, f"_{c.tap or 'final'}" if together else "") for c, x in outputs]
    x = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name="features", dtype="float32")(pooled)
    return keras.Model(trunk.input, x, name=f"{config.name}_features")


def _pooled(config: BackboneConfig, x, suffix: str):
    import keras

    if len(x.shape) == 4:
        pool = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D,
                "flatten": keras.layers.Flatten}[config.pooling]
        return pool(name=f"{config.pooling}_pool{suffix}", dtype="float32")(x)
    if x.dtype != "float32":
        return keras.layers.Activation("linear", dtype="float32", name=f"float32_features{suffix}")(x)
    return x

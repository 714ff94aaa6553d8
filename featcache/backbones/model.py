"""BackboneConfig records: resolve one from a name and options, and build its Keras feature extractor."""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from ..errors import FeatcacheError, ParameterError, shortlist
from . import get_backbone, spec_for
from .blocks import Block, backbone_blocks
from .spec import BackboneConfig, BackboneSpec, file_digest, freeze_details
from .trained_weights import fine_tuned_weights

MAX_INPUT_SIZE = 2048  # a 2048x2048x3 float32 batch of 32 is 1.6 GB already


def resolve_config(name: str, input_size: int | None = None, pooling: str = "avg",
                   weights: str = "imagenet") -> BackboneConfig:
    """Validate the options against the backbone's spec; record its preprocessing numbers, its
    builder and the identity of the weights that will load. ``weights`` may be a fine-tune run
    folder: its backbone file, at the run's input size unless ``input_size`` is given; for a
    spec with ``record_weights`` (a keras-hub preset) a folder is what that spec says it is."""
    spec = get_backbone(name)
    if (weights not in ("imagenet", "random") and spec.record_weights is None
            and Path(weights).expanduser().is_dir()):
        weights, input_size = fine_tuned_weights(Path(weights).expanduser(), name, input_size)
    size = spec.input_size if input_size is None else input_size  # 0 is a size (refused), not "the default"
    largest = spec.max_input_size or MAX_INPUT_SIZE
    if isinstance(size, bool) or size != int(size) or not spec.min_input_size <= size <= largest:
        sizes = f"only {largest}" if spec.min_input_size == largest else \
            f"input sizes from {spec.min_input_size} to {largest}"
        raise ParameterError("image_size", f"{name} takes {sizes}, got {size}")
    size = int(size)
    if spec.patch_size and size % spec.patch_size:
        raise ParameterError("image_size", f"{name} takes multiples of its patch size {spec.patch_size}, got {size}")
    if pooling not in spec.poolings:
        raise ParameterError("pooling", f"unknown pooling {pooling!r} for {name}; choose one of "
                                        f"{', '.join(spec.poolings)} (its own first)")
    if spec.record_weights is not None:
        rec = spec.record_weights(weights, size)
        return BackboneConfig(name, size, pooling, rec.weights, rec.weights_id, rec.preprocess, spec.reference,
                              details=freeze_details(rec.details))
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
    if path.is_dir() and config.details:  # a preset folder: its files' digest as recorded
        spec = spec_for(config)
        if spec.record_weights is not None:
            now = spec.record_weights(config.weights, config.input_size).weights_id
            if now != config.weights_id:
                raise FeatcacheError(f"{config.name}: the preset folder {path} changed since the features were "
                                     f"extracted (digest {now}, recorded {config.weights_id}); restore it, or "
                                     "re-extract and re-fit with the new preset")
            return
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
    spec = spec_for(config)
    if config.tap:
        shape = block_shapes(config)[config.tap]
        return math.prod(shape) if config.pooling == "flatten" else spec.pooled_dim(config.pooling, shape[-1])
    return None if config.pooling == "flatten" else spec.pooled_dim(config.pooling)


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
    if config.pooling == "embedding":
        raise ParameterError("pooling", f"{config.name}: the embedding pooling is the final layer's own; tap with "
                                        f"another pooling ({', '.join(p for p in spec_for(config).poolings if p != 'embedding')})")
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
    spec = spec_for(config)
    pooled = [_pooled(c, spec, x, f"_{c.tap or 'final'}" if together else "") for c, x in outputs]
    x = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name="features", dtype="float32")(pooled)
    return keras.Model(trunk.input, x, name=f"{config.name}_features")


def _pooled(config: BackboneConfig, spec: BackboneSpec, x, suffix: str):
    import keras

    if isinstance(x, list | tuple):  # a transformer's [tokens, its own pooled embedding]
        x = x[1] if config.pooling == "embedding" else x[0]
        if config.pooling == "embedding":
            return _pooled(replace(config, pooling="avg"), spec, x, suffix)  # 2-D: as float32, as it is
    if len(x.shape) == 3:  # tokens (B, T, D): the prefix tokens (CLS, registers), then the patches
        return _pooled_tokens(config.pooling, spec.prefix_tokens, x, suffix)
    if len(x.shape) == 4:
        pool = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D,
                "flatten": keras.layers.Flatten}[config.pooling]
        return pool(name=f"{config.pooling}_pool{suffix}", dtype="float32")(x)
    if x.dtype != "float32":
        return keras.layers.Activation("linear", dtype="float32", name=f"float32_features{suffix}")(x)
    return x


def _pooled_tokens(pooling: str, prefix: int, x, suffix: str):
    """A token pooling of Keras' own layers (an export loads without featcache), in float32."""
    import keras

    layers = keras.layers
    if pooling in ("cls", "cls_avg") and prefix == 0:
        raise ParameterError("pooling", f"{pooling}: this network has no CLS token")
    tokens = x.shape[1]
    patches = layers.Cropping1D((prefix, 0), name=f"patch_tokens{suffix}", dtype="float32")(x) if prefix else x
    if pooling == "max":
        return layers.GlobalMaxPooling1D(name=f"max_tokens{suffix}", dtype="float32")(patches)
    mean = layers.GlobalAveragePooling1D(name=f"avg_tokens{suffix}", dtype="float32")(patches)
    if pooling == "avg":
        return mean
    cls = layers.Flatten(name=f"cls_token{suffix}", dtype="float32")(
        layers.Cropping1D((0, tokens - 1), name=f"first_token{suffix}", dtype="float32")(x))
    return cls if pooling == "cls" else layers.Concatenate(name=f"cls_avg{suffix}", dtype="float32")([cls, mean])

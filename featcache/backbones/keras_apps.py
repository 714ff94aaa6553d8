"""The keras.applications backbones the classic recipes use, each with its own preprocessing."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import FeatcacheError, WeightsUnavailableError
from .spec import PREPROCESS, BackboneSpec


@dataclass(frozen=True)
class _App:
    constructor: str  # attribute of keras.applications
    input_size: int
    feature_dim: int
    preprocess: str
    notop_file: str  # the file Keras caches in ~/.keras/models for weights="imagenet", include_top=False
    # Sizes with weights of their own: notop_file's "{size}" is the one Keras picks (224 otherwise).
    weight_sizes: tuple[int, ...] = ()
    min_size: int = 32

    def weights_file(self, input_size: int) -> str:
        size = input_size if input_size in self.weight_sizes else 224
        return self.notop_file.format(size=size)


_APPS = {
    "vgg16": _App("VGG16", 224, 512, "caffe", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "vgg19": _App("VGG19", 224, 512, "caffe", "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "resnet50": _App("ResNet50", 224, 2048, "caffe", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "resnet50_v2": _App("ResNet50V2", 224, 2048, "tf", "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "inception_v3": _App("InceptionV3", 299, 2048, "tf",
                         "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", min_size=75),
    "xception": _App("Xception", 299, 2048, "tf", "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     min_size=71),
    "inception_resnet_v2": _App("InceptionResNetV2", 299, 1536, "tf",
                                "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5", min_size=75),
    "mobilenet": _App("MobileNet", 224, 1024, "tf", "mobilenet_1_0_{size}_tf_no_top.h5",
                      weight_sizes=(128, 160, 192, 224)),
    "mobilenet_v2": _App("MobileNetV2", 224, 1280, "tf",
                         "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5",
                         weight_sizes=(96, 128, 160, 192, 224)),
    "densenet121": _App("DenseNet121", 224, 1024, "torch", "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    # EfficientNet and ConvNeXt carry their preprocessing inside the model (preprocess_input is identity).
    "efficientnet_b0": _App("EfficientNetB0", 224, 1280, "none", "efficientnetb0_notop.h5"),
    "convnext_tiny": _App("ConvNeXtTiny", 224, 768, "none", "convnext_tiny_notop.h5"),
    # The rest of what Keras 3 ships. Each preprocessing as its module's preprocess_input has it:
    # ResNet (V1) is caffe (BGR minus the ImageNet mean); ResNetV2 and NASNet are tf ([-1, 1]);
    # DenseNet is torch (ImageNet mean/std). EfficientNet, EfficientNetV2, ConvNeXt and MobileNetV3
    # build their preprocessing into the model (include_preprocessing=True, the default the ImageNet
    # weights were trained with: Rescaling/Normalization layers on 0-255 input) and their
    # preprocess_input is the identity, so featcache feeds them 0-255 pixels unchanged (scale 1, offset 0).
    **{f"efficientnet_b{v}": _App(f"EfficientNetB{v}", size, dim, "none", f"efficientnetb{v}_notop.h5")
       for v, size, dim in ((1, 240, 1280), (2, 260, 1408), (3, 300, 1536), (4, 380, 1792), (5, 456, 2048),
                            (6, 528, 2304), (7, 600, 2560))},
    **{f"efficientnet_v2_{v}": _App(f"EfficientNetV2{v.upper()}", size, dim, "none",
                                    f"efficientnetv2-{v}_notop.h5")
       for v, size, dim in (("b0", 224, 1280), ("b1", 240, 1280), ("b2", 260, 1408), ("b3", 300, 1536),
                            ("s", 384, 1280), ("m", 480, 1280), ("l", 480, 1280))},
    **{f"convnext_{v}": _App(f"ConvNeXt{c}", 224, dim, "none", f"convnext_{v}_notop.h5")
       for v, c, dim in (("small", "Small", 768), ("base", "Base", 1024), ("large", "Large", 1536),
                         ("xlarge", "XLarge", 2048))},
    # include_top=False ends at MobileNetV3's last 1x1 convolution (576 / 960 channels)
    "mobilenet_v3_small": _App("MobileNetV3Small", 224, 576, "none",
                               "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
    "mobilenet_v3_large": _App("MobileNetV3Large", 224, 960, "none",
                               "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"),
    "resnet101": _App("ResNet101", 224, 2048, "caffe", "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "resnet152": _App("ResNet152", 224, 2048, "caffe", "resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "resnet101_v2": _App("ResNet101V2", 224, 2048, "tf", "resnet101v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "resnet152_v2": _App("ResNet152V2", 224, 2048, "tf", "resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "densenet169": _App("DenseNet169", 224, 1664, "torch", "densenet169_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "densenet201": _App("DenseNet201", 224, 1920, "torch", "densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "nasnet_mobile": _App("NASNetMobile", 224, 1056, "tf", "nasnet_mobile_no_top.h5"),
    "nasnet_large": _App("NASNetLarge", 331, 4032, "tf", "nasnet_large_no_top.h5"),
}
# The twelve featcache had first (the CI builds all of them; scripts/check_keras_apps.py checks the rest).
CLASSIC = ("vgg16", "vgg19", "resnet50", "resnet50_v2", "inception_v3", "xception", "inception_resnet_v2",
           "mobilenet", "mobilenet_v2", "densenet121", "efficientnet_b0", "convnext_tiny")

# Weights of each feature extractor (include_top=False; Keras 3.15; count_params(), BatchNorm statistics
# included), the same at every input size (scripts/check_keras_apps.py checks every one):
# compare's cost column reads them instead of building a network to count them.
_PARAMETERS = {
    "vgg16": 14_714_688, "vgg19": 20_024_384, "resnet50": 23_587_712, "resnet50_v2": 23_564_800,
    "inception_v3": 21_802_784, "xception": 20_861_480, "inception_resnet_v2": 54_336_736,
    "mobilenet": 3_228_864, "mobilenet_v2": 2_257_984, "densenet121": 7_037_504,
    "efficientnet_b0": 4_049_571, "convnext_tiny": 27_820_128,
    "efficientnet_b1": 6_575_239, "efficientnet_b2": 7_768_569, "efficientnet_b3": 10_783_535,
    "efficientnet_b4": 17_673_823, "efficientnet_b5": 28_513_527, "efficientnet_b6": 40_960_143,
    "efficientnet_b7": 64_097_687,
    "efficientnet_v2_b0": 5_919_312, "efficientnet_v2_b1": 6_931_124, "efficientnet_v2_b2": 8_769_374,
    "efficientnet_v2_b3": 12_930_622, "efficientnet_v2_s": 20_331_360, "efficientnet_v2_m": 53_150_388,
    "efficientnet_v2_l": 117_746_848,
    "convnext_small": 49_454_688, "convnext_base": 87_566_464, "convnext_large": 196_230_336,
    "convnext_xlarge": 348_147_968,
    "mobilenet_v3_small": 939_120, "mobilenet_v3_large": 2_996_352,
    "resnet101": 42_658_176, "resnet152": 58_370_944, "resnet101_v2": 42_626_560, "resnet152_v2": 58_331_648,
    "densenet169": 12_642_880, "densenet201": 18_321_984, "nasnet_mobile": 4_269_716, "nasnet_large": 84_916_818,
}

_NASNET_CELL = r"(?:normal|reduction|adjust|separable)\w*?_(stem_\d|reduce_\d+|\d+)$"

# The blocks `fine-tune --unfreeze N` counts (BackboneSpec.block_pattern): the layer-name prefix of
# each; InceptionV3's convolutions have generated names, so there each "mixedN" closes a module.
_BLOCKS = {
    "vgg16": r"(block\d+)_",
    "vgg19": r"(block\d+)_",
    "resnet50": r"(conv1|pool1|conv\d_block\d+)_",
    "resnet50_v2": r"(conv1|pool1|conv\d_block\d+|post)_",
    "inception_v3": r"(mixed\d+)$",
    "xception": r"(block\d+)_",
    "inception_resnet_v2": r"(mixed_\d[a-z]|block\d+_\d+|conv_7b)",
    "mobilenet": r"(conv_pw_\d+)",
    "mobilenet_v2": r"(expanded_conv|block_\d+|Conv_1)",
    "densenet121": r"(conv\d_block\d+|pool\d)",
    "efficientnet_b0": r"(stem|block\d+[a-z]|top)_",
    "convnext_tiny": r"convnext_tiny_(stem|stage_\d+_block_\d+|downsampling_block_\d+)",
    **{f"efficientnet_b{v}": r"(stem|block\d+[a-z]|top)_" for v in range(1, 8)},
    **{f"efficientnet_v2_{v}": r"(stem|block\d+[a-z]|top)_" for v in ("b0", "b1", "b2", "b3", "s", "m", "l")},
    **{f"convnext_{v}": rf"convnext_{v}_(stem|stage_\d+_block_\d+|downsampling_block_\d+)"
       for v in ("small", "base", "large", "xlarge")},
    # conv_1 before conv: the stem is "conv", the last 1x1 convolution "conv_1"
    "mobilenet_v3_small": r"(expanded_conv(?:_\d+)?|conv_1|conv)(?:_|$)",
    "mobilenet_v3_large": r"(expanded_conv(?:_\d+)?|conv_1|conv)(?:_|$)",
    "resnet101": r"(conv1|pool1|conv\d_block\d+)_",
    "resnet152": r"(conv1|pool1|conv\d_block\d+)_",
    "resnet101_v2": r"(conv1|pool1|conv\d_block\d+|post)_",
    "resnet152_v2": r"(conv1|pool1|conv\d_block\d+|post)_",
    "densenet169": r"(conv\d_block\d+|pool\d)",
    "densenet201": r"(conv\d_block\d+|pool\d)",
    # a NASNet cell's layers end in its id: stem_1, stem_2, 0..N-1, reduce_N, ...
    "nasnet_mobile": _NASNET_CELL,
    "nasnet_large": _NASNET_CELL,
}


def keras_cache_dir() -> Path:
    """The folder where keras.applications looks for (and downloads) weights files.

    Mirrors keras.utils.get_file: Keras reads $KERAS_HOME once, when it is imported (default
    ~/.keras), and falls back to /tmp/.keras when that folder is not writable.
    """
    config = sys.modules.get("keras.src.backend.config")
    if config is not None and hasattr(config, "keras_home"):
        home = config.keras_home()
    elif "KERAS_HOME" in os.environ:
        home = os.environ["KERAS_HOME"]
    else:
        home = os.path.expanduser("~")
        home = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    home = os.path.expanduser(home)
    if not os.access(home, os.W_OK):
        home = os.path.join("/tmp", ".keras")
    return Path(home) / "models"


def _weights_missing(name: str, app: _App, exc: Exception) -> WeightsUnavailableError:
    url = re.search(r"https?://\S+?\.h5", str(exc))
    fname = url.group(0).rsplit("/", 1)[-1] if url else app.weights_file(app.input_size)
    reason = str(exc).rsplit(" -- ", 1)[-1]  # "URL fetch failure on URL: errno -- reason"
    return WeightsUnavailableError(
        f"{name}: ImageNet weights could not be downloaded ({reason}).\n"
        f"  Keras looks for {fname} in {keras_cache_dir()}.\n"
        f"  Remedies: run once on a machine with internet access and copy that file there, "
        f"or give a local weights file instead (e.g. a notop .h5 for feature extraction)."
    )


def _make(name: str, app: _App) -> BackboneSpec:
    def construct(input_size: int, weights: str, include_top: bool):
        import keras

        ctor = getattr(keras.applications, app.constructor)
        local = weights not in ("imagenet", "random")
        if local and not Path(weights).is_file():
            raise WeightsUnavailableError(f"{name}: weights file {weights} does not exist.")
        kwargs = dict(include_top=include_top, input_shape=(input_size, input_size, 3),
                      weights=None if weights == "random" else weights)
        try:
            return ctor(**kwargs)
        except (ValueError, OSError) as exc:  # h5py raises OSError on a file that is not HDF5
            if local:
                raise FeatcacheError(f"{name}: cannot load weights file {weights}: {exc}") from exc
            if isinstance(exc, OSError):
                raise
            raise FeatcacheError(f"{name}: {exc}") from exc
        except Exception as exc:  # keras raises a bare Exception on a failed download
            if weights == "imagenet" and "URL fetch failure" in str(exc):
                raise _weights_missing(name, app, exc) from exc
            raise

    def identity(input_size: int) -> str:
        return f"keras.applications:{app.constructor}:{app.weights_file(input_size)}"

    return BackboneSpec(
        name=name,
        input_size=app.input_size,
        feature_dim=app.feature_dim,
        preprocess=PREPROCESS[app.preprocess],
        build_features=lambda size, weights: construct(size, weights, include_top=False),
        build_classifier=lambda size, weights: construct(size, weights, include_top=True),
        weights_source=f"keras.applications download, cached in {keras_cache_dir()}",
        weights_available=lambda: (keras_cache_dir() / app.weights_file(app.input_size)).is_file(),
        weights_identity=identity,
        min_input_size=app.min_size,
        reference="featcache.backbones.keras_apps:SPECS",
        block_pattern=_BLOCKS[name],
        parameters=_PARAMETERS[name],
    )


SPECS = [_make(name, app) for name, app in _APPS.items()]

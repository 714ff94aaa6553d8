"""The preprocessing featcache puts into exported models, and the custom layers of older exports.

Exported models are built from Keras' own layers only (``preprocessing``), so a plain
``keras.saving.load_model`` reads them without featcache. ``ChannelAffine`` and ``ClassNames`` are
what featcache 0.1 exported with; they stay registered so those files still load in
``featcache predict``.
"""

from __future__ import annotations

import keras
import numpy as np

from ..backbones.spec import Preprocess


def preprocessing(x, pre: Preprocess, name: str):
    """RGB 0-255 -> what the backbone expects, with the numbers a feature config recorded. A
    per-channel Rescaling is the affine map; a BGR backbone (caffe) gets the channels reversed after
    it by a frozen 1x1 Dense holding a permutation (exact: one weight of 1 per output)."""
    if not pre.bgr:
        return keras.layers.Rescaling(list(pre.scale), list(pre.offset), name=name)(x)
    # y[c] = x[2 - c] * scale[c] + offset[c]: rescale in RGB order with reversed numbers, then permute
    x = keras.layers.Rescaling(list(pre.scale[::-1]), list(pre.offset[::-1]), name=name)(x)
    reverse = keras.layers.Dense(3, use_bias=False, trainable=False, name=f"{name}_bgr")
    y = reverse(x)
    reverse.set_weights([np.eye(3, dtype=np.float32)[::-1]])
    return y


@keras.saving.register_keras_serializable(package="featcache")
class ChannelAffine(keras.layers.Layer):
    """(featcache 0.1 exports; benchmarks) The backbone's preprocessing inside the graph: raw RGB 0-255 in, what the backbone expects out."""

    def __init__(self, scale, offset, bgr=False, **kwargs):
        super().__init__(**kwargs)
        self.scale = [float(v) for v in scale]
        self.offset = [float(v) for v in offset]
        self.bgr = bool(bgr)

    @classmethod
    def from_preprocess(cls, pre: Preprocess, **kwargs) -> ChannelAffine:
        """From the numbers a feature config recorded: the very ones extraction used."""
        return cls(pre.scale, pre.offset, pre.bgr, **kwargs)

    def call(self, x):
        x = keras.ops.cast(x, "float32")
        if self.bgr:
            x = keras.ops.flip(x, axis=-1)
        return x * keras.ops.convert_to_tensor(self.scale) + keras.ops.convert_to_tensor(self.offset)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset, "bgr": self.bgr}


@keras.saving.register_keras_serializable(package="featcache")
class ClassNames(keras.layers.Layer):
    """(featcache 0.1 exports) Identity on the probabilities; carries the class names in its config."""

    def __init__(self, class_names, **kwargs):
        super().__init__(**kwargs)
        self.class_names = [str(c) for c in class_names]

    def call(self, x):
        return x

    def get_config(self):
        return {**super().get_config(), "class_names": self.class_names}

"""Keras layers featcache puts into exported models (registered so `keras.saving.load_model` finds them)."""

from __future__ import annotations

import keras

from ..backbones.spec import Preprocess


@keras.saving.register_keras_serializable(package="featcache")
class ChannelAffine(keras.layers.Layer):
    """The backbone's preprocessing inside the graph: raw RGB 0-255 in, what the backbone expects out."""

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
    """Identity on the probabilities; carries the class names inside a saved model."""

    def __init__(self, class_names, **kwargs):
        super().__init__(**kwargs)
        self.class_names = [str(c) for c in class_names]

    def call(self, x):
        return x

    def get_config(self):
        return {**super().get_config(), "class_names": self.class_names}

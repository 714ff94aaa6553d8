"""The exported model as TensorFlow functions: uint8 pixels in, or encoded image bytes decoded and
resized in the graph; probabilities, class names and the top label out. The SavedModel's
signatures and the TFLite conversion are made from these, the model traced once for both."""

from __future__ import annotations

from functools import cached_property


class ServingGraph:
    def __init__(self, model, classes: list[str]):
        import tensorflow as tf

        self.sizes = [int(t.shape[1]) for t in model.inputs]
        # the Keras input names (image, or image_<S> per size) name the signature inputs too
        self.specs = [tf.TensorSpec((None, s, s, 3), tf.uint8, name=t.name)
                      for s, t in zip(self.sizes, model.inputs, strict=True)]
        self.classes = tf.constant(list(classes))

        @tf.function(input_signature=self.specs)
        def probabilities(*images):
            x = [tf.cast(i, tf.float32) for i in images]
            return model(x[0] if len(x) == 1 else x, training=False)

        self.probabilities = probabilities

    def outputs(self, probabilities) -> dict:
        """Batched outputs only (TF Serving's row format needs every output to have the batch axis)."""
        import tensorflow as tf

        n = tf.shape(probabilities)[0]
        return {"probabilities": probabilities,
                "class_names": tf.tile(self.classes[None], [n, 1]),
                "label": tf.gather(self.classes, tf.argmax(probabilities, axis=1))}

    def from_pixels(self, *images) -> dict:
        return self.outputs(self.probabilities(*images))

    def from_bytes(self, image_bytes) -> dict:
        """Encoded JPEG/PNG/BMP/GIF bytes -> RGB -> each input size (bilinear with antialiasing, as
        Pillow resizes for featcache) -> uint8 -> the model. EXIF orientation is not applied."""
        import tensorflow as tf

        def decode(data):
            # JPEG with the accurate integer DCT, as Pillow decodes (TF's default fast one is off by
            # up to 5 levels); the resize then differs from Pillow's by at most 1 level
            img = tf.cond(tf.io.is_jpeg(data),
                          lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
                          lambda: tf.io.decode_image(data, channels=3, expand_animations=False))
            img.set_shape((None, None, 3))
            return tuple(tf.cast(tf.clip_by_value(tf.round(tf.image.resize(img, (s, s), antialias=True)), 0, 255),
                                 tf.uint8) for s in self.sizes)

        out = tuple(tf.TensorSpec((s, s, 3), tf.uint8) for s in self.sizes)
        return self.from_pixels(*tf.map_fn(decode, image_bytes, fn_output_signature=out))

    @cached_property
    def frozen(self):
        """The probabilities function with the weights as constants: what TFLite converts. (The
        converter's own SavedModel route leaves Keras 3 variables unfrozen in TF 2.21: NaN outputs.)"""
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        return convert_variables_to_constants_v2(self.probabilities.get_concrete_function())

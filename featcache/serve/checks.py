"""What featcache needs of a Keras classifier to feed it images: checked once, before predicting."""

from __future__ import annotations

from ..errors import FeatcacheError


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}es" if word.endswith("s") else f"{n} {word}s"


def check_model(model, classes: list[str], source: str, classes_from: str) -> list[int]:
    """The input sizes of a model featcache can feed: every input (batch, S, S, 3) at a fixed S
    (images are resized to it), one (batch, C) output with C = len(classes). Anything else is a
    FeatcacheError saying what ``source`` has and what it needs; ``classes_from`` says where the
    class names came from."""
    # a model saved before it was ever built has no inputs attribute, and its outputs raise
    inputs, outputs = getattr(model, "inputs", None), getattr(model, "outputs", None)
    if not inputs or not outputs:
        raise FeatcacheError(f"{source} has no input shape (it was saved before it was built); build it on "
                             "an input, e.g. keras.Input((224, 224, 3)), and save it again")
    sizes = []
    for t in inputs:
        shape = tuple(t.shape)
        if len(shape) != 4:
            raise FeatcacheError(f"{source}: input {t.name!r} has shape {shape}; featcache feeds batches of "
                                 "images, (batch, size, size, 3)")
        _, h, w, c = shape
        if h is None or w is None:
            raise FeatcacheError(f"{source}: input {t.name!r} {shape} has no fixed image size; featcache resizes "
                                 "every image to the model's input size: save the model with a fixed one, e.g. "
                                 "keras.Input((224, 224, 3))")
        if h != w:
            raise FeatcacheError(f"{source}: input {t.name!r} {shape} is not square; featcache feeds square "
                                 "(size, size, 3) images")
        if c != 3:
            raise FeatcacheError(f"{source}: input {t.name!r} takes images with {_plural(c, 'channel')}; featcache "
                                 "feeds RGB images (3 channels), so the model needs an (size, size, 3) input")
        sizes.append(int(h))
    if len(outputs) != 1 or len(outputs[0].shape) != 2:
        raise FeatcacheError(f"{source} gives outputs of shape {[tuple(t.shape) for t in outputs]}; a "
                             "classifier gives one (batch, classes) array of class probabilities")
    n = outputs[0].shape[-1]
    if n != len(classes):
        raise FeatcacheError(f"{source} gives {n} class probabilities but {classes_from} names "
                             f"{_plural(len(classes), 'class')}: one name per output is needed")
    return sizes

"""Which blocks of a backbone fine-tuning trains (the blocks themselves: ``backbones/blocks.py``).

BatchNorm layers never train (Keras guide: a frozen BatchNormalization runs in inference mode, so
its statistics stay the ImageNet ones the rest of the network was trained with).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..backbones.blocks import backbone_blocks, is_batchnorm
from ..errors import FeatcacheError, ParameterError

ALL = "all"


@dataclass(frozen=True)
class Unfrozen:
    """What ``--unfreeze`` chose: the top blocks, and how many weights now train."""

    blocks: tuple[str, ...]
    of_blocks: int  # blocks the backbone has
    trainable_weights: int  # scalars in the backbone that train


def parse_unfreeze(value: int | str) -> int | str:
    """``N`` (a whole number from 1) or ``"all"``."""
    text = str(value).strip().lower()
    if text == ALL:
        return ALL
    if not text.isdigit() or int(text) < 1:
        raise ParameterError("unfreeze", f"give a number of top blocks (1 or more) or 'all', got {value!r}")
    return int(text)


def unfreeze_top(layers: list, pattern: str, n: int | str, backbone: str) -> Unfrozen:
    """Make the top ``n`` blocks (or all) of ``layers`` trainable and everything else frozen;
    BatchNorm stays frozen throughout."""
    for layer in layers:
        layer.trainable = True  # first, so the blocks see which layers have weights to train
    blocks = backbone_blocks(layers, pattern)
    if not blocks:
        raise FeatcacheError(f"{backbone} has no layers with weights to train (BatchNorm aside)")
    if n != ALL and n > len(blocks):
        raise ParameterError("unfreeze", f"{backbone} has {len(blocks)} blocks ({blocks[0].name} ... "
                                         f"{blocks[-1].name}); give at most {len(blocks)} or 'all'")
    chosen = blocks if n == ALL else blocks[len(blocks) - n:]
    for layer in layers:
        layer.trainable = False
    for block in chosen:
        for layer in block.layers:
            layer.trainable = not is_batchnorm(layer)
    count = sum(math.prod(w.shape) for layer in layers for w in layer.trainable_weights)
    return Unfrozen(tuple(b.name for b in chosen), len(blocks), count)


def all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # a model inside the model: the backbone, the head
            yield from all_layers(layer)


def freeze_batchnorm(model) -> None:
    """Every BatchNorm layer of ``model`` (the head's too) in inference mode, its weights fixed."""
    for layer in all_layers(model):
        if is_batchnorm(layer):
            layer.trainable = False

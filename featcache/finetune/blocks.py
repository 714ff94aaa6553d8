"""The blocks of a backbone, bottom to top, and which of them fine-tuning trains.

A backbone spec declares its blocks by layer name (``BackboneSpec.block_pattern``); a spec that
does not makes every layer with weights a block. Only blocks with weights BatchNorm does not own
count: unfreezing a block of BatchNorm alone would train nothing. BatchNorm layers never train
(Keras guide: a frozen BatchNormalization runs in inference mode, so its statistics stay the
ImageNet ones the rest of the network was trained with).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import FeatcacheError, ParameterError

ALL = "all"


@dataclass(frozen=True)
class Block:
    name: str
    layers: tuple  # Keras layers, in the model's order


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


def _is_batchnorm(layer) -> bool:
    import keras

    return isinstance(layer, keras.layers.BatchNormalization)


def _trains(layer) -> bool:
    """Has weights that can train (a preprocessing layer's constants and BatchNorm's do not count)."""
    return bool(layer.trainable_weights) and not _is_batchnorm(layer)


def _block_name(layer, pattern: str) -> str | None:
    m = re.match(pattern, layer.name)
    return None if m is None else (m.group(1) if m.groups() else m.group(0))


def backbone_blocks(layers: list, pattern: str) -> list[Block]:
    """``layers`` (all trainable at this point) grouped into blocks, bottom to top."""
    names = [_block_name(layer, pattern) for layer in layers] if pattern else []
    if not any(names):  # no pattern, or one that names nothing here: a block per layer
        names = [layer.name for layer in layers]
    # a layer the pattern leaves out joins the next block it names (the last one at the end)
    for i in range(len(names) - 2, -1, -1):
        names[i] = names[i] or names[i + 1]
    for i in range(1, len(names)):
        names[i] = names[i] or names[i - 1]
    groups: list[tuple[str, list]] = []
    for layer, name in zip(layers, names, strict=True):
        if not groups or groups[-1][0] != name:
            groups.append((name, []))
        groups[-1][1].append(layer)
    return [Block(name, tuple(group)) for name, group in groups if any(_trains(la) for la in group)]


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
            layer.trainable = not _is_batchnorm(layer)
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
        if _is_batchnorm(layer):
            layer.trainable = False

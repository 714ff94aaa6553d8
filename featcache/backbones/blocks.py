"""A backbone's blocks, bottom to top: what `fine-tune --unfreeze N` counts from the top, and what
a feature tap (``BackboneConfig.tap``) names.

A backbone spec declares its blocks by layer name (``BackboneSpec.block_pattern``); a spec that
does not makes every layer with weights a block. Only blocks with weights BatchNorm does not own
count: unfreezing a block of BatchNorm alone would train nothing, and a tap names the same blocks
as fine-tuning, so one list serves both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Block:
    name: str
    layers: tuple  # Keras layers, in the model's order


def is_batchnorm(layer) -> bool:
    import keras

    return isinstance(layer, keras.layers.BatchNormalization)


def trains(layer) -> bool:
    """Has weights that can train (a preprocessing layer's constants and BatchNorm's do not count)."""
    return bool(layer.trainable_weights) and not is_batchnorm(layer)


def _block_name(layer, pattern: str) -> str | None:
    m = re.match(pattern, layer.name)
    return None if m is None else (m.group(1) if m.groups() else m.group(0))


def backbone_blocks(layers: list, pattern: str) -> list[Block]:
    """``layers`` (all trainable at this point: a frozen layer has no trainable weights to tell
    its block apart) grouped into blocks, bottom to top."""
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
    return [Block(name, tuple(group)) for name, group in groups if any(trains(la) for la in group)]

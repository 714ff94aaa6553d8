"""`featcache backbones`."""

from __future__ import annotations

import click

from .common import command, echo_table, emit_json, import_tensorflow_quietly
from .options import json_option


@command("backbones")
@click.option("--blocks", metavar="NAME", default=None,
              help="List the blocks of backbone NAME instead (what `extract --taps` takes), with their output "
                   "shape at the backbone's input size.")
@json_option
def backbones_cmd(blocks, as_json):
    """List the registered backbones and whether their weights are on this machine."""
    from ..backbones import list_backbones

    if blocks is not None:
        _echo_blocks(blocks, as_json)
        return
    rows = [{"name": s.name, "family": s.family or "cnn", "input_size": s.input_size, "patch_size": s.patch_size or None,
             "feature_dim": s.feature_dim, "poolings": list(s.poolings), "own_pooling": s.poolings[0],
             "own_pooling_dim": s.pooled_dim(s.poolings[0]), "parameters": s.parameters,
             "preprocess": s.preprocess.to_dict(), "weights_available": s.weights_available(),
             "weights_source": s.weights_source, "builder": s.reference} for s in list_backbones()]
    if as_json:
        emit_json(rows)
    else:
        echo_table([{**r, "preprocess": r["preprocess"]["name"]} for r in rows],
                   ["name", "input_size", "patch_size", "feature_dim", "own_pooling", "parameters", "preprocess",
                    "weights_available", "weights_source"])


def _echo_blocks(name: str, as_json: bool) -> None:
    from ..backbones.model import block_outputs

    import_tensorflow_quietly()  # the network is built to read its blocks
    outputs = block_outputs(name)
    if as_json:
        emit_json({"name": name, "blocks": [{"block": b, "output_shape": list(s)} for b, s in outputs.items()]})
    else:  # avg/max pooling gives C features; flatten H*W*C
        echo_table([{"block": b, "output": "x".join(map(str, s)), "pooled_dim": s[-1]} for b, s in outputs.items()])


COMMANDS = [backbones_cmd]

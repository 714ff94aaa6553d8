"""`featcache verify`."""

from __future__ import annotations

import click

from .common import command, emit_json


@command("verify")
@click.argument("store", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def verify_cmd(ctx, store, as_json):
    """Check every checksum in STORE: the image list and every stored feature row.

    Exit status 0 when everything is intact, 1 when damage was found (the message names the damaged
    images and the command that recomputes them), 2 when STORE cannot be opened.
    """
    from ..stores.verify import describe, verify_store

    report = verify_store(store)
    if as_json:
        emit_json(report.to_dict())
    else:
        for line in describe(report):
            click.echo(line, err=not report.clean and line.startswith("To repair"))
    if not report.clean:
        ctx.exit(1)


COMMANDS = [verify_cmd]

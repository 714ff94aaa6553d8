"""`featcache verify`."""

from __future__ import annotations

import click

from ..errors import shortlist
from .common import command, emit_json, worded_remedy
from .options import json_option, store_argument


@command("verify")
@store_argument
@json_option
@click.pass_context
def verify_cmd(ctx, store, as_json):
    """Check every checksum in STORE: the image list and every stored feature row.

    Exit status 0 when everything is intact, 1 when damage was found (the message names the damaged
    images and the command that recomputes them), 2 when STORE cannot be opened.
    """
    from ..stores.verify import verify_store

    report = verify_store(store)
    remedy = worded_remedy(ctx.find_root().command, report.remedy()) or ""
    if as_json:
        emit_json({**report.to_dict(), "remedy": remedy})
    else:
        for line in describe(report, remedy):
            click.echo(line, err=not report.clean and line.startswith("To repair"))
    if not report.clean:
        ctx.exit(1)


SHOWN = 10  # damaged images named per configuration in text; --json lists every one


def describe(report, remedy: str) -> list[str]:
    """The report as lines of text."""
    lines = [f"store {report.store}: {report.images} images, {len(report.configs)} feature configuration(s)"]
    lines.append(f"  image list: {'DAMAGED: ' + report.manifest_problem if report.manifest_problem else 'ok'}")
    for c in report.configs:
        if not c.verifiable:
            lines.append(f"  {c.key}: not verifiable (no checksums)")
        elif c.clean and not c.extracted:
            lines.append(f"  {c.key}: empty (no row extracted; `featcache rm {report.store} -b {c.key}` removes it)")
        elif c.clean:
            pending = f", {c.rows - c.extracted} not extracted yet" if c.rows > c.extracted else ""
            lines.append(f"  {c.key}: {c.extracted} rows ok{pending}")
        else:
            what = [*c.problems]
            if c.damaged:
                listed = " (--json lists all)" if len(c.damaged) > SHOWN else ""
                what.append(f"{len(c.damaged)} damaged image(s): {shortlist(c.damaged, SHOWN)}{listed}")
            if c.damaged_orphans:
                what.append(f"{c.damaged_orphans} damaged row(s) of images no longer in the folder")
            lines.append(f"  {c.key}: DAMAGED: {'; '.join(what)}")
    lines += [f"  note: {n}" for n in report.notes]
    if not report.clean:
        lines.append(f"To repair: {remedy}.")
    return lines


COMMANDS = [verify_cmd]

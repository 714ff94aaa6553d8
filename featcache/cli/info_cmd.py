"""`featcache info`."""

from __future__ import annotations

import click

from .common import command, echo_table, emit_json, worded_remedy
from .options import json_option, store_argument


@command("info")
@store_argument
@json_option
@click.pass_context
def info_cmd(ctx, store, as_json):
    """Images per class and split, skipped files, and every backbone configuration in STORE.

    A configuration whose record was changed after its features were made is listed as damaged
    (with what repairs it); `featcache verify` checks every row.
    """
    from ..stores.info import store_info

    info = store_info(store)
    damaged = [{"key": c.key, "problem": c.problem, "remedy": worded_remedy(ctx.find_root().command, c.remedy)}
               for c in info.damaged]
    if as_json:
        emit_json({**info.to_dict(), "damaged": damaged})
        return
    classes = f"{len(info.classes)} {'class' if len(info.classes) == 1 else 'classes'}"
    click.echo(f"store {info.path}: {info.images} images in {classes} from {info.data_root}")
    click.echo(f"split {'(pre-split folders)' if info.presplit else info.split}")
    echo_table([{"class": c, **n, "total": sum(n.values())} for c, n in info.classes.items()])
    totals = {s: sum(n[s] for n in info.classes.values()) for s in ("train", "validation", "test")}
    click.echo(f"total  train {totals['train']}  validation {totals['validation']}  test {totals['test']}")
    if info.groups is not None:
        click.echo("groups  " + "  ".join(f"{s} {n['groups']} ({n['images']} images)" for s, n in info.groups.items()))
    if info.skipped:
        click.echo(f"\n{len(info.skipped)} skipped files:")
        for s in info.skipped:
            click.echo(f"  {s['path']}: {s['reason']}")
    click.echo("\nfeature configurations:")
    echo_table([{"key": c.key, "views": c.views, "dim": c.dim, "dtype": c.dtype,
                 "done": f"{c.done}/{c.rows}", "failed": c.failed, "state": c.state, "orphans": c.orphans,
                 "MB": round(c.nbytes / 1e6, 2), "images/s": c.stats.images_per_s,
                 "views/s": c.stats.views_per_s,
                 "checksums": "yes" if c.verifiable else "no (next extract adds them)"} for c in info.configs])
    if damaged:
        click.echo(f"\n{len(damaged)} damaged configuration(s), not described:")
        for d in damaged:
            click.echo(f"  {d['key']}: {d['problem']}; {d['remedy']}")
    if empty := [c.key for c in info.configs if c.empty]:
        click.echo(f"\n{len(empty)} empty configuration(s) (nothing extracted: a run stopped before its first "
                   f"unit); remove with `featcache rm {info.path} -b KEY`: {', '.join(empty)}")


COMMANDS = [info_cmd]

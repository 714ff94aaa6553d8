"""`featcache sweep`."""

from __future__ import annotations

import click

from . import options as opt
from .common import command, echo_table, emit_json
from .head_options import HeadParamsCommand, parse_head_values


@command("sweep", cls=HeadParamsCommand, grid=True, uses_tensorflow=True)
@opt.store_argument
@opt.backbones_option(opt.KEY_NOTE + " Optional when STORE has one complete configuration.")
@opt.head_option
@opt.out_option("Write leaderboard.csv, sweep.json and one run folder per trial here.", default=None)
@opt.seed_option("the heads and of the validation holdout (when the store has no validation split)")
@opt.memory_limit_option
@click.option("--executor", default=None, metavar="process|local:N|tcp://HOST:PORT",
              help="Who trains: process (this one, the default), or a Dask cluster as in extract: each group of "
                   "trials trained in one pass is one task, every worker reading the store, and --out, itself.")
@opt.alias("--dask", "executor")
@opt.quiet_option
@opt.json_option
def sweep_cmd(store, backbones, head, out, seed, memory_limit, executor, quiet, as_json, **head_values):
    """Train a head for every combination of the given values; rank them on validation.

    Each head option takes comma-separated values to try, e.g. --lr 1e-3,3e-4 --dropout 0.3,0.5.
    Keras heads of one batch size train together, sharing every batch; logreg solves all its C
    values together. Test accuracy is reported for the best combination only.
    """
    from ..heads import get_head_class, make_head
    from ..train.sweep import sweep

    grid = parse_head_values(get_head_class(head), head_values, grid=True)
    result = sweep(store, list(backbones), make_head(head, seed=seed), grid, out=out, seed=seed,
                   progress=not quiet, memory_limit=memory_limit, executor=executor)
    if as_json:
        emit_json(result.to_dict())
        return
    columns = ["trial", *grid, "val_accuracy", "val_macro_f1", "val_loss", "fit_seconds", "group"]
    echo_table(result.leaderboard(), columns)
    click.echo(f"{len(result.trials)} trials in {result.seconds:.2f} s (fitting {result.fit_seconds:.2f} s; "
               "fit_seconds: each trial's share of its group, trained together)")
    test = f"{result.test.accuracy:.4f}" if result.test else "- (no test images)"
    best = "  ".join(f"{k} {v}" for k, v in result.best.params.items()) or "defaults"
    click.echo(f"best: {best}  validation {result.best.val.accuracy:.4f}  test {test}")
    if result.out:
        click.echo(f"written to {result.out}")


COMMANDS = [sweep_cmd]

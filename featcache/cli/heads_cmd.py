"""`featcache fit-head`, `featcache sweep` and `featcache compare`."""

from __future__ import annotations

import click

from .common import echo_table, emit_json

HEAD_HELP = "Head type: mlp (Innolitics BatchNorm/Dropout/Dense head), linear (Dropout -> softmax) or logreg."
OPTIMIZERS = ("adam", "sgd", "rmsprop")


def _csv(convert):
    """click callback: 'a,b,c' -> [convert(a), ...] (None stays None)."""

    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            return [convert(v.strip()) for v in value.split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"expected comma-separated values, got {value!r}") from None

    return parse


def _optimizer(name: str) -> str:
    if name not in OPTIMIZERS:
        raise ValueError(name)
    return name


def _store_arg(f):
    return click.argument("store", type=click.Path())(f)


@click.command("fit-head")
@_store_arg
@click.option("-b", "--backbone", "backbones", multiple=True, required=True,
              help="Backbone name or full feature key in STORE (repeat to concatenate several).")
@click.option("--head", default="mlp", show_default=True, help=HEAD_HELP)
@click.option("--out", "-o", required=True, type=click.Path(), help="Run folder to write.")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Max epochs (Keras heads; default 100).")
@click.option("--lr", type=float, default=None, help="Learning rate (default: the optimizer's Keras default).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None,
              help="Keras heads (default: adam for mlp, rmsprop for linear).")
@click.option("--momentum", type=float, default=None, help="SGD momentum (default 0).")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Default 64 (mlp), 32 (linear).")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Default 0.5 (mlp), 0.4 (linear).")
@click.option("--hidden", type=click.IntRange(1), default=None, help="mlp hidden units (default 128).")
@click.option("--C", "C", type=click.FloatRange(0, min_open=True), default=None,
              help="logreg inverse regularization (default: chosen on validation from a log grid).")
@click.option("--patience", type=click.IntRange(1), default=None,
              help="Early-stopping patience in epochs (default 10).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--tensorboard-dir", type=click.Path(), default=None, help="Write TensorBoard logs here.")
@click.option("--checkpoint-every-epoch", is_flag=True,
              help="Keras heads: also keep weights.{epoch:02d}.weights.h5 for every epoch (Innolitics recipe).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def fit_head_cmd(store, backbones, head, out, seed, tensorboard_dir, checkpoint_every_epoch, quiet, as_json,
                 **options):
    """Train a head on the cached features of STORE and write a run folder.

    The run folder holds the head, config.json (what `featcache predict`/`export` need to
    re-attach the backbone), metrics.json, history.csv, confusion-matrix PNGs and the best
    checkpoint.
    """
    from ..fit import fit_head

    params = {k: v for k, v in options.items() if v is not None}
    result = fit_head(store, list(backbones), head, out, params, seed=seed, tensorboard_dir=tensorboard_dir,
                      checkpoint_every_epoch=checkpoint_every_epoch,
                      progress=not quiet)
    if as_json:
        emit_json(result.to_dict())
        return
    n = result.n
    click.echo(f"{head} head on {' + '.join(result.keys)} ({result.input_dim}-d): {n['train']} train images x "
               f"{n['views']} views, {n['validation']} validation ({result.validation_source}), {n['test']} test")
    for name, m in (("validation", result.val), ("test", result.test)):
        if m is not None:
            click.echo(f"  {name:<10} accuracy {m.accuracy:.4f}  macro-F1 {m.macro_f1:.4f}  (n={m.n})")
    extra = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in result.summary.items()
                      if k in ("epochs_trained", "best_epoch", "C") and v is not None)
    click.echo(f"  fit {result.fit_seconds:.2f} s{f' ({extra})' if extra else ''} -> {result.run_dir}")


@click.command("sweep")
@_store_arg
@click.option("-b", "--backbone", "backbones", multiple=True, required=True,
              help="Backbone name or feature key (repeat to concatenate several).")
@click.option("--head", default="mlp", show_default=True, help=HEAD_HELP)
@click.option("--lr", callback=_csv(float), help="Learning rates, e.g. 1e-3,3e-4.")
@click.option("--dropout", callback=_csv(float), help="Dropout rates, e.g. 0.3,0.5.")
@click.option("--hidden", callback=_csv(int), help="Hidden units (mlp), e.g. 64,128,256.")
@click.option("--C", "C", callback=_csv(float), help="logreg C values, e.g. 0.01,0.1,1.")
@click.option("--epochs", callback=_csv(int), help="Max epochs values.")
@click.option("--batch-size", callback=_csv(int), help="Batch sizes.")
@click.option("--optimizer", callback=_csv(_optimizer), help=f"Optimizers among {', '.join(OPTIMIZERS)}.")
@click.option("--patience", callback=_csv(int), help="Early-stopping patience values.")
@click.option("--out", "-o", type=click.Path(), default=None,
              help="Write leaderboard.csv, sweep.json and one run folder per trial here.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def sweep_cmd(store, backbones, head, out, seed, quiet, as_json, **grid):
    """Train a head for every combination of the given values; rank them on validation.

    Test accuracy is reported for the best combination only.
    """
    from ..sweep import sweep

    grid = {k: v for k, v in grid.items() if v is not None}
    result = sweep(store, list(backbones), head, grid, out=out, seed=seed, progress=not quiet)
    if as_json:
        emit_json(result.to_dict())
        return
    columns = ["trial", *grid, "val_accuracy", "val_macro_f1", "val_loss", "fit_seconds"]
    echo_table(result.leaderboard(), columns)
    test = f"{result.test.accuracy:.4f}" if result.test else "- (no test images)"
    click.echo(f"best: {result.best.params or 'defaults'}  validation {result.best.val.accuracy:.4f}  test {test}")
    if result.out:
        click.echo(f"written to {result.out}")


@click.command("compare")
@_store_arg
@click.option("--head", "heads", multiple=True, default=["logreg"], show_default=True,
              help="Head to fit on each backbone (repeatable).")
@click.option("-b", "--backbone", "backbones", multiple=True,
              help="Only these backbones/keys (default: every feature config in STORE).")
@click.option("--out", "-o", type=click.Path(), default=None,
              help="Write compare.csv, compare.json, compare.png and the run folders here.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def compare_cmd(store, heads, backbones, out, seed, quiet, as_json):
    """Leaderboard of every backbone configuration in STORE x each head, by validation accuracy."""
    from ..compare import compare

    result = compare(store, list(heads), out=out, backbones=list(backbones) or None, seed=seed, progress=not quiet)
    if as_json:
        emit_json(result.to_dict())
        return
    echo_table(result.rows(), ["key", "head", "val_accuracy", "test_accuracy", "fit_seconds", "images_per_s",
                               "feature_dim"])
    for key, why in result.skipped.items():
        click.secho(f"skipped {key}: {why}", fg="yellow", err=True)
    if result.out:
        click.echo(f"written to {result.out}")


COMMANDS = [fit_head_cmd, sweep_cmd, compare_cmd]

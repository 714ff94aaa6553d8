"""`featcache fit-head`, `featcache sweep` and `featcache compare`."""

from __future__ import annotations

import click

from .common import command, echo_table, emit_json
from .head_options import HeadParamsCommand, flag, parse_head_values

HEAD_HELP = "Head type (see `featcache heads`): mlp, linear, logreg, knn, or a plugin's."


def _store_arg(f):
    return click.argument("store", type=click.Path())(f)


def _memory_option(f):
    return click.option("--memory-limit", default=None, metavar="SIZE",
                        help="Memory for the features, e.g. 512MB or 2GB (default: half the available memory). "
                             "Larger features are streamed from STORE.")(f)


def _probe_options(f):
    """--tta, --calibrate, --refit, --combine: train/probe.py."""
    for decorator in reversed((
        click.option("--tta", is_flag=True, help="Score validation and test on the mean probabilities over every "
                                                 "cached view (test-time augmentation)."),
        click.option("--calibrate", is_flag=True, help="Fit a temperature on validation (softmax(log p / T)); "
                                                       "export and predict carry it."),
        click.option("--refit", is_flag=True, help="Refit on train + validation with the epochs / C validation "
                                                   "chose; that head is the one tested and kept."),
        click.option("--combine", type=click.Choice(["concat", "ensemble"]), default="concat", show_default=True,
                     help="Several -b: one head on the concatenated features, or one head per backbone with "
                          "their probabilities averaged."),
    )):
        f = decorator(f)
    return f


def _probe(tta, calibrate, refit, combine):
    from ..train.probe import ProbeOptions

    return ProbeOptions(tta=tta, calibrate=calibrate, refit=refit, combine=combine)


@command("fit-head", cls=HeadParamsCommand, uses_tensorflow=True)
@_store_arg
@click.option("-b", "--backbone", "backbones", multiple=True, required=True,
              help="Backbone name, NAME.BLOCK for a tap, or full feature key in STORE (repeat to concatenate "
                   "several).")
@click.option("--head", default="mlp", show_default=True, help=HEAD_HELP)
@click.option("--out", "-o", required=True, type=click.Path(), help="Run folder to write.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the head and of the validation holdout (when the store has no validation split).")
@click.option("--tensorboard-dir", type=click.Path(), default=None, help="Write TensorBoard logs here.")
@click.option("--checkpoint-every-epoch", is_flag=True,
              help="Keras heads: also keep weights.{epoch:02d}.weights.h5 for every epoch (Innolitics recipe).")
@_memory_option
@_probe_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def fit_head_cmd(store, backbones, head, out, seed, tensorboard_dir, checkpoint_every_epoch, memory_limit, tta,
                 calibrate, refit, combine, quiet, as_json, **head_values):
    """Train a head on the cached features of STORE and write a run folder.

    The run folder holds the head, config.json (what `featcache predict`/`export` need to
    re-attach the backbone), metrics.json, history.csv, confusion-matrix PNGs and the best
    checkpoint. The head options below are those of every registered head; each head takes its own.
    """
    from ..heads import get_head_class, make_head
    from ..train.fit import fit_head

    model = make_head(head, parse_head_values(get_head_class(head), head_values, grid=False), seed=seed)
    result = fit_head(store, list(backbones), model, out, seed=seed, tensorboard_dir=tensorboard_dir,
                      checkpoint_every_epoch=checkpoint_every_epoch, progress=not quiet, memory_limit=memory_limit,
                      probe=_probe(tta, calibrate, refit, combine))
    if as_json:
        emit_json(result.to_dict())
        return
    n = result.n
    click.echo(f"{head} head on {' + '.join(result.keys)} ({result.input_dim}-d): {n['train']} train images x "
               f"{n['views']} views, {n['validation']} validation ({result.validation_source}), {n['test']} test")
    for name, m in (("validation", result.val), ("test", result.test)):
        if m is not None:
            click.echo(f"  {name:<10} accuracy {m.accuracy:.4f}  macro-F1 {m.macro_f1:.4f}  ECE {m.ece:.4f}  (n={m.n})")
    if result.temperature != 1.0:
        click.echo(f"  temperature {result.temperature:.3f} (fitted on validation)")
    if result.refit:
        click.echo(f"  refit on {result.refit['images']} train + validation images with {result.refit['params']}; "
                   "validation scores are those of the head before the refit")
    extra = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in result.summary.items()
                      if k in ("epochs_trained", "best_epoch", "C") and v is not None)
    streamed = " (streamed from the store)" if result.memory and result.memory.streamed else ""
    click.echo(f"  fit {result.fit_seconds:.2f} s{f' ({extra})' if extra else ''}{streamed} -> {result.run_dir}")


@command("sweep", cls=HeadParamsCommand, grid=True, uses_tensorflow=True, flag_aliases={"executor": "dask"})
@_store_arg
@click.option("-b", "--backbone", "backbones", multiple=True, required=True,
              help="Backbone name or feature key (repeat to concatenate several).")
@click.option("--head", default="mlp", show_default=True, help=HEAD_HELP)
@click.option("--out", "-o", type=click.Path(), default=None,
              help="Write leaderboard.csv, sweep.json and one run folder per trial here.")
@click.option("--seed", type=int, default=0, show_default=True)
@_memory_option
@click.option("--dask", "dask", metavar="local:N|ADDRESS", default=None,
              help="Run the sweep's tasks (each group of trials trained in one pass) on a Dask cluster; every "
                   "worker reads the store, and --out, itself.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def sweep_cmd(store, backbones, head, out, seed, memory_limit, dask, quiet, as_json, **head_values):
    """Train a head for every combination of the given values; rank them on validation.

    Each head option takes comma-separated values to try, e.g. --lr 1e-3,3e-4 --dropout 0.3,0.5.
    Keras heads of one batch size train together, sharing every batch; logreg solves all its C
    values together. Test accuracy is reported for the best combination only.
    """
    from ..heads import get_head_class, make_head
    from ..train.sweep import sweep

    grid = parse_head_values(get_head_class(head), head_values, grid=True)
    result = sweep(store, list(backbones), make_head(head, seed=seed), grid, out=out, seed=seed,
                   progress=not quiet, memory_limit=memory_limit, executor=dask)
    if as_json:
        emit_json(result.to_dict())
        return
    columns = ["trial", *grid, "val_accuracy", "val_macro_f1", "val_loss", "fit_seconds", "group"]
    echo_table(result.leaderboard(), columns)
    click.echo(f"{len(result.trials)} trials in {result.seconds:.2f} s (fitting {result.fit_seconds:.2f} s; "
               "fit_seconds: each trial's share of its group, trained together)")
    test = f"{result.test.accuracy:.4f}" if result.test else "- (no test images)"
    click.echo(f"best: {result.best.params or 'defaults'}  validation {result.best.val.accuracy:.4f}  test {test}")
    if result.out:
        click.echo(f"written to {result.out}")


def _interval_text(row: dict, metric: str) -> str:
    return f"{row[metric]:.3f} [{row[metric + '_low']:.3f}, {row[metric + '_high']:.3f}]"


def _parse_shots(text: str | None) -> list[int | None] | None:
    """"1,5,10,all" -> [1, 5, 10, None] (None: every labelled image)."""
    from ..errors import ParameterError

    if not text:
        return None
    shots = []
    for part in (p.strip() for p in text.split(",")):
        if part.lower() == "all":
            shots.append(None)
        elif part.isdigit():
            shots.append(int(part))
        else:
            raise ParameterError("shots", f"expected whole numbers or 'all', comma-separated, got {part!r}")
    return shots


def _echo_cv(result) -> None:
    rows = [{**r, **{m: _interval_text(r, m) for m in ("accuracy", "macro_f1", "balanced_accuracy", "log_loss")}}
            for r in result.rows()]
    echo_table(rows, ["key", "head", "accuracy", "macro_f1", "balanced_accuracy", "log_loss", "vs_best",
                      "fit_seconds", "images_per_s", "feature_dim", "backbone_params"])
    click.echo(f"{result.folds}-fold CV x {result.repeats} over {result.images} train+validation images; "
               "95% Nadeau-Bengio corrected t-intervals; vs_best: corrected paired t-test (n.s.: not significant)")
    if result.note:
        click.secho(result.note, fg="yellow", err=True)
    for e in result.entries if result.shots else []:
        click.echo(f"  {e.name}: " + "  ".join(f"{s}/class {i.mean:.3f}" for s, i in e.shots.items()))
    w = result.winner_test
    click.echo(f"winner: {result.entries[0].name}; test accuracy {w['accuracy']:.4f} (n={w['n']})" if w else
               f"winner: {result.entries[0].name} (no test images)")


@command("compare", uses_tensorflow=True)
@_store_arg
@click.option("--head", "heads", multiple=True, default=["logreg"], show_default=True,
              help="Head to fit on each backbone (repeatable).")
@click.option("-b", "--backbone", "backbones", multiple=True,
              help="Only these backbones/keys (default: every feature config in STORE).")
@click.option("--folds", type=int, default=None,
              help="Cross-validate on K stratified folds of the train+validation images (capped at the smallest "
                   "class), with 95% intervals and paired tests. Default: one fit, ranked on validation.")
@click.option("--repeats", type=int, default=1, show_default=True, help="Repeat the K folds R times (with --folds).")
@click.option("--shots", default=None, metavar="LIST",
              help="Few-shot learning curves (with --folds): labelled images per class, e.g. 1,5,10,all.")
@click.option("--out", "-o", type=click.Path(), default=None,
              help="Write report.html, compare.csv, compare.json, the charts (and run folders without --folds) here.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the folds and the heads.")
@click.option("--tta", is_flag=True, help="Score held-out images on the mean probabilities over their cached views "
                                          "(configurations extracted with --augment K).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def compare_cmd(store, heads, backbones, folds, repeats, shots, out, seed, tta, quiet, as_json):
    """Leaderboard of every backbone configuration in STORE x each head.

    With --folds: mean accuracy, macro-F1, balanced accuracy and log-loss with 95% intervals over
    the folds, cost (extraction img/s, feature size, backbone parameters, fit time), and the
    winner's accuracy on the untouched test split.
    """
    from ..train.compare import compare

    result = compare(store, list(heads), out=out, backbones=list(backbones) or None, seed=seed, progress=not quiet,
                     folds=folds, repeats=repeats, shots=_parse_shots(shots), tta=tta)
    if as_json:
        emit_json(result.to_dict())
        return
    if folds is not None:
        _echo_cv(result)
    else:
        echo_table(result.rows(), ["key", "head", "val_accuracy", "val_loss", "test_accuracy", "fit_seconds",
                                   "images_per_s", "feature_dim"])
    for key, why in result.skipped.items():
        click.secho(f"skipped {key}: {why}", fg="yellow", err=True)
    if result.out:
        click.echo(f"written to {result.out}")


@command("heads")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def heads_cmd(as_json):
    """List the registered heads (plugins included) and their parameters."""
    from ..heads import HEADS

    rows = [{"head": cls.name, "parameter": p.name, "flag": flag(p.name), "type": p.type.__name__,
             "default": p.default, "allowed": p.range_text() or "-", "sweep": p.sweepable, "help": p.help}
            for cls in HEADS for p in cls.parameters]
    if as_json:
        emit_json(rows)
    else:
        echo_table(rows, ["head", "flag", "type", "default", "allowed", "sweep"])


COMMANDS = [fit_head_cmd, sweep_cmd, compare_cmd, heads_cmd]

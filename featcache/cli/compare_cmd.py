"""`featcache compare`."""

from __future__ import annotations

import click

from . import options as opt
from .common import command, echo_table, emit_json, worded_remedy


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
                      "fit_seconds", "views_per_s", "feature_dim", "backbone_params"])
    grouped = " (grouped: no group in two folds' test parts)" if result.grouped else ""
    click.echo(f"{result.folds}-fold CV{grouped} x {result.repeats} over {result.images} train+validation images; "
               "95% Nadeau-Bengio corrected t-intervals; vs_best: corrected paired t-test (n.s.: not significant)")
    if result.note:
        click.secho(result.note, fg="yellow", err=True)
    for e in result.entries if result.shots else []:
        click.echo(f"  {e.name}: " + "  ".join(f"{s}/class {i.mean:.3f}" for s, i in e.shots.items()))
    w = result.winner_test
    click.echo(f"winner: {result.entries[0].name}; test accuracy {w['accuracy']:.4f} (n={w['n']})" if w else
               f"winner: {result.entries[0].name} (no test images)")


@command("compare", uses_tensorflow=True)
@opt.store_argument
@click.option("--head", "heads", multiple=True, default=["logreg"], show_default=True,
              help="Head to fit on each backbone (repeatable).")
@opt.backbones_option("only these (default: every feature configuration in STORE); a name, NAME.BLOCK or a "
                  "feature key.")
@click.option("--folds", type=int, default=None,
              help="Cross-validate on K stratified folds of the train+validation images (capped at the smallest "
                   "class), with 95% intervals and paired tests. Default: one fit, ranked on validation.")
@click.option("--repeats", type=int, default=1, show_default=True, help="Repeat the K folds R times (with --folds).")
@click.option("--shots", default=None, metavar="LIST",
              help="Few-shot learning curves (with --folds): labelled images per class, e.g. 1,5,10,all.")
@opt.out_option("Write report.html, compare.csv, compare.json, the charts (and run folders without --folds) here.",
            default=None)
@opt.seed_option("the folds and the heads")
@click.option("--tta", is_flag=True, help="Score held-out images on the mean probabilities over their cached views "
                                          "(configurations extracted with --augment K).")
@opt.memory_limit_option
@opt.quiet_option
@opt.json_option
def compare_cmd(store, heads, backbones, folds, repeats, shots, out, seed, tta, memory_limit, quiet, as_json):
    """Leaderboard of every backbone configuration in STORE x each head.

    With --folds: mean accuracy, macro-F1, balanced accuracy and log-loss with 95% intervals over
    the folds, cost (backbone views/s as extracted, feature size, backbone parameters, fit time), and the
    winner's accuracy on the untouched test split.
    """
    from ..train.compare import compare

    result = compare(store, list(heads), out=out, backbones=list(backbones) or None, seed=seed, progress=not quiet,
                     folds=folds, repeats=repeats, shots=_parse_shots(shots), tta=tta, memory_limit=memory_limit)
    if as_json:
        emit_json(result.to_dict())
        return
    if folds is not None:
        _echo_cv(result)
    else:
        multilabel = any(e.val_map is not None for e in result.entries)
        echo_table(result.rows(), ["key", "head", *(("val_map", "test_map") if multilabel else ()), "val_accuracy",
                                   "val_loss", "test_accuracy", "fit_seconds", "views_per_s", "feature_dim"])
    for key, why in result.skipped.items():
        if (err := result.skip_errors.get(key)) is not None and err.remedy:  # its remedy as a command line
            why = f"{err.problem}; {worded_remedy(click.get_current_context().find_root().command, err.remedy)}"
        click.secho(f"skipped {key}: {why}", fg="yellow", err=True)
    if result.out:
        click.echo(f"written to {result.out}")


COMMANDS = [compare_cmd]

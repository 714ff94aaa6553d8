"""`featcache auto`."""

from __future__ import annotations

import click

from . import options as opt
from .common import command, command_line, echo_table, emit_json

METRICS = ["accuracy", "macro_f1", "balanced_accuracy", "log_loss"]


def _interval(i: dict) -> str:
    return f"{i['mean']:.4f} [{i['low']:.4f}, {i['high']:.4f}]"


def _echo(result, metric: str, top: int) -> None:
    record = result.to_dict()
    rows = [{"rank": r["rank"], "candidate": r["label"], metric: _interval(r["intervals"][metric]),
             "tied": "tied" if r["tied"] else "", "winner": "<-" if r["winner"] else "", "dims": r["feature_dim"],
             "seconds": r["seconds"]} for r in record["board"][:top]]
    echo_table(rows, ["rank", "candidate", metric, "tied", "winner", "dims", "seconds"])
    if len(record["board"]) > top:
        click.echo(f"... {len(record['board']) - top} more in leaderboard.csv")
    w = record["winner"]
    click.echo(f"{record['candidates']} candidates ({record['resumed']} resumed), {record['folds']}-fold CV over "
               f"{record['images']} train+validation images; stopped: {record['stopped']}")
    click.echo(f"winner: {w['label']}  CV {metric} {_interval(w['cv'])}; {w['tied']} candidate(s) tied with the best "
               f"({w['best_label']}: {w['best_cv']['mean']:.4f}), the cheapest wins"
               if result.options.prefer == "cheapest" else f"winner: {w['label']}  CV {metric} {_interval(w['cv'])}")
    if w["selection_adjusted"]:
        click.echo(f"  selection-adjusted CV {metric}: {_interval(w['selection_adjusted'])} (the whole search, "
                   "scored on folds its choice did not see)")
    if w["test"]:
        t = w["test"]
        click.echo(f"  test (read once, after the choice): accuracy {t['accuracy']:.4f}  macro-F1 {t['macro_f1']:.4f}"
                   f"  (n={t['n']})")
    else:
        click.echo("  no test images")
    if result.note:
        click.secho(result.note, fg="yellow", err=True)
    for key, why in result.skipped.items():
        click.secho(f"skipped {key}: {why}", fg="yellow", err=True)
    click.echo(f"reproduce: {w['command']}")
    if result.run_dir:
        click.echo(f"written to {result.run_dir} (leaderboard.json, leaderboard.csv)")


@command("auto", uses_tensorflow=True)
@opt.store_argument
@opt.out_option("Run folder of the winner, with leaderboard.json and leaderboard.csv; the same folder again "
                "resumes the search.", default=None)
@click.option("--budget", default="5m", show_default=True, metavar="TIME|N",
              help="Stop searching after this time (90s, 5m, 1h) or this many candidates (resumed ones count).")
@click.option("--metric", type=click.Choice(METRICS), default="accuracy", show_default=True,
              help="What the cross-validation ranks by.")
@click.option("--folds", type=int, default=5, show_default=True,
              help="Stratified folds of the train+validation images (grouped when STORE has groups).")
@click.option("--head", "heads", multiple=True,
              help="Only these heads (repeatable; default: logreg, linear, knn, mlp, each with a small grid).")
@opt.backbones_option("only these (default: every feature configuration in STORE).")
@click.option("--prefer", type=click.Choice(["cheapest", "best"]), default="cheapest", show_default=True,
              help="Among candidates tied with the best: the cheapest, or the best mean.")
@click.option("--concat-from", "top", type=int, default=3, show_default=True,
              help="Concatenations are drawn from this many best configurations (1: none).")
@click.option("--no-ensembles", is_flag=True, help="Do not try an ensemble of the chosen configurations.")
@click.option("--no-tta", is_flag=True, help="Do not try test-time augmentation where views are cached.")
@click.option("--no-refit", is_flag=True, help="Fit the winner on train only (validation as validation), not "
                                               "refitted on train + validation.")
@click.option("--calibrate", is_flag=True, help="Fit the winner's temperature on validation.")
@opt.seed_option("the folds and the heads")
@opt.memory_limit_option
@opt.quiet_option
@opt.json_option
def auto_cmd(store, out, budget, metric, folds, heads, backbones, prefer, top, no_ensembles, no_tta, no_refit,
             calibrate, seed, memory_limit, quiet, as_json):
    """Search STORE for the best probe and write its run folder.

    Each feature configuration alone with each head and a small grid of its main parameter, then
    greedy concatenations of the best few, an ensemble and TTA, all scored by K-fold
    cross-validation on train + validation only. Candidates not significantly worse than the best
    (corrected paired t-test) are tied, and the cheapest of them wins. Only then is the test split
    read, once, by the winner. Ctrl-C keeps the leaderboard; the same --out resumes.
    """
    from ..auto import AutoOptions, auto

    options = AutoOptions(budget=budget, metric=metric, folds=folds, seed=seed, heads=tuple(heads) or None,
                          backbones=tuple(backbones) or None, prefer=prefer, top=top, ensembles=not no_ensembles,
                          tta=not no_tta, refit=not no_refit, calibrate=calibrate, memory_limit=memory_limit,
                          progress=not quiet)
    root = click.get_current_context().find_root().command
    result = auto(store, out, options, word_step=lambda step: command_line(root, step))
    if as_json:
        emit_json(result.to_dict())
        return
    _echo(result, metric, top=15)


COMMANDS = [auto_cmd]

"""`featcache fit-head`."""

from __future__ import annotations

import click

from . import options as opt
from .common import command, emit_json
from .head_options import HeadParamsCommand, parse_head_values


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
@opt.store_argument
@opt.backbones_option(opt.KEY_NOTE + " Optional when STORE has one complete configuration.")
@opt.head_option
@opt.out_option("Run folder to write.", required=True)
@opt.seed_option("the head and of the validation holdout (when the store has no validation split)")
@click.option("--tensorboard-dir", type=click.Path(), default=None, help="Write TensorBoard logs here.")
@click.option("--checkpoint-every-epoch", is_flag=True,
              help="Keras heads: also keep weights.{epoch:02d}.weights.h5 for every epoch (Innolitics recipe).")
@opt.memory_limit_option
@_probe_options
@opt.quiet_option
@opt.json_option
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
        if m is not None and result.multilabel:
            click.echo(f"  {name:<10} mAP {m.mean_ap:.4f} (micro {m.micro_ap:.4f})  F1-macro {m.f1_macro:.4f}  "
                       f"subset accuracy {m.subset_accuracy:.4f}  (n={m.n})")
        elif m is not None:
            click.echo(f"  {name:<10} accuracy {m.accuracy:.4f}  macro-F1 {m.macro_f1:.4f}  ECE {m.ece:.4f}  (n={m.n})")
    if not result.multilabel:
        click.echo("  (ECE: expected calibration error, the gap between confidence and accuracy: 0 is calibrated)")
    if result.multilabel:
        shown = ", ".join(f"{c} {t:.3f}" for c, t in list(zip(result.classes, result.thresholds, strict=True))[:8])
        more = f", ... ({len(result.classes)} classes)" if len(result.classes) > 8 else ""
        click.echo(f"  thresholds (best F1 per class on validation): {shown}{more}")
    if result.temperature != 1.0:
        click.echo(f"  temperature {result.temperature:.3f} (fitted on validation)")
    if result.refit:
        click.echo(f"  refit on {result.refit['images']} train + validation images with {result.refit['params']}; "
                   "validation scores are those of the head before the refit")
    extra = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in result.summary.items()
                      if k in ("epochs_trained", "best_epoch", "C") and v is not None)
    streamed = " (streamed from the store)" if result.memory and result.memory.streamed else ""
    click.echo(f"  fit {result.fit_seconds:.2f} s{f' ({extra})' if extra else ''}{streamed} -> {result.run_dir}")


COMMANDS = [fit_head_cmd]

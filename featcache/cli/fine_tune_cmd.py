"""`featcache fine-tune`."""

from __future__ import annotations

import click

from ..heads.keras_heads import OPTIMIZERS
from .common import command, emit_json
from .options import batch_size_option, json_option, out_option, quiet_option, seed_option, workers_option


@command("fine-tune", uses_tensorflow=True)
@click.argument("run", type=click.Path())
@click.option("--data", type=click.Path(), default=None,
              help="The image folder the store was extracted from (default: the one the store records).")
@click.option("--unfreeze", default="1", show_default=True, metavar="N|all",
              help="How many blocks of the backbone train, from the top, or 'all'. BatchNorm never trains.")
@click.option("--epochs", type=int, default=10, show_default=True, help="Maximum epochs.")
@click.option("--lr", type=float, default=1e-5, show_default=True, help="Learning rate.")
@click.option("--optimizer", type=click.Choice(list(OPTIMIZERS)), default="adam", show_default=True)
@click.option("--momentum", type=float, default=0.9, show_default=True, help="SGD momentum.")
@batch_size_option(32, "training step")
@click.option("--patience", type=int, default=3, show_default=True,
              help="Early stopping: epochs without a better validation score before stopping.")
@seed_option("the batch order and dropout")
@workers_option
@out_option("Run folder to write.", required=True)
@quiet_option
@json_option
def fine_tune_cmd(run, data, unfreeze, epochs, lr, optimizer, momentum, batch_size, patience, seed, workers, out,
                  quiet, as_json):
    """Fine-tune RUN (a fit-head run folder): its head and the top blocks of its backbone train end
    to end on the store's images, augmented on the fly with the store's augmentation, early-stopped
    on validation.

    The run folder written works with `featcache predict` and `export` like any other; its backbone
    (backbone.weights.h5) computes features with `featcache extract DATA_DIR --store STORE --weights OUT`.
    """
    from ..finetune import FineTuneOptions, fine_tune

    options = FineTuneOptions(unfreeze=unfreeze, epochs=epochs, lr=lr, optimizer=optimizer, momentum=momentum,
                              batch_size=batch_size, patience=patience, seed=seed, workers=workers,
                              progress=not quiet)
    result = fine_tune(run, out, data, options)
    if as_json:
        emit_json(result.to_dict())
        return
    n, u = result.n, result.unfrozen
    shown = ", ".join(u.blocks) if len(u.blocks) <= 3 else f"{u.blocks[0]} ... {u.blocks[-1]}"
    click.echo(f"{result.backbone}: top {len(u.blocks)} of {u.of_blocks} backbone blocks unfrozen ({shown}; "
               f"{u.trainable_weights:,} weights), trained with the head on {n['train']} train images, "
               f"{n['validation']} validation ({result.validation_source}), {n['test']} test")
    for split in ("validation", "test"):
        if split in result.after:
            b, a = result.before[split], result.after[split]
            click.echo(f"  {split:<10} accuracy {b.accuracy:.4f} -> {a.accuracy:.4f}  "
                       f"log-loss {b.log_loss:.4f} -> {a.log_loss:.4f}  (n={a.n})")
    kept = "the starting weights kept" if result.best_epoch == 0 else f"best epoch {result.best_epoch}"
    epochs = f"{result.epochs_trained} epoch{'' if result.epochs_trained == 1 else 's'}"
    click.echo(f"  {epochs} in {result.fit_seconds:.1f} s, {kept} -> {result.run_dir}")


COMMANDS = [fine_tune_cmd]

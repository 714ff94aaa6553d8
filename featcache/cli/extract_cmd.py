"""`featcache extract`."""

from __future__ import annotations

import sys

import click

from ..backbones.spec import POOLINGS
from ..config import DTYPES
from .common import command, emit_json
from .options import (
    alias,
    aliases,
    backbones_option,
    json_option,
    label_options,
    quiet_option,
    seed_option,
    workers_option,
)


@command("extract", uses_tensorflow=True,
         flag_aliases={"augmented_views": "augment", "width_shift": "shift", "height_shift": "shift",
                       "shard": "executor", "plan_only": "executor"})
@click.argument("data_dir", type=click.Path())
@click.option("--store", "-s", required=True, type=click.Path(),
              help="Feature store path; its suffix picks the format: .zarr (default) or .h5/.hdf5.")
@backbones_option("repeat to run several.", default=["efficientnet_lite0"], show_default=True)
@click.option("--taps", default="", metavar="BLOCK[,BLOCK...]",
              help="Also extract the pooled output of these blocks of every backbone, each as its own "
                   "configuration (-b NAME.BLOCK in fit-head); `featcache backbones --blocks NAME` lists them.")
@click.option("--augment", "augment", default=0, show_default=True, type=int,
              help="K augmented views per image, on top of the un-augmented view 0.")
@click.option("--split", default=None, help="train/validation/test fractions, e.g. 70/20/10 (default; "
              "ignored for pre-split folders).")
@click.option("--resplit", is_flag=True, help="Allow a --split other than the store's (images move between "
              "train, validation and test; runs trained on the old split no longer match it).")
@seed_option("the augmentation")
@click.option("--image-size", type=int, default=None, help="Input size (default: the backbone's).")
@click.option("--pooling", type=click.Choice(POOLINGS), default="avg", show_default=True)
@click.option("--weights", default="imagenet", show_default=True,
              help="imagenet, random (tests only), or a local weights file.")
@click.option("--batch-size", default="32", show_default=True, metavar="N|auto",
              help="Images per forward pass; auto: the largest that fits the GPU (32 on a CPU). Recorded: "
                   "a resume keeps it.")
@click.option("--dtype", type=click.Choice(DTYPES), default="float16", show_default=True)
@workers_option
@click.option("--rotation", type=float, default=15.0, show_default=True, help="Augmentation: max rotation, degrees.")
@click.option("--shift", type=float, default=0.15, show_default=True, help="Augmentation: max width/height shift.")
@click.option("--shear", type=float, default=0.15, show_default=True, help="Augmentation: max shear, degrees.")
@click.option("--zoom", type=float, default=0.15, show_default=True, help="Augmentation: max zoom in/out (< 1).")
@click.option("--channel-shift", type=float, default=1.0, show_default=True, help="Augmentation: max channel shift.")
@click.option("--hflip/--no-hflip", default=True, show_default=True, help="Augmentation: random horizontal flip.")
@click.option("--vflip/--no-vflip", default=False, show_default=True, help="Augmentation: random vertical flip.")
@click.option("--strict", is_flag=True, help="Stop at the first unreadable image instead of skipping it.")
@click.option("--precision", default="float32", show_default=True, metavar="float32|mixed|mixed_float16|mixed_bfloat16",
              help="The backbone's arithmetic; mixed means mixed_float16 on every device (bfloat16 only when named: "
                   "it is further from float32). Features "
                   "are pooled in float32 either way. Another precision is another configuration.")
@click.option("--jit/--no-jit", default=False, show_default=True, help="Compile the forward pass with XLA.")
@click.option("--jpeg-draft", is_flag=True, help="Decode JPEGs at least twice the input size at reduced scale "
              "(faster; slightly other pixels, so another configuration).")
@click.option("--device", default=None, metavar="cpu|gpu|gpu:N", help="Where the backbone runs [default: the first "
              "GPU if there is one].")
@click.option("--executor", default=None, metavar="process|local:N|tcp://HOST:PORT|plan-only|shard:I/N",
              help="Who computes: process (this one, the default); local:N (a Dask cluster of N worker processes "
                   "here) or tcp://HOST:PORT (a running Dask scheduler), both needing a .zarr store every worker "
                   "can reach; plan-only (scan and plan the rows, compute none); shard:I/N (the units I modulo N "
                   "of a plan-only store, beside the other shards; a run without shard: finishes).")
@aliases(alias("--dask", "executor"), alias("--plan-only", "executor", flag=True, convert=lambda _: "plan-only"),
         alias("--shard", "executor", convert=lambda v: f"shard:{v}",
               conflict="a shard computes in its own process, on a store already planned: give it alone"))
@label_options
@quiet_option
@json_option
def extract_cmd(data_dir, store, backbones, taps, augment, split, resplit, seed, image_size, pooling, weights, batch_size, dtype,
                workers, rotation, shift, shear, zoom, channel_shift, hflip, vflip, strict, precision, jit, jpeg_draft,
                device, executor, labels, path_column, label_column, label_delimiter, label_columns, split_column,
                group_column, group_by, quiet, as_json):
    """Run each backbone once over DATA_DIR and cache the features in STORE.

    DATA_DIR holds one folder per class, or train/validation/test folders each holding one folder
    per class, or the images a --labels table lists. Re-running resumes: only images not yet in the store are extracted.

    DATA_DIR may be a URL (s3://bucket/prefix/, gs://, az://: fsspec and its package, e.g. s3fs), read
    with the file system's standard credentials (environment, profiles, roles), which are never recorded.
    """
    from ..extraction import ExtractOptions, extract
    from ..ingest.augment import AugmentParams
    from ..ingest.label_file import LabelSource

    params = AugmentParams(augmented_views=augment, rotation=rotation, width_shift=shift, height_shift=shift,
                           shear=shear, zoom=zoom, channel_shift=channel_shift, horizontal_flip=hflip,
                           vertical_flip=vflip, seed=seed)
    options = ExtractOptions(backbones=tuple(backbones), augment=params, split=split, resplit=resplit,
                             image_size=image_size,
                             pooling=pooling, weights=weights, dtype=dtype, workers=workers, strict=strict,
                             batch_size=batch_size if batch_size == "auto" else _int(batch_size, "--batch-size"),
                             precision=precision, jit=jit, jpeg_draft=jpeg_draft, device=device, progress=not quiet,
                             taps=taps, group_by=group_by,
                             labels=LabelSource(labels, path_column, label_column, split_column, group_column,
                                                label_delimiter, label_columns)
                             if labels else None)
    result = extract(data_dir, store, options, executor=executor)
    if as_json:
        emit_json({"store": result.store, "images": result.images, "classes": result.classes,
                   "configs": [{"key": c.key, "backbone": c.backbone, "extracted": c.extracted, "reused": c.reused,
                                "failed": c.failed, "repaired": c.repaired, "pending": c.pending, "views": c.views,
                                "batch_size": c.batch_size, "seconds": round(c.seconds, 3),
                                "images_per_s": c.images_per_s, "views_per_s": c.views_per_s}
                               for c in result.configs],
                   "skipped": [{"path": s.path, "reason": s.reason} for s in result.skipped],
                   "empty_classes": result.empty_classes,
                   "added_beside": [{"key": new, "beside": old, "differences": d}
                                    for new, old, d in result.added_beside]})
    else:
        _echo_summary(result)
    if not result.complete:
        sys.exit(1)  # finished, but some files could not be read: they are named above


def _int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise click.BadParameter(f"expected a whole number or auto, got {text!r}", param_hint=flag) from None


def _echo_summary(result) -> None:
    n = len(result.classes)
    click.echo(f"{result.images} images in {n} {'class' if n == 1 else 'classes'} -> {result.store}")
    if n == 1:
        click.secho("  note: one class: neighbors works on it; fit-head, compare and audit need at least two",
                    fg="yellow", err=True)
    for new, old, differences in result.added_beside:
        click.secho(f"  note: {new} is a new configuration beside {old} ({'; '.join(differences)}); "
                    "name either by its key from now on, or remove one with `featcache rm`", fg="yellow", err=True)
    for c in result.configs:
        views = f"; {c.views} views each: {c.views_per_s:.1f} views/s" if c.views > 1 and c.images_per_s else ""
        rate = f" in {c.seconds:.1f} s ({c.images_per_s:.1f} images/s{views})" if c.images_per_s else ""
        repaired = f" (of which {c.repaired} damaged rows recomputed)" if c.repaired else ""
        pending = f", {c.pending} to compute" if c.pending else ""
        click.echo(f"  {c.key}: {c.extracted} extracted{repaired}, {c.reused} reused, {c.failed} failed{pending}{rate}")
    for s in result.skipped:
        click.secho(f"  skipped {s.path}: {s.reason}", fg="yellow", err=True)
    if result.empty_classes:
        click.secho(f"  class folders without a usable image (not classes): {', '.join(result.empty_classes)}",
                    fg="yellow", err=True)


COMMANDS = [extract_cmd]

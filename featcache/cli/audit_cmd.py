"""`featcache audit`."""

from __future__ import annotations

import click

from .common import command, echo_table, emit_json
from .options import (
    alias,
    backbone_option,
    json_option,
    k_option,
    out_option,
    quiet_option,
    seed_option,
    store_argument,
)


@command("audit", flag_aliases={"image_root": "data", "map": "map_method"})
@store_argument
@backbone_option("a name, NAME.BLOCK for a tap, or a feature key of STORE (a unique start of it); optional when "
                 "STORE has one complete configuration.")
@out_option("Write label_issues.png, duplicates.png, outliers.png (contact sheets), map.png, flagged.csv and "
            "audit.json here.", default=None)
@click.option("--folds", type=int, default=5, show_default=True,
              help="Cross-validation folds of the out-of-fold predictions.")
@click.option("--c", "C", type=float, default=1.0, show_default=True,
              help="Inverse regularization (C) of the cross-validated logistic regression.")
@alias("--C", "C", type=float)
@click.option("--score", type=click.Choice(["self-confidence", "margin"]), default="self-confidence",
              show_default=True, help="Rank label errors by p(given label), or by p(given) - max p(other).")
@k_option("outliers score their mean distance to this many", 10)
@click.option("--outlier-z", type=float, default=3.5, show_default=True,
              help="Flag outliers whose neighbour distance has at least this robust z-score.")
@click.option("--duplicate-k", type=int, default=50, show_default=True,
              help="Near duplicates: look for each image's copies among this many nearest neighbours.")
@click.option("--duplicate-similarity", type=float, default=0.75, show_default=True,
              help="Near duplicates: least feature cosine similarity of a candidate pair.")
@click.option("--pixel-tolerance", type=float, default=2.5, show_default=True,
              help="Near duplicates: most RMS difference of a pair's 16x16 thumbnails (grey levels 0-255).")
@click.option("--map", "map_method", type=click.Choice(["pca", "tsne"]), default="pca", show_default=True,
              help="2-D map of the features in map.png.")
@click.option("--sheet-size", type=int, default=48, show_default=True, help="Thumbnails per contact sheet.")
@click.option("--data", type=click.Path(), default=None,
              help="The images' folder, if not where the store recorded it (to check duplicates and draw sheets).")
@click.option("--group-by", default=None, metavar="REGEX", help="Check that no group (patient, site, camera) "
              "straddles splits, by this expression on the image paths (its first capture group, or the whole "
              "match) [default: the store's own groups, if it has any].")
@seed_option("the folds, the logistic regression and the map")
@click.option("--show", type=click.IntRange(0), default=10, show_default=True,
              help="Findings of each kind to print (0: all); --out and --json hold every one.")
@alias("--top", "show", type=click.IntRange(0))
@quiet_option
@json_option
def audit_cmd(store, backbone, out, folds, C, score, k, outlier_z, duplicate_k, duplicate_similarity,
              pixel_tolerance, map_method, sheet_size, data, group_by, seed, show, quiet, as_json):
    """Find likely label errors, duplicates and outliers among STORE's images from their cached features.

    \b
    label errors  out-of-fold probabilities of a K-fold logistic regression; flagged when the
                  predicted class is not the folder's; SUGGESTED is the likeliest other class
    duplicates    identical files, and near-identical ones (close features, confirmed on pixels);
                  LEAK when a group spans train/validation/test, LABELS when its classes differ
    outliers      far from their k nearest neighbours: blank, corrupt or off-topic images
    group leaks   (stores with groups) a patient, site or camera with images in several splits
    """
    from ..audit import AuditOptions, audit
    from ..ingest.splits import SPLITS

    options = AuditOptions(folds=folds, C=C, score=score.replace("-", "_"), k=k, outlier_z=outlier_z,
                           duplicate_k=duplicate_k, duplicate_similarity=duplicate_similarity,
                           pixel_tolerance=pixel_tolerance, map=map_method, sheet_size=sheet_size, image_root=data,
                           group_by=group_by, seed=seed)
    result = audit(store, backbone, options, out=out, progress=not quiet)
    if as_json:
        emit_json(result.to_dict())
        return
    shown = slice(None if show == 0 else show)
    click.echo(f"{result.key}: {result.n_images} images, {len(result.classes)} classes; out-of-fold accuracy "
               f"{result.out_of_fold_accuracy:.3f} ({folds}-fold logistic regression)")
    click.echo(f"\nlikely label errors: {len(result.label_issues)}")
    echo_table([{"rank": r, "path": x.image.path, "split": x.image.split, "given": x.image.label,
                 "suggested": x.suggested, "p(given)": x.given_probability, "p(suggested)": x.suggested_probability}
                for r, x in enumerate(result.label_issues[shown], 1)])
    leaks = sum(g.leak for g in result.duplicates)
    conflicts = sum(g.label_conflict for g in result.duplicates)
    click.echo(f"\nduplicate groups: {len(result.duplicates)} ({leaks} across splits, {conflicts} with different "
               "labels)")
    echo_table([{"group": r, "kind": g.kind, "path": im.path, "split": im.split, "label": im.label,
                 "similarity": g.similarity, "leak": "yes" if g.leak else "", "labels differ": "yes" if g.label_conflict else ""}
                for r, g in enumerate(result.duplicates[shown], 1) for im in g.images])
    if result.unverified_pairs:
        click.secho(f"{result.unverified_pairs} near-duplicate candidate pairs could not be checked: their files are "
                    "not readable (pass --data if the images moved)", fg="yellow", err=True)
    click.echo(f"\noutliers: {len(result.outliers)}")
    echo_table([{"rank": r, "path": x.image.path, "split": x.image.split, "label": x.image.label,
                 "distance": x.score, "z": x.z} for r, x in enumerate(result.outliers[shown], 1)])
    if result.group_leaks:
        click.echo(f"\ngroups in several splits: {len(result.group_leaks)} (their test images are not independent "
                   "of their training images)")
        echo_table([{"group": g.group, "images": len(g.images), **{s: g.splits.get(s, 0) for s in SPLITS}}
                    for g in result.group_leaks[shown]])
    if result.files:
        click.echo(f"\nwritten to {out}: {', '.join(sorted(p.rsplit('/', 1)[-1] for p in result.files.values()))}")


COMMANDS = [audit_cmd]

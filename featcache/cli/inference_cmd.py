"""`featcache export` and `featcache predict`."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import click

from ..serve.calibration import DEFAULT_SIZE, CalibrationOptions
from .common import command, emit_json


@command("export", uses_tensorflow=True, flag_aliases={"format": "fmt"})
@click.argument("run_dir", type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(),
              help="Model to write: a .keras or .tflite file, or a SavedModel folder.")
@click.option("--format", "fmt", default=None, metavar="keras|savedmodel|tflite",
              help="Model format  [default: tflite for an --out ending in .tflite, else keras]")
@click.option("--quantize", default="none", show_default=True, metavar="none|float16|int8",
              help="TFLite only: float16 weights, or full-integer int8 calibrated on training images.")
@click.option("--calibration-images", multiple=True, type=click.Path(),
              help="int8: calibrate on these image files or folders instead of the store's training images.")
@click.option("--calibration-size", type=click.IntRange(1), default=None,
              help=f"int8: how many calibration images (a seeded sample)  [default: {DEFAULT_SIZE}]")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def export_cmd(run_dir, out, fmt, quantize, calibration_images, calibration_size, as_json):
    """Write one model (raw RGB image -> class probabilities) from a fit-head run folder.

    \b
    keras       a .keras file of Keras' own layers: keras.saving.load_model, no featcache needed
    savedmodel  a SavedModel folder for TF Serving: uint8 images or encoded image bytes in
    tflite      a .tflite file for phones (LiteRT): float32, float16, or int8 (--quantize)

    The backbone's preprocessing is in the graph; class names are stored inside the model where
    the format allows and in OUT's sidecar .labels.json. `featcache predict OUT ...` checks it.
    """
    from ..serve.export import export_model

    calibration = None
    if calibration_images or calibration_size is not None:
        calibration = CalibrationOptions(tuple(calibration_images), calibration_size or DEFAULT_SIZE)
    result = export_model(run_dir, out, fmt, quantize, calibration)
    if as_json:
        emit_json(result.to_dict())
        return
    kind = result.format + ("" if result.quantize == "none" else f" {result.quantize}")
    click.echo(f"exported {kind} model {result.path} ({result.size_bytes / 2**20:.1f} MiB) + {result.sidecar.name}")
    if result.calibration:
        c = result.calibration
        click.echo(f"int8 calibrated on {c['images']} images from {c['source']}; on them its top class is the "
                   f"float model's for {c['top1_agreement_with_float']:.1%}")
        if c["top1_agreement_with_float"] < 0.95:
            click.secho("warning: the int8 model often disagrees with the float one; a logreg head quantizes "
                        "worst (its standardization is folded into the weights): try an mlp or linear head, "
                        "or --quantize float16", fg="yellow", err=True)


@command("predict", uses_tensorflow=True)
@click.argument("model", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(0),
              help="Classes to show per image; 0 shows every class.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--json", "fmt", flag_value="json", help="Print JSON records.")
@click.option("--csv", "fmt", flag_value="csv", help="Print CSV rows.")
@click.option("--folder-labels", is_flag=True,
              help="Take each file's parent folder name as its true class and report the accuracy.")
@click.option("--tta", is_flag=True, help="Test-time augmentation (a run folder): average the probabilities of the "
                                          "augmented views its features were extracted with.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def predict_cmd(model, inputs, top_k, batch_size, fmt, folder_labels, tta, quiet):
    """Classify image files or folders with MODEL: a fit-head run folder, or a model from export
    (a .keras file, a SavedModel folder or a .tflite file).

    Exit code 1 when any file could not be read or predicted (the others are still predicted).
    """
    from ..serve.predict import load_classifier, score_folder_labels

    clf = load_classifier(model)
    preds = clf.predict(inputs, batch_size=batch_size, progress=not quiet, tta=tta)
    classes = clf.classes
    records = []
    for p in preds:
        rec = {"path": p.path, "label": p.label, "confidence": p.confidence, "error": p.error,
               "top": [{"class": c, "probability": v} for c, v in p.top(classes, top_k)] if not p.error else []}
        if folder_labels:
            rec["true"] = Path(p.path).parent.name
        records.append(rec)
    if fmt == "json":
        emit_json(records)
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        k = top_k or len(classes)
        writer.writerow(["path", "label", "confidence", "error"]
                        + [f"{name}{i}" for i in range(1, k + 1) for name in ("class", "prob")])
        for r in records:
            writer.writerow([r["path"], r["label"] or "", r["confidence"] or "", r["error"] or ""]
                            + [v for t in r["top"] for v in (t["class"], f"{t['probability']:.6f}")])
    else:
        for r in records:
            if r["error"]:
                click.secho(f"{r['path']}: ERROR {r['error']}", fg="red", err=True)
                continue
            tops = "  ".join(f"{t['class']} {t['probability']:.1%}" for t in r["top"])
            click.echo(f"{r['path']}  {tops}")
    if folder_labels:
        score = score_folder_labels(preds, classes)
        if score.unknown_folders:
            click.secho(f"note: folders not among the classes: {', '.join(score.unknown_folders)}", err=True)
        click.echo(f"accuracy {score.correct}/{score.scored} = {score.accuracy:.4f}", err=fmt is not None)
    failed = [r for r in records if r["error"]]
    if failed:
        click.secho(f"{len(failed)} of {len(records)} files could not be read or predicted (errors above)",
                    fg="red", err=True)
        sys.exit(1)


COMMANDS = [export_cmd, predict_cmd]

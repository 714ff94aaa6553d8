"""`featcache predict`."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import click

from .common import command, emit_json
from .options import JSON_HELP, batch_size_option, quiet_option, top_k_option


@command("predict", uses_tensorflow=True)
@click.argument("model", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@top_k_option(3, "; 0 shows every class")
@batch_size_option(32, type=click.IntRange(1))
@click.option("--json", "fmt", flag_value="json", help=JSON_HELP)
@click.option("--csv", "fmt", flag_value="csv", help="Print CSV rows.")
@click.option("--folder-labels", is_flag=True,
              help="Take each file's parent folder name as its true class and report the accuracy.")
@click.option("--tta", is_flag=True, help="Test-time augmentation (a run folder): average the probabilities of the "
                                          "augmented views its features were extracted with.")
@quiet_option
def predict_cmd(model, inputs, top_k, batch_size, fmt, folder_labels, tta, quiet):
    """Classify image files or folders with MODEL: a fit-head run folder, or a model from export
    (a .keras file, a SavedModel folder or a .tflite file).

    A multi-label MODEL (several labels per image) gives each class's probability and the
    predicted label set (the classes at or above the thresholds chosen on validation).

    Exit code 1 when any file could not be read or predicted (the others are still predicted).
    """
    from ..serve.predict import load_classifier, score_folder_labels

    clf = load_classifier(model)
    preds = clf.predict(inputs, batch_size=batch_size, progress=not quiet, tta=tta)
    classes = clf.classes
    if clf.multilabel:
        _emit_multilabel(preds, classes, fmt)
        _exit_on_errors([p.error for p in preds])
        return
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
            wrong = folder_labels and r["true"] in classes and r["label"] != r["true"]
            click.echo(f"{r['path']}  {tops}" + (f"  WRONG (folder: {r['true']})" if wrong else ""))
    if folder_labels:
        score = score_folder_labels(preds, classes)
        if score.unknown_folders:
            click.secho(f"note: folders not among the classes: {', '.join(score.unknown_folders)}", err=True)
        click.echo(f"accuracy {score.correct}/{score.scored} = {score.accuracy:.4f}", err=fmt is not None)
    _exit_on_errors([r["error"] for r in records])


def _exit_on_errors(errors: list) -> None:
    failed = [e for e in errors if e]
    if failed:
        click.secho(f"{len(failed)} of {len(errors)} files could not be read or predicted (errors above)",
                    fg="red", err=True)
        sys.exit(1)


def _emit_multilabel(preds, classes: list[str], fmt) -> None:
    """Per image: its predicted label set and every class's probability."""
    records = [{"path": p.path, "labels": p.labels if not p.error else None, "error": p.error,
                "probabilities": dict(zip(classes, p.probabilities, strict=True)) if not p.error else {}}
               for p in preds]
    if fmt == "json":
        emit_json(records)
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["path", "labels", "error", *classes])
        for r in records:
            writer.writerow([r["path"], "|".join(r["labels"] or []), r["error"] or "",
                             *(f"{r['probabilities'][c]:.6f}" if r["probabilities"] else "" for c in classes)])
    else:
        for r in records:
            if r["error"]:
                click.secho(f"{r['path']}: ERROR {r['error']}", fg="red", err=True)
                continue
            probs = "  ".join(f"{c} {v:.1%}" for c, v in sorted(r["probabilities"].items(), key=lambda kv: -kv[1]))
            click.echo(f"{r['path']}  [{'|'.join(r['labels']) or 'no label'}]  {probs}")


COMMANDS = [predict_cmd]

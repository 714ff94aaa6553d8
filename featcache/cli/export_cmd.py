"""`featcache export`."""

from __future__ import annotations

import click

from ..serve.calibration import DEFAULT_SIZE, CalibrationOptions
from .common import command, emit_json
from .options import json_option, out_option, quiet_option


@command("export", uses_tensorflow=True, flag_aliases={"format": "fmt"})
@click.argument("run_dir", type=click.Path())
@out_option("Model to write: a .keras or .tflite file, or a SavedModel folder.", required=True)
@click.option("--format", "fmt", default=None, metavar="keras|savedmodel|tflite",
              help="Model format  [default: tflite for an --out ending in .tflite, else keras]")
@click.option("--quantize", default="none", show_default=True, metavar="none|float16|int8",
              help="TFLite only: float16 weights, or full-integer int8 calibrated on training images.")
@click.option("--calibration-images", multiple=True, type=click.Path(),
              help="int8: calibrate on these image files or folders instead of the store's training images.")
@click.option("--calibration-size", type=click.IntRange(1), default=None,
              help=f"int8: how many calibration images (a seeded sample)  [default: {DEFAULT_SIZE}]")
@quiet_option
@json_option
def export_cmd(run_dir, out, fmt, quantize, calibration_images, calibration_size, quiet, as_json):
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
    if not (quiet or as_json):  # an int8 export calibrates for tens of seconds: say what is going on
        click.echo(f"exporting {run_dir} -> {out}" + (" (int8: calibrating first)" if quantize == "int8" else ""),
                   err=True)
    result = export_model(run_dir, out, fmt, quantize, calibration, progress=not (quiet or as_json))
    if as_json:
        emit_json(result.to_dict())
        return
    kind = result.format + ("" if result.quantize == "none" else f" {result.quantize}")
    click.echo(f"exported {kind} model {result.path} ({result.size_bytes / 2**20:.1f} MiB) + {result.sidecar.name}")
    if result.calibration:
        c = result.calibration
        click.echo(f"int8 calibrated on {c['images']} images from {c['source']}; on them its top class is the "
                   f"float model's for {c['top1_agreement_with_float']:.1%}")
        if c["top1_agreement_with_float"] < 0.95 and not quiet:
            click.secho("warning: the int8 model often disagrees with the float one; a logreg head quantizes "
                        "worst (its standardization is folded into the weights): try an mlp or linear head, "
                        "or --quantize float16", fg="yellow", err=True)


COMMANDS = [export_cmd]

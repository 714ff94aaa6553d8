"""What every command shares: error handling, JSON output, option types."""

from __future__ import annotations

import json
import os
import sys

import click

from ..errors import FeatcacheError

# Commands that run a backbone or a Keras head, and so import TensorFlow.
USES_TENSORFLOW = {"extract", "classify", "fit-head", "sweep", "compare", "export", "predict"}


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up lines (oneDNN notice, absl pre-init warning, CUDA
    probing on machines without a GPU) hidden.

    Those lines are written to file descriptor 2 before TF_CPP_MIN_LOG_LEVEL is honoured, so the
    only way to keep them off a user's terminal is to point fd 2 elsewhere during the import.
    Python-level errors still surface: they are raised after stderr is restored.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow

            tensorflow.config.list_physical_devices()  # device probing logs too (cuInit without a GPU)
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class FeatcacheGroup(click.Group):
    """Turns library errors into one clear line on stderr and a meaningful exit code."""

    def resolve_command(self, ctx, args):
        name, command, rest = super().resolve_command(ctx, args)
        if name in USES_TENSORFLOW and not any(a in ("-h", "--help") for a in rest):
            import_tensorflow_quietly()
        return name, command, rest

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FeatcacheError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.secho("interrupted: everything finished so far is saved; re-run the same command to resume",
                        fg="yellow", err=True)
            ctx.exit(130)


def emit_json(obj) -> None:
    """Machine-readable output on stdout (progress and messages go to stderr)."""
    json.dump(obj, sys.stdout, indent=2, default=_default)
    sys.stdout.write("\n")


def _default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def csv_floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


def echo_table(rows: list[dict], columns: list[str] | None = None) -> None:
    """A plain aligned text table on stdout."""
    if not rows:
        return
    columns = columns or list(rows[0])
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)

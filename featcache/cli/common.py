"""What every command shares: error handling, JSON output, option types."""

from __future__ import annotations

import json
import os
import sys

import click

from ..errors import FeatcacheError, ParameterError


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


class FeatcacheCommand(click.Command):
    """A command that says whether it needs TensorFlow, and words the library's parameter errors
    with its own flags: ParameterError("batch_size", ...) becomes "--batch-size: ..."."""

    def __init__(self, *args, uses_tensorflow: bool = False, flag_aliases: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.uses_tensorflow = uses_tensorflow
        self.flag_aliases = dict(flag_aliases or {})  # library parameter -> click parameter name

    def flag_for(self, ctx, param: str) -> str | None:
        wanted = self.flag_aliases.get(param, param)
        for p in self.get_params(ctx):
            if p.name == wanted:
                longs = [o for o in p.opts if o.startswith("--")]
                return (longs or p.opts)[0] if isinstance(p, click.Option) else p.human_readable_name
        return None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ParameterError as exc:
            flag = self.flag_for(ctx, exc.param)
            raise FeatcacheError(f"{flag}: {exc.message}" if flag else str(exc)) from exc


def command(name: str, **kwargs):
    """click.command for featcache's commands (see FeatcacheCommand)."""
    kwargs.setdefault("cls", FeatcacheCommand)
    return click.command(name, **kwargs)


class FeatcacheGroup(click.Group):
    """Turns library errors into one clear line on stderr and a meaningful exit code."""

    def resolve_command(self, ctx, args):
        name, command, rest = super().resolve_command(ctx, args)
        if getattr(command, "uses_tensorflow", False) and not any(a in ("-h", "--help") for a in rest):
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

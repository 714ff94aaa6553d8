"""What every command shares: error handling, JSON output, option types."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import re
import shlex
import sys
import traceback

import click

from ..errors import FeatcacheError, ParameterError, Remedy, Step, describe_error
from ..quiet import stderr_silenced

INTERNAL_ERROR = 70  # sysexits' EX_SOFTWARE: a featcache bug, never mistaken for 1 (some inputs failed) or 2


def _probe_devices() -> None:
    if "tensorflow" in sys.modules:
        sys.modules["tensorflow"].config.list_physical_devices()  # device probing logs too (cuInit)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow now, its C++ start-up lines hidden."""
    if "tensorflow" in sys.modules:
        return
    with stderr_silenced():
        import tensorflow  # noqa: F401

        _probe_devices()


class _QuietLoader(importlib.abc.Loader):
    """The real loader of ``keras`` or ``tensorflow``, run with stderr silenced (and the devices
    probed): a first import of Keras imports TensorFlow inside it, so both are quiet."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        try:
            with stderr_silenced():
                self.loader.exec_module(module)
                _probe_devices()
        finally:  # the module keeps its own loader (resources, reloads)
            module.__loader__ = self.loader
            if module.__spec__ is not None:
                module.__spec__.loader = self.loader


class QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Makes the FIRST import of ``keras`` or ``tensorflow``, wherever it happens, a quiet one, then
    steps aside. A command that may need TensorFlow installs it instead of importing TensorFlow up
    front, so one that turns out not to (fit-head --head logreg or knn, sweep, compare and audit
    of scikit-learn heads) never pays its start-up (seconds). The import may then happen on a
    thread while another writes to stderr: its lines in that window are lost, as before."""

    NAMES = ("keras", "tensorflow")

    def find_spec(self, name, path=None, target=None):
        if name not in self.NAMES:
            return None
        uninstall_quiet_tensorflow()  # once: every later import is Keras' and TensorFlow's own
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None  # not installed (or not a plain file): the normal import says so
        spec.loader = _QuietLoader(spec.loader)
        return spec


def install_quiet_tensorflow() -> None:
    """Quiet TensorFlow's start-up lines if and when this process first imports it."""
    if "tensorflow" not in sys.modules and not any(isinstance(f, QuietTensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, QuietTensorFlowFinder())


def uninstall_quiet_tensorflow() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, QuietTensorFlowFinder)]


class FeatcacheCommand(click.Command):
    """A command that says whether it needs TensorFlow, and words the library's parameter errors
    with its own flags: ParameterError("batch_size", ...) becomes "--batch-size: ..."."""

    def __init__(self, *args, uses_tensorflow: bool = False, flag_aliases: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.uses_tensorflow = uses_tensorflow
        self.flag_aliases = dict(flag_aliases or {})  # library parameter -> click parameter name

    def parse_args(self, ctx, args):
        ctx.meta[ARGS] = list(args)
        return super().parse_args(ctx, args)

    def flag_for(self, ctx, param: str) -> str | None:
        """The flag of library parameter ``param``: the spelling the user typed (an old one, or -k
        rather than --k), else the option's long name."""
        wanted = self.flag_aliases.get(param, param)
        typed = ctx.meta.get(ALIASES_USED, {}).get(wanted)
        if typed:
            return typed
        args = ctx.meta.get(ARGS, [])
        for p in self.get_params(ctx):
            if p.name == wanted and not isinstance(p, AliasOption):
                if not isinstance(p, click.Option):
                    return p.human_readable_name
                given = [o for o in p.opts if any(a == o or a.startswith(o + "=") for a in args)]
                longs = [o for o in p.opts if o.startswith("--")]
                return (given or longs or p.opts)[0]
        return None

    def invoke(self, ctx):
        resolve_aliases(self, ctx)
        try:
            return super().invoke(ctx)
        except FeatcacheError as exc:
            if isinstance(exc, ParameterError) or exc.mentions:
                raise self.worded(ctx, exc) from exc
            raise

    def worded(self, ctx, exc: FeatcacheError) -> FeatcacheError:
        """``exc`` in this command's words: its parameter, and the ones it mentions, as flags."""
        param = getattr(exc, "param", None)
        flag = self.flag_for(ctx, param) if param else None
        message = exc.message if param else exc.problem
        remedy = exc.remedy
        for name in exc.mentions:  # named in the remedy (the message keeps its words)
            if (other := self.flag_for(ctx, name)) is not None:
                pattern = re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])")
                if isinstance(remedy, Remedy):
                    remedy = Remedy(pattern.sub(other, remedy.text), *remedy.steps)
                elif remedy:
                    remedy = pattern.sub(other, remedy)
        worded = FeatcacheError(f"{flag or param}: {message}" if param else message, remedy=remedy)
        worded.exit_code = exc.exit_code
        return worded


ALIASES_USED = "featcache.aliases_used"  # ctx.meta: click parameter name -> the old flag the user typed
ARGS = "featcache.args"  # ctx.meta: the command's own arguments as given


class AliasOption(click.Option):
    """The old spelling of a renamed option, kept for one release: hidden from --help, its value
    handed to ``target`` (through ``convert`` when the old option took another form)."""

    def __init__(self, *args, target: str, convert=None, conflict: str | None = None, **kwargs):
        kwargs.setdefault("hidden", True)
        kwargs.setdefault("default", None)
        super().__init__(*args, **kwargs)
        self.target = target
        self.convert = convert or (lambda value: value)
        self.conflict = conflict  # the message when it is given beside the new spelling or another alias


def resolve_aliases(command: click.Command, ctx) -> None:
    """Move each alias's value to its target parameter; the old and new spelling together is a
    usage error (which one would win is not obvious)."""
    from click.core import ParameterSource

    given: dict[str, list[AliasOption]] = {}
    for p in command.get_params(ctx):
        if not isinstance(p, AliasOption):
            continue
        value = ctx.params.pop(p.name, None)
        if ctx.get_parameter_source(p.name) is not ParameterSource.COMMANDLINE:
            continue
        given.setdefault(p.target, []).append(p)
        ctx.params[p.target] = p.convert(value)
        ctx.meta.setdefault(ALIASES_USED, {})[p.target] = _long(p)
    for target, aliases in given.items():
        new_given = ctx.get_parameter_source(target) is ParameterSource.COMMANDLINE
        if len(aliases) + new_given > 1:
            first = next((a for a in aliases if a.conflict), aliases[0])
            spellings = [_long(a) for a in aliases] + ([_long(_param(command, ctx, target))] if new_given else [])
            raise click.UsageError(f"{_long(first)}: {first.conflict}" if first.conflict else
                                   f"{' and '.join(spellings)} set the same thing: give one of them", ctx)


def _param(command, ctx, name: str):
    return next(p for p in command.get_params(ctx) if p.name == name and not isinstance(p, AliasOption))


def _long(p: click.Parameter) -> str:
    return next((o for o in p.opts if o.startswith("--")), p.opts[0])


def command(name: str, **kwargs):
    """click.command for featcache's commands (see FeatcacheCommand)."""
    kwargs.setdefault("cls", FeatcacheCommand)
    return click.command(name, **kwargs)


class FeatcacheGroup(click.Group):
    """Turns library errors and usage errors into one clear line on stderr and a meaningful exit
    code; with --json, also one JSON object on stdout: {"error", "remedy", "exit_code"}."""

    def resolve_command(self, ctx, args):
        name, command, rest = super().resolve_command(ctx, args)
        if getattr(command, "uses_tensorflow", False) and not any(a in ("-h", "--help") for a in rest):
            install_quiet_tensorflow()  # imported where a backbone or a Keras head needs it, not before
        return name, command, rest

    def invoke(self, ctx):
        args = [*ctx._protected_args, *ctx.args]
        as_json = "--json" in args[1:args.index("--")] if "--" in args else "--json" in args[1:]
        try:
            return super().invoke(ctx)
        except FeatcacheError as exc:
            remedy = worded_remedy(self, exc.remedy)
            line = f"{exc.problem}; {remedy}" if remedy else str(exc)
            fail(ctx, line, exc.problem if remedy else str(exc), remedy, exc.exit_code, as_json)
        except click.UsageError as exc:  # a bad or missing option: featcache's style, not click's
            message = exc.format_message()
            name = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            remedy = f"see `{name} --help`"
            fail(ctx, f"{message} ({remedy})", message, remedy, exc.exit_code, as_json)
        except click.ClickException as exc:
            fail(ctx, exc.format_message(), exc.format_message(), None, exc.exit_code, as_json)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except OSError as exc:  # the system refused (permissions, a full disk, a path that is not there)
            fail(ctx, describe_error(exc), describe_error(exc), None, 2, as_json)
        except Exception as exc:  # a bug: said as one, with its traceback for the report; never exit 1 or 2
            traceback.print_exc()
            problem = f"internal error ({describe_error(exc)})"
            fail(ctx, f"{problem}; please report it with the command and the traceback above", problem,
                 "please report it with the command and the traceback on stderr", INTERNAL_ERROR, as_json)
        except KeyboardInterrupt as exc:
            saved = getattr(exc, "saved", None)  # what the work saved, when it says (extract does)
            message = f"interrupted: {saved}" if saved else "interrupted"
            remedy = "re-run the same command to resume" if saved else "re-run the same command"
            if as_json:
                emit_json({"error": message, "remedy": remedy, "exit_code": 130})
            click.secho(f"{message}; {remedy}", fg="yellow", err=True)
            ctx.exit(130)


def worded_remedy(group: click.Group, remedy: str | Remedy | None) -> str | None:
    """A library remedy in the CLI's words: its steps as command lines."""
    if isinstance(remedy, Remedy):
        return remedy.worded(lambda step: command_line(group, step))
    return remedy


def command_line(group: click.Group, step: Step) -> str:
    """``Step.of("extract", data_dir="photos", store="s.zarr")`` -> "featcache extract photos --store s.zarr"."""
    name = step.operation.replace("_", "-")
    command = group.commands.get(name)
    if command is None:
        return str(step)
    aliases = getattr(command, "flag_aliases", {})
    params = {p.name: p for p in command.get_params(click.Context(command)) if not isinstance(p, AliasOption)}
    positional, options = [], []
    for key, value in step.params:
        p = params.get(aliases.get(key, key))
        if isinstance(p, click.Argument):
            positional.append((command.params.index(p), shlex.quote(str(value))))
        elif isinstance(p, click.Option):
            flag = _long(p)
            values = value if isinstance(value, list | tuple) else [value]  # a repeatable option: once per value
            options += [flag if v is True else f"{flag} {shlex.quote(str(v))}" for v in values]
        else:  # not one of this command's options: said as the library says it
            options.append(f"({key}={value})")
    return " ".join(["featcache", name, *(v for _, v in sorted(positional)), *options])


def fail(ctx, line: str, problem: str, remedy: str | None, exit_code: int, as_json: bool):
    """One line on stderr; with --json, the same as one JSON object on stdout; then exit."""
    if as_json:
        emit_json({"error": problem, "remedy": remedy, "exit_code": exit_code})
    click.secho(f"error: {line}", fg="red", err=True)
    ctx.exit(exit_code)


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

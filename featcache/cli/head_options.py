"""fit-head's and sweep's head options, generated from the heads' Param declarations (plugins
included), so a new head needs no CLI edit. Built on first use: `featcache --help` loads no plugin."""

from __future__ import annotations

import click

from ..errors import ParameterError, RegistryError
from .common import AliasOption, FeatcacheCommand

METAVARS = {int: "INTEGER", float: "NUMBER", str: "TEXT", bool: "BOOLEAN"}


def flag(name: str) -> str:
    """A head parameter's flag: lower case like every other flag (logreg's C is --c)."""
    return _spelled(name).lower()


def _spelled(name: str) -> str:
    return "--" + name.replace("_", "-")


def _declarations(grid: bool, taken: set[str]) -> dict[str, list]:
    from ..heads import HEADS

    by_name: dict[str, list] = {}
    for cls in HEADS:
        for p in cls.parameters:
            if p.name not in taken and (p.sweepable or not grid):
                by_name.setdefault(p.name, []).append((cls.name, p))
    for name, decls in by_name.items():
        if len({(p.type, p.multiple) for _, p in decls}) > 1:
            raise RegistryError(f"heads {', '.join(h for h, _ in decls)} declare parameter {name!r} with different "
                                "types; the command line needs one type per parameter name")
    return by_name


def _help(decls: list) -> str:
    first = decls[0][1]
    defaults = {h: p.default for h, p in decls}
    if len(set(map(repr, defaults.values()))) == 1:
        default = f"default {first.default}" if first.default is not None else "default: automatic"
        used = f"{', '.join(defaults)}; {default}"
    else:
        used = ", ".join(f"{h}: {d if d is not None else 'automatic'}" for h, d in defaults.items())
    choices = f" ({', '.join(map(str, first.choices))})" if first.choices else ""
    return f"{first.help}{choices} [{used}]"


def head_options(grid: bool, taken: set[str]) -> list[click.Option]:
    out = []
    for name, decls in sorted(_declarations(grid, taken).items(), key=lambda kv: kv[0].lower()):
        p = decls[0][1]
        metavar = "V1,V2,..." if grid or p.multiple else METAVARS[p.type]
        out.append(click.Option([flag(name), name], default=None, metavar=metavar, help=_help(decls)))
        if _spelled(name) != flag(name):  # featcache 0.1 spelled it with its capitals (--C): kept, hidden
            out.append(AliasOption([_spelled(name), f"alias_{name}_as_declared"], target=name))
    return out + _renamed_options(grid, taken, {o.name for o in out})


def _renamed_options(grid: bool, taken: set[str], generated: set[str]) -> list[click.Option]:
    """Hidden options for the parameters heads renamed (a head's RENAMED: old name -> new name),
    under their old flags, unless another head declares that name as its own."""
    from ..heads import HEADS

    declared = {p.name for cls in HEADS for p in cls.parameters}
    out = []
    for cls in HEADS:
        for old, new in getattr(cls, "RENAMED", {}).items():
            if new in generated and old not in declared | taken | {o.name for o in out}:
                out.append(click.Option([flag(old), old], default=None, hidden=True))
    return out


class HeadParamsCommand(FeatcacheCommand):
    """A command whose options include every registered head's parameters (as strings; the chosen
    head's own declaration parses and validates them)."""

    def __init__(self, *args, grid: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.grid = grid
        self._generated: list[click.Option] | None = None

    def get_params(self, ctx):
        if self._generated is None:
            self._generated = head_options(self.grid, {p.name for p in self.params})
        params = super().get_params(ctx)
        return params[:-1] + self._generated + params[-1:]  # --help stays last


def parse_head_values(head_cls, raw: dict[str, str | None], grid: bool) -> dict:
    """{name: text} from the command line -> typed values for ``head_cls`` (lists when ``grid``)."""
    out = {}
    renamed = getattr(head_cls, "RENAMED", {})
    for name, text in raw.items():
        if text is None:
            continue
        if name in renamed and name not in head_cls.param_names():  # its old name: the same parameter
            if raw.get(renamed[name]) is not None:
                raise ParameterError(name, f"is the old name of {renamed[name]}: give one of them")
            name = renamed[name]
        p = head_cls.param(name)  # a parameter this head does not have: ParameterError naming it
        out[name] = [p.parse(t) for t in text.split(",") if t.strip()] if grid else p.parse(text)
    return out

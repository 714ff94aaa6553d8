"""`featcache heads`."""

from __future__ import annotations

from .common import command, echo_table, emit_json
from .head_options import flag
from .options import (
    json_option,
)


@command("heads")
@json_option
def heads_cmd(as_json):
    """List the registered heads (plugins included) and their parameters."""
    from ..heads import HEADS

    rows = [{"head": cls.name, "parameter": p.name, "flag": flag(p.name), "type": p.type.__name__,
             "default": p.default, "allowed": p.range_text() or "-", "sweep": p.sweepable, "help": p.help}
            for cls in HEADS for p in cls.parameters]
    if as_json:
        emit_json(rows)
    else:
        echo_table(rows, ["head", "flag", "type", "default", "allowed", "sweep"])


COMMANDS = [heads_cmd]

"""The options several commands share, declared once: one spelling and one help text each, so a
user who learned one command can guess the next one's flags. Renamed options keep their old
spelling for one release as a hidden alias (``alias``)."""

from __future__ import annotations

import click

from .common import AliasOption

JSON_HELP = "Print the result as JSON on stdout; a failure prints {error, remedy, exit_code} there instead."
QUIET_HELP = "No progress bars."
MEMORY_HELP = ("Memory for the features, e.g. 512MB or 2GB (default: half the available memory). Larger features "
               "are streamed from STORE.")
BACKBONE_HELP = "Backbone (see `featcache backbones`)"
TOP_K_HELP = "Classes to show per image"
KEY_NOTE = "a name, NAME.BLOCK for a tap, or a feature key of STORE; repeat to concatenate several."
K_HELP = "How many nearest neighbours"


def _apply(f, *decorators):
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help=JSON_HELP)(f)


def quiet_option(f):
    return click.option("--quiet", "-q", is_flag=True, help=QUIET_HELP)(f)


def memory_limit_option(f):
    return click.option("--memory-limit", default=None, metavar="SIZE", help=MEMORY_HELP)(f)


def store_argument(f):
    return click.argument("store", type=click.Path())(f)


def backbones_option(note: str, **kwargs):
    """-b/--backbone, repeatable (the ``backbones`` parameter)."""
    return click.option("-b", "--backbone", "backbones", multiple=True, help=f"{BACKBONE_HELP}; {note}", **kwargs)


def backbone_option(note: str, **kwargs):
    """-b/--backbone, once (the ``backbone`` parameter)."""
    return click.option("-b", "--backbone", "backbone", help=f"{BACKBONE_HELP}; {note}", **kwargs)


def head_option(f):
    return click.option("--head", default="mlp", show_default=True,
                        help="Head type (see `featcache heads`): mlp, linear, logreg, knn, or a plugin's.")(f)


def out_option(what: str, **kwargs):
    """-o/--out: where the command writes (``what``: what it writes there)."""
    return click.option("--out", "-o", type=click.Path(), help=what, **kwargs)


def seed_option(of: str):
    return click.option("--seed", type=int, default=0, show_default=True, help=f"Seed of {of}.")


def k_option(what: str, default: int):
    # a plain int: the library checks it and says which flag (-k or --k, as typed) is wrong
    return click.option("-k", "--k", "k", type=int, default=default, show_default=True, help=f"{K_HELP}: {what}.")


def top_k_option(default: int, note: str = ""):
    return click.option("--top-k", "top_k", type=click.IntRange(0), default=default, show_default=True,
                        help=f"{TOP_K_HELP}{note}.")


def batch_size_option(default: int, per: str = "forward pass", type=int):
    return click.option("--batch-size", type=type, default=default, show_default=True, help=f"Images per {per}.")


def workers_option(f):
    return click.option("--workers", type=int, default=None, help="Image decoding threads (default: up to 4).")(f)


def label_options(f):
    """A label table instead of class folders, its columns, and groups (ingest/label_file.py)."""
    return _apply(
        f,
        click.option("--labels", "labels", default=None, type=click.Path(), metavar="FILE",
                     help="A CSV, TSV, JSONL or Parquet table of images and labels, used instead of the class folders "
                          "(it may list part of DATA_DIR)."),
        click.option("--path-column", default=None, help="The table's image column [default: path, file, "
                     "filename, image or image_id]."),
        click.option("--label-column", default=None, help="The table's label column [default: label, labels or class]."),
        click.option("--label-delimiter", default="|", show_default=True,
                     help="Between the labels of one cell (several labels per image); ' ' splits on any whitespace. "
                          "A cell holding a JSON list ([\"a\", \"b\"]) is read as a list."),
        click.option("--label-columns", default=None, metavar="A,B,C",
                     help="Several labels per image as one 0/1 column per class, instead of a label column."),
        click.option("--split-column", default=None, help="A column of train/validation/test splits to keep "
                     "[default: split, if there is one]."),
        click.option("--group-column", default=None, help="A column naming each image's group, whose images "
                     "share a split [default: group, if there is one]."),
        click.option("--group-by", default=None, metavar="REGEX", help="Groups by a regular expression on the "
                     "relative paths (its first capture group, or the whole match): one split per group."),
    )


def alias(old: str, target: str, *, flag: bool = False, convert=None, conflict: str | None = None, **kwargs):
    """The old spelling ``old`` of the option whose parameter is ``target``, hidden from --help."""
    name = "alias_" + old.lstrip("-").replace("-", "_").lower() + ("_upper" if old != old.lower() else "")
    return click.option(old, name, cls=AliasOption, target=target, is_flag=flag, convert=convert,
                        conflict=conflict, **kwargs)


def aliases(*decorators):
    """Several ``alias`` decorators as one."""
    return lambda f: _apply(f, *decorators)

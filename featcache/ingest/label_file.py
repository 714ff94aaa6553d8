"""A label table (CSV, TSV, JSONL, Parquet) -> a ``LabelTable``: which images, their labels, optional split and group.

A table may list part of a tree (only its images are used) and its labels override the folders'.
Paths are relative to the data folder or absolute inside it; a value without an extension (a
Kaggle ``image_id``) is the one file under the data folder with that name less its extension.
Everything wrong with a table is found here, before a store is written.

Several labels per image (multi-label): a cell holding several labels split by
``label_delimiter`` (default ``|``; ``" "`` splits on any whitespace), a JSON list cell
(``["a", "b"]``, or a JSONL list value), or one 0/1 column per class (``label_columns``). A table
is multi-label when ``label_columns`` is given, ``multilabel`` says so, or any row holds an
explicit list or more than one label; then an image may have no label (``[]``, a delimited cell
left blank, or every 0/1 column 0). A table where every row has one label is single-label as before
(a blank cell there is still an error).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import FeatcacheError, ParameterError, describe_error, shortlist
from ..install import pip_install
from ..paths import printable_path
from .splits import SPLIT_ALIASES, SPLITS

PATH_COLUMNS = ("path", "file", "filename", "image", "image_id")
LABEL_COLUMNS = ("label", "labels", "class")
MAX_ROWS = 10_000_000  # a bound on what one table may make us hold


@dataclass(frozen=True)
class LabelSource:
    """Where the labels are: the table and its columns (None: the usual names, tried in order)."""

    file: str | Path
    path_column: str | None = None
    label_column: str | None = None
    split_column: str | None = None  # None: a column named "split" if there is one
    group_column: str | None = None  # None: a column named "group" if there is one
    label_delimiter: str = "|"  # between the labels of one cell; " ": any whitespace
    label_columns: tuple[str, ...] | None = None  # one 0/1 column per class: multi-label
    multilabel: bool | None = None  # None: multi-label when a row has a list, several labels or none

    def __post_init__(self):
        if self.label_columns is not None:
            cols = tuple(self.label_columns) if not isinstance(self.label_columns, str) else tuple(
                c.strip() for c in self.label_columns.split(","))
            if not cols or not all(isinstance(c, str) and c for c in cols) or len(set(cols)) != len(cols):
                raise ParameterError("label_columns", f"give distinct column names, not {self.label_columns!r}")
            object.__setattr__(self, "label_columns", cols)
        if not isinstance(self.label_delimiter, str) or not self.label_delimiter:
            raise ParameterError("label_delimiter", "give a non-empty delimiter, e.g. '|' or ';'")


@dataclass(frozen=True)
class LabelRow:
    path: str  # relative to the data folder, POSIX separators, an existing file
    label: str  # the first of ``labels`` ("" when an image of a multi-label table has none)
    split: int | None  # 0 train, 1 validation, 2 test; None: decided from the digest
    group: str | None
    labels: tuple[str, ...] = ()  # every label of the image, sorted (single-label: (label,))

    def __post_init__(self):
        if not self.labels and self.label:
            object.__setattr__(self, "labels", (self.label,))


@dataclass(frozen=True)
class LabelTable:
    source: LabelSource
    rows: tuple[LabelRow, ...]  # sorted by path, one per image
    multilabel: bool = False  # rows hold label sets (``LabelRow.labels``), of any size

    @property
    def presplit(self) -> bool:
        return bool(self.rows) and self.rows[0].split is not None

    @property
    def grouped(self) -> bool:
        return bool(self.rows) and self.rows[0].group is not None


def _records(file: Path) -> tuple[list[str], list[dict]]:
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        return _parquet_records(file)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterError("labels", f"{printable_path(file)} cannot be read ({exc})") from None
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ParameterError("labels", f"{printable_path(file)} line {n} is not JSON ({exc.msg})") from None
                if not isinstance(rec, dict):
                    raise ParameterError("labels", f"{printable_path(file)} line {n} is not a JSON object")
                rows.append(rec)
        return list(dict.fromkeys(k for r in rows for k in r)), rows
    delimiter = "\t" if suffix in (".tsv", ".tab") else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    return [c for c in reader.fieldnames or [] if c is not None], list(reader)


def _parquet_records(file: Path) -> tuple[list[str], list[dict]]:
    """A Parquet table's columns and rows (a list column, e.g. multi-label sets, stays a list)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ParameterError("labels", f"{printable_path(file)}: Parquet tables need pyarrow, which is not "
                                       "installed", remedy=f"install it ({pip_install('featcache[parquet]')}), or "
                                                           "write the table as CSV, TSV or JSONL") from None
    try:
        table = pq.read_table(file)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ParameterError("labels", f"{printable_path(file)} cannot be read as Parquet ({describe_error(exc)})"
                             ) from None
    if table.num_rows > MAX_ROWS:
        raise ParameterError("labels", f"{printable_path(file)} has more than {MAX_ROWS} rows")
    return list(table.column_names), table.to_pylist()


def _column(param: str, given: str | None, defaults: tuple[str, ...], found: list[str], file: Path) -> str | None:
    names = (given,) if given else defaults
    for name in names:
        if name in found:
            return name
    if not given and param in ("split_column", "group_column"):
        return None  # optional
    raise ParameterError(param, f"{printable_path(file)} has no column {' or '.join(names)}; columns found: "
                                f"{shortlist(found, 12) or 'none'}")


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _cell_labels(raw, delimiter: str, where: str) -> tuple[tuple[str, ...], bool]:
    """A label cell -> (its labels, sorted and distinct; whether it was a list). A list is a JSONL
    list value or a cell holding a JSON list (``["a", "b"]``); a text cell is split by ``delimiter``
    (" ": any whitespace)."""
    listed = isinstance(raw, list)
    if not listed:
        text = _text(raw)
        if text.startswith("["):  # a JSON list (a label never starts with "[")
            try:
                raw, listed = json.loads(text), True
            except ValueError:
                raise ParameterError("labels", f"{where}: the label cell {text!r} is not a JSON list") from None
            if not isinstance(raw, list):
                raise ParameterError("labels", f"{where}: the label cell {text!r} is not a JSON list")
        else:
            raw = text.split() if delimiter == " " else text.split(delimiter)
    if any(isinstance(v, list | dict) or v is None for v in raw):
        raise ParameterError("labels", f"{where}: a label list holds {raw!r}: give label names")
    return tuple(sorted({_text(v) for v in raw} - {""})), listed


def _binary(value, column: str, where: str) -> bool:
    """A 0/1 label column's cell (also true/false, 1.0/0.0)."""
    text = _text(value).lower()
    if text in ("1", "1.0", "true"):
        return True
    if text in ("0", "0.0", "false"):
        return False
    raise ParameterError("labels", f"{where}: column {column} holds {_text(value)!r}, not 0 or 1",
                         remedy="give 1 for a label the image has, 0 for one it has not")


class _Resolver:
    """A table's path value -> the file's path relative to the data folder ("" when there is none)."""

    def __init__(self, root: Path, file: Path):
        self.root, self.file, self._stems = root, file, None

    def __call__(self, value: str) -> str:
        p = Path(value)
        full = Path(_normal(p if p.is_absolute() else self.root / p))
        if full != self.root and self.root not in full.parents:
            raise ParameterError("labels", f"{printable_path(self.file)}: {value} is outside the data folder "
                                           f"{printable_path(self.root)}", remedy="give paths inside the data folder")
        if full.is_file():
            return full.relative_to(self.root).as_posix()
        if p.suffix:
            return ""
        matches = self.stems().get(full.relative_to(self.root).as_posix(), [])
        if len(matches) > 1:
            raise ParameterError("labels", f"{printable_path(self.file)}: image id {value} matches several files "
                                           f"({shortlist(matches, 3)})", remedy="give the file name with its extension")
        return matches[0] if matches else ""

    def stems(self) -> dict[str, list[str]]:
        if self._stems is None:  # walked once, only when an id without extension is met
            self._stems = {}
            for f in sorted(self.root.rglob("*")):
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(self.root).parts):
                    rel = f.relative_to(self.root)
                    self._stems.setdefault(rel.with_suffix("").as_posix(), []).append(rel.as_posix())
        return self._stems


def _normal(p: Path) -> str:
    import os

    return os.path.normpath(p)  # ".." resolved by name: a link inside the folder stays inside it


def read_label_file(source: LabelSource, data_dir: str | Path, group_by: str | None = None) -> LabelTable:
    """Read and check ``source`` against the files under ``data_dir``. ``group_by``: a regular
    expression on each relative path whose first group (or whole match) names the image's group."""
    root = Path(_normal(Path(data_dir).expanduser().absolute()))
    file = Path(source.file).expanduser()
    if not file.is_file():
        raise ParameterError("labels", f"label file {printable_path(file)} does not exist")
    pattern = group_pattern(group_by)
    found, records = _records(file)
    if len(records) > MAX_ROWS:
        raise ParameterError("labels", f"{printable_path(file)} has more than {MAX_ROWS} rows")
    path_col = _column("path_column", source.path_column, PATH_COLUMNS, found, file)
    label_cols = source.label_columns
    if label_cols is not None:
        unknown = [c for c in label_cols if c not in found]
        if unknown:
            raise ParameterError("label_columns", f"{printable_path(file)} has no column {', '.join(unknown)}; "
                                                  f"columns found: {shortlist(found, 12) or 'none'}")
        label_col = None
    else:
        label_col = _column("label_column", source.label_column, LABEL_COLUMNS, found, file)
    split_col = _column("split_column", source.split_column, ("split",), found, file)
    group_col = _column("group_column", source.group_column, ("group",), found, file)
    if group_col and pattern:
        raise ParameterError("group_by", f"{printable_path(file)} has a group column ({group_col}): give groups "
                                         "by the column or by a pattern, not both")
    if not records:
        raise ParameterError("labels", f"{printable_path(file)} lists no images")
    resolve = _Resolver(root, file)
    rows: dict[str, LabelRow] = {}
    missing: list[str] = []
    blank: str | None = None  # the first row with no label: an error unless the table is multi-label
    several = label_cols is not None  # a row with a list, or more than one label
    for n, rec in enumerate(records, start=2 if file.suffix.lower() not in (".jsonl", ".ndjson") else 1):
        value = _text(rec.get(path_col))
        where = f"{printable_path(file)} row {n}"
        if not value:
            raise ParameterError("labels", f"{where} has an empty {path_col}")
        if label_cols is not None:
            labels = tuple(c for c in label_cols if _binary(rec.get(c), c, f"{where} ({value})"))
        else:
            labels, listed = _cell_labels(rec.get(label_col), source.label_delimiter, f"{where} ({value})")
            several = several or listed or len(labels) > 1
            if not labels and not listed and blank is None:
                blank = f"{where} ({value}) has an empty {label_col}"
        split = None
        if split_col:
            text = _text(rec.get(split_col)).lower()
            if text not in SPLIT_ALIASES:
                raise ParameterError("labels", f"{where} ({value}): {split_col} {text!r} is not train, validation "
                                               "or test")
            split = SPLIT_ALIASES[text]
        rel = resolve(value)
        if not rel:
            missing.append(value)
            continue
        group = None
        if group_col:
            group = _text(rec.get(group_col))
            if not group:
                raise ParameterError("labels", f"{where} ({value}) has an empty {group_col}")
        elif pattern:
            group = group_of(pattern, rel)
        row = LabelRow(rel, labels[0] if labels else "", split, group, labels)
        old = rows.get(rel)
        if old is not None and old != row:
            what = "labels" if old.labels != labels else "splits or groups"
            raise ParameterError("labels", f"{where}: {rel} is listed twice with different {what} "
                                           f"({'|'.join(old.labels) if what == 'labels' else old}, "
                                           f"{'|'.join(labels) if what == 'labels' else row})",
                                 remedy="keep one row per image")
        rows[rel] = row
    multilabel = several if source.multilabel is None else bool(source.multilabel)
    if blank is not None and not multilabel:
        raise ParameterError("labels", blank, remedy="give every listed image a label, or leave it out")
    if multilabel and rows and not any(r.labels for r in rows.values()):
        raise ParameterError("labels", f"{printable_path(file)}: no listed image has a label",
                             remedy="give the images their labels")
    if not multilabel and any(len(r.labels) != 1 for r in rows.values()):
        bad = next(r for r in rows.values() if len(r.labels) != 1)
        raise ParameterError("labels", f"{printable_path(file)}: {bad.path} has {len(bad.labels)} labels in a "
                                       "single-label table", remedy="give each image one label")
    if missing:
        raise ParameterError("labels", f"{printable_path(file)}: {len(missing)} listed image(s) not found under "
                                       f"{printable_path(root)}: {shortlist(missing, 10)}")
    table = LabelTable(source, tuple(rows[k] for k in sorted(rows)), multilabel)
    if table.presplit and (table.grouped or pattern):
        check_groups_in_one_split([(r.group, r.split) for r in table.rows], str(printable_path(file)))
    return table


def group_pattern(group_by: str | None) -> re.Pattern | None:
    if not group_by:
        return None
    try:
        return re.compile(group_by)
    except re.error as exc:
        raise ParameterError("group_by", f"{group_by!r} is not a regular expression ({exc})") from None


def group_of(pattern: re.Pattern, rel: str) -> str:
    m = pattern.search(rel)
    if m is None:
        raise ParameterError("group_by", f"{pattern.pattern!r} does not match {rel}",
                             remedy="give a pattern every image path matches")
    return m.group(1) if pattern.groups else m.group(0)


def check_groups_in_one_split(pairs: list[tuple[str | None, int | None]], where: str | Path) -> None:
    """Given splits must keep each group whole: a group in two splits leaks between them."""
    seen: dict[str, set[int]] = {}
    for group, split in pairs:
        if group is not None and split is not None:
            seen.setdefault(group, set()).add(split)
    bad = sorted(g for g, s in seen.items() if len(s) > 1)
    if bad:
        raise FeatcacheError(f"{where}: group {bad[0]} is in the {' and '.join(SPLITS[s] for s in sorted(seen[bad[0]]))} "
                             f"splits ({len(bad)} group(s) straddle splits)",
                             remedy="put every image of a group in one split")

"""Features out of a store, for the tools people use next (pyarrow, DuckDB, pandas, faiss), which
need no featcache to read them.

``export_features(store, names, out, options)`` reads the features of one config (or several,
concatenated along D) through the store's one verified read path (``store.rows(...)``, chunk by
chunk, checksums checked) and writes them with each image's path, content digest, label (index
and class name), split and group (where the image list has groups):

- ``parquet``: part files ``part-00000.parquet``, ... of at most ``rows_per_part`` rows each, one
  row per image and view, the features a fixed-size list column, in the store's order (the order
  its chunks are read in; each row names its image);
- ``npy``: ``features.npy`` ((N, D), or (N, V, D) with every view), filled chunk by chunk through a
  memory map, and ``metadata.csv`` (one line per image, in the same order).

Beside them ``_featcache.json`` records the store's config records (``FeatureConfig``), a digest of
the image list the rows come from, and what was written. The folder is written under a hidden
temporary sibling and renamed over ``out`` in one step (``atomic.py``): a kill or an error midway
leaves the previous export, or nothing, never half of one. Features keep their stored dtype
(float16 stays float16) unless ``dtype="float32"``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__, atomic
from ..errors import FeatcacheError, ParameterError
from ..ingest.splits import SPLITS
from ..paths import names_a_url
from ..stores.checksum import record_digest
from ..stores.lock import RunLock
from ..stores.view import FeatureRows, prefetch

FORMATS = ("parquet", "npy")
DTYPES = (None, "float16", "float32")
SIDECAR = "_featcache.json"  # "_": pyarrow and Spark skip it when reading the folder
METADATA = "metadata.csv"
FEATURES_NPY = "features.npy"
PART = "part-{:05d}.parquet"
DEFAULT_ROWS_PER_PART = 65536  # a parquet row group's worth: readers stream a part at a time


@dataclass(frozen=True)
class FeatureExportOptions:
    """What ``export_features`` writes: its ``format`` (parquet or npy), the features' ``dtype``
    (None: as stored), every view (``all_views``) or view 0 only, and at most ``rows_per_part``
    rows per parquet part file."""

    format: str = "parquet"
    dtype: str | None = None
    all_views: bool = False
    rows_per_part: int = DEFAULT_ROWS_PER_PART

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ParameterError("format", f"{self.format!r} is not one of {', '.join(FORMATS)}")
        if self.dtype not in DTYPES:
            raise ParameterError("dtype", f"{self.dtype!r} is not float16 or float32")
        if not isinstance(self.rows_per_part, int) or self.rows_per_part < 1:
            raise ParameterError("rows_per_part", f"{self.rows_per_part!r} is not a positive number of rows")


@dataclass(frozen=True)
class FeatureExportResult:
    path: Path
    format: str
    images: int
    rows: int  # images x views written
    views: int
    dim: int
    dtype: str
    keys: list[str]
    files: list[str] = field(default_factory=list)
    manifest_digest: str = ""

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def manifest_digest(rows: FeatureRows) -> str:
    """A digest of the image list the store's rows are numbered by: its paths, content digests,
    labels, splits, groups, classes and data folder (the same list, the same digest)."""
    m = rows.manifest
    return record_digest({"classes": list(m.classes), "paths": list(m.paths), "digests": list(m.digests),
                          "labels": np.asarray(m.labels).tolist(), "splits": np.asarray(m.splits).tolist(),
                          "groups": None if m.groups is None else list(m.groups), "data_root": m.data_root,
                          **({"label_sets": np.asarray(m.label_sets).tolist()}
                             if getattr(m, "label_sets", None) is not None else {})})


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ParameterError("format", "parquet needs the pyarrow package, which is not installed",
                             remedy="install it (pip install pyarrow, or the featcache[parquet] extra), "
                                    "or write the npy format") from None
    return pyarrow


def check_out(out: str | Path) -> Path:
    """``out`` as a folder this export may replace: new, empty, or a previous feature export."""
    if names_a_url(out):
        raise ParameterError("out", f"{out}: writing features to a URL is not supported yet; give a local folder")
    out = Path(out).expanduser()
    if os.path.lexists(out) and (out.is_symlink() or not out.is_dir()):
        raise ParameterError("out", f"{out} is a file; give a new folder name")
    if out.is_dir() and any(out.iterdir()) and not (out / SIDECAR).is_file():
        raise ParameterError("out", f"{out} is a folder holding other files than a feature export; "
                                    "give a new folder name")
    from ..train.run import make_folder

    make_folder(out.parent, "out")
    return out


def _metadata(rows: FeatureRows) -> dict[str, list]:
    """Per image of the selection: path, digest, label index, class, split (and group; and, where
    images have several labels, ``labels``: all of them; ``label``/``class`` are then the first,
    -1 and "" for an image without any)."""
    m = rows.manifest
    labels = np.asarray(rows.labels).astype(np.int64)
    out = {"path": rows.paths, "digest": rows.digests, "label": labels.tolist(),
           "class": [m.classes[i] if i >= 0 else "" for i in labels], "split": [SPLITS[int(s)] for s in rows.splits]}
    if getattr(rows, "multilabel", False):
        out["labels"] = [[m.classes[j] for j in np.flatnonzero(s)] for s in rows.label_sets]
    if m.groups is not None:
        out["group"] = [m.groups[i] for i in rows.images[rows.at]]
    return out


def _column(values: list, dtype=None) -> np.ndarray:
    """A 1-D array of a metadata column (a list of lists stays one list per entry)."""
    out = np.empty(len(values), dtype or object)
    out[:] = values
    return out


def _blocks(rows: FeatureRows, view: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(features, their positions in the selection), a chunk at a time in store order, verified."""
    return prefetch((rows.read(g, view), g) for g in rows.groups)


def write_part(pa, table, path: Path) -> None:
    """One parquet part file (one row group)."""
    import pyarrow.parquet as pq

    pq.write_table(table, path, row_group_size=max(1, table.num_rows))


def _parquet_table(pa, X: np.ndarray, at: np.ndarray, meta: dict[str, list], views: int):
    """Rows ``at`` of the selection, one table row per image and view (image-major)."""
    n, dim = len(at), X.shape[-1]
    flat = np.ascontiguousarray(X.reshape(n * views, dim))
    types = {"label": pa.int32(), "labels": pa.list_(pa.string())}
    columns = {k: pa.array(np.repeat(v[at], views).tolist(), types.get(k, pa.string())) for k, v in meta.items()}
    columns["view"] = pa.array(np.tile(np.arange(views, dtype=np.int16), n))
    columns["features"] = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), dim)
    return pa.table(columns)


def _write_parquet(rows: FeatureRows, folder: Path, view: int | None, dtype, views: int, rows_per_part: int,
                   progress) -> list[str]:
    pa = _pyarrow()
    meta = {k: _column(v, np.int32 if k == "label" else None) for k, v in _metadata(rows).items()}
    files: list[str] = []
    pending: list[tuple[np.ndarray, np.ndarray]] = []  # (features (r, V, D), positions) not written yet
    per_part = max(1, rows_per_part // views)  # images per part: at most rows_per_part rows

    def write(final: bool) -> None:
        X = np.concatenate([x for x, _ in pending])
        at = np.concatenate([a for _, a in pending])
        pending.clear()
        while len(at) >= per_part or (final and len(at)):
            name = PART.format(len(files))
            write_part(pa, _parquet_table(pa, X[:per_part], at[:per_part], meta, views), folder / name)
            files.append(name)
            X, at = X[per_part:], at[per_part:]
        if len(at):
            pending.append((X, at))

    for X, at in _blocks(rows, view):
        X = X.astype(dtype, copy=False) if dtype is not None else X
        pending.append((X if view is None else X[:, None, :], at))
        if sum(len(a) for _, a in pending) >= per_part:
            write(final=False)
        progress(len(at))
    if pending:
        write(final=True)
    if not files:  # no usable image: one empty part, so readers of the glob see the columns
        empty = np.empty((0, views, rows.dim), dtype or (rows.parts[0].dtype if rows.parts else np.float32))
        write_part(pa, _parquet_table(pa, empty, np.empty(0, np.int64), meta, views), folder / PART.format(0))
        files.append(PART.format(0))
    return files


def _write_npy(rows: FeatureRows, folder: Path, view: int | None, dtype, progress) -> list[str]:
    stored = np.result_type(*(p.dtype for p in rows.parts)) if rows.parts else np.dtype(np.float32)
    shape = rows.shape if view is None else (len(rows), rows.dim)
    features = np.lib.format.open_memmap(folder / FEATURES_NPY, mode="w+", dtype=dtype or stored, shape=shape)
    for X, at in _blocks(rows, view):
        features[at] = X
        progress(len(at))
    features.flush()
    del features
    meta = _metadata(rows)
    with open(folder / METADATA, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        if "labels" in meta:  # a label set as one field: "cat|dog"
            meta["labels"] = ["|".join(v) for v in meta["labels"]]
        w.writerow(list(meta))
        w.writerows(zip(*meta.values(), strict=True))
    return [FEATURES_NPY, METADATA]


def export_features(store, names: list[str], out: str | Path, options: FeatureExportOptions | None = None,
                    progress: bool = False) -> FeatureExportResult:
    """Write the features of configs ``names`` of ``store`` (a path or an open ``FeatureStore``)
    to the folder ``out`` (see the module): readable without featcache."""
    from ..progress import progress_bar
    from ..stores import open_store

    options = options or FeatureExportOptions()
    if options.format == "parquet":
        _pyarrow()  # before anything is read
    if not names:
        raise ParameterError("backbones", "no features named; name a config of the store")
    out = check_out(out)
    opened = open_store(store, "r") if isinstance(store, str | Path) else None
    st = opened or store
    try:
        rows = st.rows(list(names))
        view = None if options.all_views else 0
        views = rows.n_views if options.all_views else 1
        dtype = np.dtype(options.dtype) if options.dtype else None
        stored = np.result_type(*(p.dtype for p in rows.parts))
        lock = RunLock.acquire(out)  # one writer of ``out``: each clears what a killed one left
        try:
            atomic.remove_leftovers(out)
            with progress_bar(len(rows), "export", enabled=progress) as bar, atomic.replaced(out) as tmp:
                tmp.mkdir(mode=0o755)
                if options.format == "parquet":
                    files = _write_parquet(rows, tmp, view, dtype, views, options.rows_per_part, bar.update)
                else:
                    files = _write_npy(rows, tmp, view, dtype, bar.update)
                result = FeatureExportResult(
                    path=out, format=options.format, images=len(rows), rows=len(rows) * views, views=views,
                    dim=rows.dim, dtype=str(dtype or stored), keys=rows.keys, files=files,
                    manifest_digest=manifest_digest(rows))
                _write_sidecar(tmp / SIDECAR, st, rows, result, options)
        except OSError as exc:  # no permission, disk full
            raise ParameterError("out", f"cannot write {out} ({exc.strerror})") from exc
        finally:
            lock.release()
    finally:
        if opened is not None:
            opened.close()
    return result


def _write_sidecar(path: Path, store, rows: FeatureRows, result: FeatureExportResult,
                   options: FeatureExportOptions) -> None:
    record = {
        "featcache_version": __version__,
        "store": str(store.path),
        "data_root": rows.manifest.data_root,
        "manifest_digest": result.manifest_digest,
        "classes": list(rows.classes),
        "keys": rows.keys,
        "configs": [c.to_dict() for c in rows.configs],
        "dims": rows.dims,
        "format": result.format, "dtype": result.dtype, "views": result.views, "all_views": options.all_views,
        "images": result.images, "rows": result.rows, "dim": result.dim, "files": result.files,
        "multilabel": bool(getattr(rows, "multilabel", False)),
        "columns": (["path", "digest", "label", "class", "split"] + (["labels"] if getattr(rows, "multilabel", False)
                                                                      else [])
                    + (["group"] if rows.manifest.groups else [])
                    + (["view", "features"] if result.format == "parquet" else [])),
    }
    with os.fdopen(atomic.create_exclusive(path), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)


def read_sidecar(folder: str | Path) -> dict:
    """The ``_featcache.json`` record of an export folder."""
    try:
        return json.loads((Path(folder) / SIDECAR).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FeatcacheError(f"{folder} is not a feature export ({SIDECAR} cannot be read: {exc})") from exc


__all__ = ["FeatureExportOptions", "FeatureExportResult", "export_features", "manifest_digest", "read_sidecar"]

"""`featcache export-features`: a store's features as parquet or npy, read back without featcache
(pyarrow, DuckDB when installed) equal to the store's own verified read; a failure midway leaves
the previous export whole, or nothing."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, make_tree

from featcache.cli import cli
from featcache.serve import features_out
from featcache.stores import open_store

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """18 images, 3 classes, one augmented view, groups from the file names."""
    root = tmp_path_factory.mktemp("exp")
    data = make_tree(root / "data", per_class=6)
    path = root / "s.zarr"
    r = run("extract", data, "--store", path, "-b", TINY, "--weights", "random", "--augment", "1",
            "--group-by", r"_00(\d)", "-q")
    assert r.exit_code == 0, r.output
    return path


def _expected(store: Path):
    with open_store(store) as s:
        rows = s.rows([TINY])
        return rows, rows.load(), s.config(rows.keys[0]).to_dict(), s.manifest()


def test_parquet_round_trip_through_pyarrow_and_duckdb(store, tmp_path):
    out = tmp_path / "feats"
    r = run("export-features", store, "-b", TINY, "--out", out, "--views", "all", "--rows-per-part", "7", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    rows, X, config, manifest = _expected(store)
    n, v, d = X.shape
    assert (result["images"], result["rows"], result["views"], result["dim"]) == (n, n * v, v, d)
    parts = sorted(p.name for p in out.glob("*.parquet"))
    assert parts == result["files"] and len(parts) == -(-n * v // 7) > 2  # part files of at most 7 rows
    assert all(pq.ParquetFile(out / p).metadata.num_rows <= 7 for p in parts)

    table = pq.read_table(out)  # the folder as one data set: the sidecar is skipped
    assert table.schema.field("features").type == pa.list_(pa.float16(), d)  # float16 kept
    got = np.stack(table.column("features").to_numpy(zero_copy_only=False)).astype(np.float32)
    assert table.num_rows == n * v
    view = np.asarray(table.column("view"))
    assert np.array_equal(view, np.tile(np.arange(v), n))  # image-major, every view
    first = table.filter(pa.compute.equal(table.column("view"), 0))
    # rows come in the store's order (chunk by chunk); each carries its image's path
    at = [rows.paths.index(p) for p in first.column("path").to_pylist()]
    assert sorted(at) == list(range(n))
    np.testing.assert_array_equal(got.reshape(n, v, d), X[at])
    assert first.column("digest").to_pylist() == [rows.digests[i] for i in at]
    assert first.column("label").to_pylist() == rows.labels[at].tolist()
    assert first.column("class").to_pylist() == [manifest.classes[i] for i in rows.labels[at]]
    assert first.column("split").to_pylist() == [("train", "validation", "test")[s] for s in rows.splits[at]]
    assert first.column("group").to_pylist() == [manifest.groups[i] for i in rows.images[at]]

    sidecar = json.loads((out / "_featcache.json").read_text())
    assert sidecar["configs"] == [config] and sidecar["keys"] == rows.keys
    assert sidecar["manifest_digest"] == result["manifest_digest"] == features_out.manifest_digest(rows)

    duckdb = pytest.importorskip("duckdb")
    q = duckdb.sql(f"SELECT path, view, features FROM '{out}/*.parquet' ORDER BY path, view").fetchall()
    order = np.argsort(np.array(rows.paths), kind="stable")
    want = X[order].reshape(n * v, d)
    assert [p for p, _, _ in q] == [rows.paths[i] for i in order for _ in range(v)]
    np.testing.assert_array_equal(np.array([f for _, _, f in q], np.float32), want)


def test_view0_float32_and_npy(store, tmp_path):
    rows, X, _, _ = _expected(store)
    r = run("export-features", store, "-b", TINY, "--out", tmp_path / "f32", "--dtype", "float32", "-q")
    assert r.exit_code == 0, r.output
    table = pq.read_table(tmp_path / "f32")
    assert table.schema.field("features").type == pa.list_(pa.float32(), X.shape[2])
    at = [rows.paths.index(p) for p in table.column("path").to_pylist()]
    np.testing.assert_array_equal(np.stack(table.column("features").to_numpy(zero_copy_only=False)), X[at, 0])

    r = run("export-features", store, "-b", TINY, "--out", tmp_path / "npy", "--format", "npy", "--views", "all",
            "-q")
    assert r.exit_code == 0, r.output
    F = np.load(tmp_path / "npy" / "features.npy")  # in the selection's order, as metadata.csv
    assert F.dtype == np.float16 and F.shape == X.shape
    np.testing.assert_array_equal(F.astype(np.float32), X)
    with open(tmp_path / "npy" / "metadata.csv", newline="") as f:
        meta = list(csv.DictReader(f))
    assert [m["path"] for m in meta] == rows.paths and [int(m["label"]) for m in meta] == rows.labels.tolist()


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_failure_midway_leaves_old_export_or_nothing(store, tmp_path, monkeypatch):
    real, calls = features_out.write_part, []

    def failing(pa_, table, path):
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError("killed while writing part 2")
        real(pa_, table, path)

    out = tmp_path / "feats"
    monkeypatch.setattr(features_out, "write_part", failing)
    r = run("export-features", store, "-b", TINY, "--out", out, "--rows-per-part", "4")
    assert r.exit_code != 0 and len(calls) == 2
    assert not out.exists() and not list(tmp_path.glob(".feats*"))  # nothing, not even a hidden partial

    monkeypatch.setattr(features_out, "write_part", real)
    assert run("export-features", store, "-b", TINY, "--out", out, "-q").exit_code == 0
    before = _tree(out)
    calls.clear()
    monkeypatch.setattr(features_out, "write_part", failing)
    r = run("export-features", store, "-b", TINY, "--out", out, "--rows-per-part", "4", "--views", "all")
    assert r.exit_code != 0 and len(calls) == 2
    assert _tree(out) == before  # the previous export, whole
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_refusals(store, tmp_path, monkeypatch):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    r = run("export-features", store, "-b", TINY, "--out", other)
    assert r.exit_code == 2 and "--out" in r.stderr and "other files" in r.stderr
    assert (other / "notes.txt").read_text() == "keep me"

    r = run("export-features", store, "-b", TINY, "--out", "s3://bucket/feats")
    assert r.exit_code == 2 and "--out" in r.stderr and "not supported yet" in r.stderr and not Path("s3:").exists()

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    r = run("export-features", store, "-b", TINY, "--out", tmp_path / "x")
    assert r.exit_code == 2 and "pyarrow" in r.stderr and "Traceback" not in r.output
    assert r.stderr.count("\n") == 1 and not (tmp_path / "x").exists()
    r = run("export-features", store, "-b", TINY, "--out", tmp_path / "x", "--format", "npy", "-q")
    assert r.exit_code == 0, r.output  # npy needs no pyarrow


def test_label_sets_of_a_multilabel_store(tmp_path, orl_dir):
    from multilabel_data import make_canvases

    table, label_rows = make_canvases(orl_dir, tmp_path / "flat", people=4, canvases=12)
    store = tmp_path / "m.zarr"
    r = run("extract", tmp_path / "flat", "--store", store, "-b", TINY, "--weights", "random", "--labels", table,
            "--image-size", "64", "-q")
    assert r.exit_code == 0, r.output
    assert run("export-features", store, "-b", TINY, "--out", tmp_path / "pq", "-q").exit_code == 0
    table_ = pq.read_table(tmp_path / "pq")
    want = {name: list(labels) for name, labels in label_rows}
    got = dict(zip(table_.column("path").to_pylist(), table_.column("labels").to_pylist(), strict=True))
    assert got == want and table_.schema.field("labels").type == pa.list_(pa.string())
    assert all(c == labels[0] for c, labels in zip(table_.column("class").to_pylist(),
                                                   table_.column("labels").to_pylist(), strict=True))
    assert run("export-features", store, "-b", TINY, "--out", tmp_path / "npy", "--format", "npy", "-q").exit_code == 0
    with open(tmp_path / "npy" / "metadata.csv", newline="") as f:
        assert {m["path"]: m["labels"].split("|") for m in csv.DictReader(f)} == want

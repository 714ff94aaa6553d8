"""Issue 22: label tables (CSV/TSV/JSONL) instead of class folders, groups, and bad tables."""

from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, make_tree

from featcache.cli import cli
from featcache.errors import FeatcacheError
from featcache.extraction import ExtractOptions, extract
from featcache.ingest.label_file import LabelSource
from featcache.ingest.scan import scan
from featcache.stores import open_store


def _opts(**kw) -> ExtractOptions:
    return ExtractOptions(backbones=(TINY,), weights="random", progress=False, **kw)


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def orl_pair(orl_dir, tmp_path_factory):
    """10 people x 4 ORL photos as a folder tree, and the same photos in one flat folder + a CSV."""
    base = tmp_path_factory.mktemp("orl")
    tree, flat = base / "tree", base / "flat"
    rows, rng = [], random.Random(0)
    people = sorted(d for d in orl_dir.iterdir() if d.is_dir())[:10]
    for person in people:
        for photo in sorted(person.iterdir())[:4]:
            (tree / person.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, tree / person.name / photo.name)
            name = f"{rng.getrandbits(48):012x}{photo.suffix}"
            flat.mkdir(exist_ok=True)
            shutil.copy(photo, flat / name)
            rows.append({"filename": name, "class": person.name})
    rng.shuffle(rows)
    return tree, flat, _write_csv(base / "labels.csv", rows)


def test_flat_folder_with_csv_matches_the_tree(orl_pair, tmp_path):
    tree, flat, table = orl_pair
    extract(tree, tmp_path / "tree.zarr", _opts())
    extract(flat, tmp_path / "flat.zarr", _opts(labels=LabelSource(table)))
    a, b = open_store(tmp_path / "tree.zarr"), open_store(tmp_path / "flat.zarr")
    ma, mb = a.manifest(), b.manifest()
    assert ma.classes == mb.classes and len(ma) == len(mb) == 40
    by_digest = {d: (ma.classes[lab], s) for d, lab, s in zip(ma.digests, ma.labels, ma.splits, strict=True)}
    assert {d: (mb.classes[lab], s) for d, lab, s in zip(mb.digests, mb.labels, mb.splits, strict=True)} == by_digest
    fa, fb = a.load([a.keys()[0]]), b.load([b.keys()[0]])
    order = {d: i for i, d in enumerate(ma.digests)}
    perm = [order[d] for d in mb.digests]
    np.testing.assert_array_equal(fa.features[perm], fb.features)


def test_changed_label_is_a_manifest_change_features_reused(orl_pair, tmp_path):
    _, flat, table = orl_pair
    rows = list(csv.DictReader(table.open()))
    first = _write_csv(tmp_path / "a.csv", rows)
    extract(flat, tmp_path / "s.zarr", _opts(labels=LabelSource(first)))
    rows[0]["class"] = rows[1]["class"] if rows[1]["class"] != rows[0]["class"] else rows[2]["class"]
    second = _write_csv(tmp_path / "b.csv", rows)
    result = extract(flat, tmp_path / "s.zarr", _opts(labels=LabelSource(second)))
    assert result.configs[0].extracted == 0 and result.configs[0].reused == 40
    m = open_store(tmp_path / "s.zarr").manifest()
    i = m.paths.index(rows[0]["filename"])
    assert m.classes[m.labels[i]] == rows[0]["class"]


def _grouped_tree(root: Path, groups: int, per_group: int = 3, start: int = 0) -> Path:
    from conftest import make_image
    for g in range(start, start + groups):
        for i in range(per_group):
            make_image(root / ("a" if g % 2 else "b") / f"patient{g:03d}_{i}.png", (40 * (g % 5), 90, 200), 1000 * g + i)
    return root


def test_groups_stay_in_one_split_and_new_groups_move_nothing(tmp_path):
    data = _grouped_tree(tmp_path / "d", 30)
    m1 = scan(data, group_by=r"patient(\d+)_")
    assert m1.groups is not None and len(set(m1.groups)) == 30
    split_of: dict[str, set[int]] = {}
    for g, s in zip(m1.groups, m1.splits.tolist(), strict=True):
        split_of.setdefault(g, set()).add(s)
    assert all(len(s) == 1 for s in split_of.values()) and len({next(iter(s)) for s in split_of.values()}) > 1
    _grouped_tree(data, 5, start=30)
    m2 = scan(data, group_by=r"patient(\d+)_")
    before = dict(zip(m1.paths, m1.splits.tolist(), strict=True))
    after = dict(zip(m2.paths, m2.splits.tolist(), strict=True))
    assert all(after[p] == s for p, s in before.items()) and len(after) == len(before) + 15
    extract(data, tmp_path / "s.zarr", _opts(group_by=r"patient(\d+)_"))
    assert open_store(tmp_path / "s.zarr").manifest().groups == m2.groups


def test_image_id_without_extension(tmp_path):
    data = make_tree(tmp_path / "d", per_class=2)
    ids = [p.relative_to(data).with_suffix("").as_posix() for p in sorted(data.rglob("*.*"))]
    table = _write_csv(tmp_path / "t.csv", [{"image_id": i, "label": i.split("/")[0]} for i in ids])
    m = scan(data, labels=LabelSource(table))
    assert [Path(p).with_suffix("").as_posix() for p in m.paths] == sorted(ids)
    shutil.copy(data / m.paths[0], (data / m.paths[0]).with_suffix(".tif"))
    with pytest.raises(FeatcacheError, match="matches several files"):
        scan(data, labels=LabelSource(table))


BAD = {
    "missing": ([{"path": f"red/nope{i}.png", "label": "red"} for i in range(12)], "12 listed image", ()),
    "outside": ([{"path": "../elsewhere.png", "label": "red"}], "outside the data folder", ()),
    "conflict": ([{"path": "red/red_000.png", "label": "red"}, {"path": "red/red_000.png", "label": "blue"}],
                 "different labels", ()),
    "empty": ([{"path": "red/red_000.png", "label": ""}], "empty label", ()),
    "column": ([{"picture": "red/red_000.png", "label": "red"}], "columns found: picture, label", ()),
    "split": ([{"path": "red/red_000.png", "label": "red", "split": "dev"}], "'dev' is not train", ()),
    "straddle": ([{"path": "red/red_000.png", "label": "red", "split": "train", "group": "g1"},
                  {"path": "red/red_001.jpg", "label": "red", "split": "test", "group": "g1"}],
                 "group g1 is in the train and test splits", ()),
    "named_column": ([{"path": "red/red_000.png", "label": "red"}], "--label-column: .* no column kind",
                     ("--label-column", "kind")),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_label_files(tmp_path, case):
    rows, message, extra = BAD[case]
    data = make_tree(tmp_path / "d", per_class=2)
    table = _write_csv(tmp_path / "t.csv", rows)
    store = tmp_path / "s.zarr"
    r = CliRunner().invoke(cli, ["extract", str(data), "--store", str(store), "-b", TINY, "--weights", "random",
                                 "-q", "--labels", str(table), *extra])
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and __import__("re").search(message, lines[0]), r.output
    assert not store.exists()


def test_ambiguous_image_id_via_cli(tmp_path):
    data = make_tree(tmp_path / "d", per_class=1)
    shutil.copy(data / "red" / "red_000.png", data / "red" / "red_000.jpg")
    table = _write_csv(tmp_path / "t.csv", [{"image_id": "red/red_000", "label": "red"}])
    r = CliRunner().invoke(cli, ["extract", str(data), "--store", str(tmp_path / "s.zarr"), "-b", TINY,
                                 "--weights", "random", "-q", "--labels", str(table)])
    assert r.exit_code == 2 and "matches several files" in r.output and not (tmp_path / "s.zarr").exists()


def test_a_parquet_table_reads_as_its_csv(tmp_path):
    """The same rows as Parquet (pyarrow) and as CSV give the same manifest; a list column holds
    label sets; a file that is not Parquet is one clear error."""
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    data = make_tree(tmp_path / "d", per_class=2)
    rows = [{"path": p.relative_to(data).as_posix(), "label": p.parent.name, "split": ["train", "test"][i % 2]}
            for i, p in enumerate(sorted(data.rglob("*.*")))]
    csv_table = _write_csv(tmp_path / "t.csv", rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    a, b = scan(data, labels=LabelSource(csv_table)), scan(data, labels=LabelSource(tmp_path / "t.parquet"))
    assert (a.paths, a.classes, a.labels.tolist(), a.splits.tolist()) == (b.paths, b.classes, b.labels.tolist(),
                                                                          b.splits.tolist())
    sets = [{"path": r["path"], "labels": ["x", r["label"]]} for r in rows]
    pq.write_table(pa.Table.from_pylist(sets), tmp_path / "sets.parquet")
    multi = scan(data, labels=LabelSource(tmp_path / "sets.parquet"))
    assert multi.multilabel and multi.classes == ["blue", "green", "red", "x"]
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(FeatcacheError, match="cannot be read as Parquet"):
        scan(data, labels=LabelSource(tmp_path / "bad.parquet"))

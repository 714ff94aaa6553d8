"""Issue 22 point 2: several labels per image, end to end on real photos.

Canvases of two or three ORL faces side by side (tests/multilabel_data.py), labelled with the
people present in a labels.csv of ``|``-delimited cells, extracted by the CLI with the tiny test
backbone, then fit-head (logreg one-vs-rest, mlp with sigmoid outputs), predict and the exported
.keras; the cell formats, the errors, and stores written before multi-label.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, make_tree
from multilabel_data import make_canvases, write_json_and_columns

from featcache.cli import cli
from featcache.errors import ParameterError
from featcache.ingest.label_file import LabelSource, read_label_file
from featcache.ingest.scan import scan
from featcache.stores import open_store
from featcache.stores.checksum import record_digest
from featcache.train.run import load_run

PEOPLE, CANVASES = 6, 60


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def faces(orl_dir, tmp_path_factory):
    """60 canvases of 2-3 of 6 ORL people, their labels.csv, the store extract made of them, and
    a logreg and an mlp run fitted on it by the CLI."""
    base = tmp_path_factory.mktemp("faces")
    table, rows = make_canvases(orl_dir, base / "flat", people=PEOPLE, canvases=CANVASES)
    store = base / "s.zarr"
    r = invoke("extract", str(base / "flat"), "--store", str(store), "-b", TINY, "--weights", "random",
               "--labels", str(table), "--image-size", "96", "-q")
    assert r.exit_code == 0, r.output
    runs, fits = {}, {}
    # 38 training canvases of 16-d random-conv features: the mlp's 0.5 dropout (Innolitics' default,
    # for thousands of images) leaves it near chance; a light dropout and a larger step learn them
    for head, extra in (("logreg", ()), ("mlp", ("--epochs", "60", "--dropout", "0.1", "--lr", "0.01"))):
        runs[head] = base / f"run_{head}"
        r = invoke("fit-head", str(store), "--head", head, "--out", str(runs[head]), "-q", "--json", *extra)
        assert r.exit_code == 0, r.output
        fits[head] = json.loads(r.output)
    return {"base": base, "flat": base / "flat", "table": table, "rows": rows, "store": store, "runs": runs,
            "fits": fits}


def test_the_store_records_each_canvas_label_set(faces):
    m = open_store(faces["store"]).manifest()
    assert m.multilabel and m.classes == sorted({c for _, labels in faces["rows"] for c in labels})
    assert m.label_sets.shape == (CANVASES, PEOPLE) and m.label_sets.dtype == np.uint8
    truth = dict(faces["rows"])
    for path, row, first in zip(m.paths, m.label_sets, m.labels, strict=True):
        assert tuple(c for c, on in zip(m.classes, row, strict=True) if on) == truth[path]
        assert m.classes[first] == truth[path][0]  # `label` keeps the first label


@pytest.mark.parametrize("head", ["logreg", "mlp"])
def test_fit_head_reaches_a_mean_average_precision_well_above_chance(faces, head):
    m = open_store(faces["store"]).manifest()
    fit = faces["fits"][head]
    val = fit["validation"]
    chance = float(m.label_sets[m.splits == 1].mean())  # a random ranking's AP: the label frequency
    floor = {"logreg": 0.75, "mlp": 0.6}[head]
    assert val["multilabel"] and val["mean_ap"] >= max(floor, chance + 0.15), (val["mean_ap"], chance)
    assert 0 < val["micro_ap"] <= 1 and 0 < val["f1_macro"] <= 1 and 0 <= val["subset_accuracy"] <= 1
    assert len(val["per_class"]) == PEOPLE and all(0 <= c["threshold"] <= 1 for c in val["per_class"])
    metrics = json.loads((faces["runs"][head] / "metrics.json").read_text())
    assert metrics["multilabel"] and metrics["validation"]["mean_ap"] == val["mean_ap"]
    # the thresholds are chosen on validation and recorded in the run folder, bound by its digests
    run = load_run(faces["runs"][head])
    assert run.config.multilabel and run.config.thresholds == fit["thresholds"]
    assert run.config.thresholds == [c["threshold"] for c in val["per_class"]]
    assert not list(faces["runs"][head].glob("confusion_*.png"))


def test_fit_head_prints_the_multilabel_metrics(faces, tmp_path):
    r = invoke("fit-head", str(faces["store"]), "--head", "logreg", "--C", "0.1", "--out", str(tmp_path / "r"), "-q")
    assert r.exit_code == 0, r.output
    assert "validation mAP" in r.output and "subset accuracy" in r.output and "thresholds" in r.output


def test_changed_thresholds_in_config_json_are_refused(faces, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(faces["runs"]["logreg"], run)
    config = json.loads((run / "config.json").read_text())
    config["thresholds"][0] = 0.99
    (run / "config.json").write_text(json.dumps(config))
    r = invoke("predict", str(run), str(next(faces["flat"].iterdir())), "-q")
    assert r.exit_code != 0 and "changed after the run was written" in r.output


def test_predict_gives_label_sets_and_the_keras_export_the_same_probabilities(faces, tmp_path):
    files = sorted(faces["flat"].iterdir())[:6]
    run = faces["runs"]["mlp"]
    r = invoke("predict", str(run), *map(str, files), "--json", "-q")
    assert r.exit_code == 0, r.output
    records = json.loads(r.output)
    thresholds = load_run(run).config.thresholds
    classes = open_store(faces["store"]).manifest().classes
    for rec in records:
        assert set(rec["probabilities"]) == set(classes) and rec["error"] is None
        assert rec["labels"] == [c for c, t in zip(classes, thresholds, strict=True) if rec["probabilities"][c] >= t]
    # per-class probabilities, not a distribution: they need not sum to 1
    assert any(abs(sum(rec["probabilities"].values()) - 1) > 0.05 for rec in records)
    r = invoke("predict", str(run), *map(str, files), "--csv", "-q")
    rows = list(csv.reader(r.output.splitlines()))
    assert rows[0] == ["path", "labels", "error", *classes]
    assert [row[1] for row in rows[1:]] == ["|".join(rec["labels"]) for rec in records]

    model = tmp_path / "clf.keras"
    r = invoke("export", str(run), "--out", str(model), "-q")
    assert r.exit_code == 0, r.output
    sidecar = json.loads((tmp_path / "clf.keras.labels.json").read_text())
    assert sidecar["multilabel"] and sidecar["thresholds"] == thresholds
    r = invoke("predict", str(model), *map(str, files), "--json", "-q")
    exported = json.loads(r.output)
    for a, b in zip(records, exported, strict=True):
        np.testing.assert_allclose([a["probabilities"][c] for c in classes],
                                   [b["probabilities"][c] for c in classes], atol=1e-5)
        assert a["labels"] == b["labels"]
    import keras  # plain Keras, no featcache: the outputs are sigmoids

    plain = keras.saving.load_model(model, compile=False)
    assert plain.layers[-1].get_config().get("activation") == "sigmoid" or any(
        layer.get_config().get("activation") == "sigmoid" for layer in plain.layers[-1].layers)


def test_a_head_without_multilabel_support_and_calibration_are_refused(faces, tmp_path):
    r = invoke("fit-head", str(faces["store"]), "--head", "zeroshot", "--out", str(tmp_path / "z"), "-q")
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert "error: --head: the store has several labels per image" in r.output and "logreg" in r.output
    r = invoke("fit-head", str(faces["store"]), "--head", "logreg", "--calibrate", "--out", str(tmp_path / "c"), "-q")
    assert r.exit_code == 2 and "--calibrate" in r.output


def test_the_three_cell_formats_give_the_same_label_sets(faces):
    expected = {name: labels for name, labels in faces["rows"]}
    tables = write_json_and_columns(faces["rows"], faces["base"])
    classes = sorted({c for labels in expected.values() for c in labels})
    sources = [LabelSource(faces["table"]), LabelSource(tables[0]), LabelSource(tables[1]),
               LabelSource(tables[2], label_columns=tuple(classes))]
    for source in sources:
        table = read_label_file(source, faces["flat"])
        assert table.multilabel and {r.path: r.labels for r in table.rows} == expected, source
    m = scan(faces["flat"], labels=LabelSource(tables[2], label_columns=",".join(classes)))
    assert m.classes == classes and m.label_sets.sum() == sum(len(v) for v in expected.values())


def _table(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_delimiters_empty_sets_and_single_label_tables(tmp_path):
    data = make_tree(tmp_path / "d", per_class=2)
    files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.*"))
    t = _table(tmp_path / "semi.csv", ["path", "labels"], [[files[0], "cat; dog"], [files[1], ""], [files[2], "dog"]])
    rows = read_label_file(LabelSource(t, label_delimiter=";"), data).rows
    assert [r.labels for r in rows] == [("cat", "dog"), (), ("dog",)]  # an empty set: multi-label only
    t = _table(tmp_path / "space.csv", ["path", "labels"], [[files[0], "cat  dog"], [files[1], "dog"]])
    assert read_label_file(LabelSource(t, label_delimiter=" "), data).rows[0].labels == ("cat", "dog")
    t = _table(tmp_path / "one.csv", ["path", "labels"], [[files[0], "cat"], [files[1], "dog"]])
    table = read_label_file(LabelSource(t), data)  # one label each: single-label, as before
    assert not table.multilabel and scan(data, labels=table).label_sets is None
    forced = read_label_file(LabelSource(t, multilabel=True), data)
    assert forced.multilabel and scan(data, labels=forced).label_sets.tolist() == [[1, 0], [0, 1]]
    t = _table(tmp_path / "blank.csv", ["path", "labels"], [[files[0], "cat"], [files[1], ""]])
    with pytest.raises(ParameterError, match="has an empty labels"):  # single-label: a blank is an error
        read_label_file(LabelSource(t), data)


def test_bad_label_columns_and_cells_are_one_clear_error_and_no_store(tmp_path):
    data = make_tree(tmp_path / "d", per_class=2)
    files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.*"))
    t = _table(tmp_path / "cols.csv", ["path", "A", "B"], [[files[0], 1, 0], [files[1], 0, 2]])
    store = tmp_path / "s.zarr"
    cases = [
        (["--label-columns", "A,B"], "error: --labels: ", "column B holds '2', not 0 or 1"),
        (["--label-columns", "A,C"], "error: --label-columns: ", "has no column C; columns found: path, A, B"),
    ]
    for args, start, says in cases:
        r = invoke("extract", str(data), "--store", str(store), "-b", TINY, "--weights", "random",
                   "--labels", str(t), "-q", *args)
        assert r.exit_code == 2 and r.output.startswith(start) and says in r.output, r.output
        assert r.output.count("\n") == 1 and not store.exists()
    bad = _table(tmp_path / "json.csv", ["path", "labels"], [[files[0], '["a", "b"'], [files[1], "a"]])
    with pytest.raises(ParameterError, match="not a JSON list"):
        read_label_file(LabelSource(bad), data)
    none = _table(tmp_path / "none.csv", ["path", "labels"], [[files[0], "[]"], [files[1], "[]"]])
    with pytest.raises(ParameterError, match="no listed image has a label"):
        read_label_file(LabelSource(none), data)


def test_a_single_label_store_is_written_and_read_as_before(faces, tmp_path):
    """No label_set array and no multilabel attribute: the image list's attributes digest is the
    one featcache wrote before multi-label, so older stores still verify and read single-label."""
    data = make_tree(tmp_path / "d", per_class=3)
    store = tmp_path / "single.zarr"
    r = invoke("extract", str(data), "--store", str(store), "-b", TINY, "--weights", "random", "-q")
    assert r.exit_code == 0, r.output
    st = open_store(store)
    version = st.backend.get_attrs()["manifest"]
    attrs = st.backend.get_attrs(f"manifests/{version}")
    assert not st.backend.exists(f"manifests/{version}/label_set") and "multilabel" not in attrs
    old = {k: attrs[k] for k in ("classes", "data_root", "presplit", "split")}
    assert attrs["checksums"]["attributes"] == record_digest(old)
    m = st.manifest()
    assert not m.multilabel and m.label_sets is None and m.labels.min() >= 0
    rows = st.rows([st.keys()[0]])
    assert rows.label_sets is None and not rows.multilabel
    # and the multi-label store binds its flag: removing it is damage, not a single-label store
    ml = open_store(faces["store"])
    assert ml.backend.get_attrs(f"manifests/{ml.backend.get_attrs()['manifest']}")["multilabel"] is True


def test_a_changed_label_set_is_a_manifest_change_and_no_feature_is_recomputed(faces, tmp_path):
    import shutil

    store = tmp_path / "s.zarr"
    shutil.copytree(faces["store"], store)
    rows = list(csv.reader(faces["table"].open()))
    rows[1][1] = rows[1][1] + "|s1" if "s1" not in rows[1][1] else rows[1][1].replace("s1", "s2") + "|s3"
    changed = _table(tmp_path / "changed.csv", rows[0], rows[1:])
    r = invoke("extract", str(faces["flat"]), "--store", str(store), "-b", TINY, "--weights", "random",
               "--labels", str(changed), "--image-size", "96", "-q", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    assert result["configs"][0]["extracted"] == 0 and result["configs"][0]["reused"] == CANVASES
    m = open_store(store).manifest()
    i = m.paths.index(rows[1][0])
    assert tuple(c for c, on in zip(m.classes, m.label_sets[i], strict=True) if on) == tuple(
        sorted(set(rows[1][1].split("|"))))


def test_compare_ranks_multilabel_configurations_by_mean_average_precision(faces):
    r = invoke("compare", str(faces["store"]), "--head", "logreg", "--head", "linear", "-q", "--json")
    assert r.exit_code == 0, r.output
    board = json.loads(r.output)["leaderboard"]
    assert [e["head"] for e in board] and all(e["val_map"] is not None and e["test_map"] is not None for e in board)
    assert [e["val_map"] for e in board] == sorted((e["val_map"] for e in board), reverse=True)
    r = invoke("compare", str(faces["store"]), "--folds", "3", "-q")
    assert r.exit_code == 2 and r.output.startswith("error: --folds: ") and "several labels per image" in r.output


def test_tflite_export_gives_the_run_folders_per_class_probabilities(faces, tmp_path):
    run, model = faces["runs"]["logreg"], tmp_path / "m.tflite"
    r = invoke("export", str(run), "--out", str(model), "-q")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "m.tflite.labels.json").read_text())["multilabel"] is True
    files = [str(p) for p in sorted(faces["flat"].iterdir())[:5]]
    a, b = (json.loads(invoke("predict", str(m), *files, "--json", "-q").output) for m in (run, model))
    classes = sorted(a[0]["probabilities"])
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose([x["probabilities"][c] for c in classes], [y["probabilities"][c] for c in classes],
                                   atol=1e-4)
        assert x["labels"] == y["labels"]


def test_streamed_features_train_the_sigmoid_mlp_and_logreg_refuses_clearly(faces):
    from featcache.heads import make_head
    from featcache.train.fit import fit_head

    r = fit_head(faces["store"], [], make_head("mlp", {"epochs": 3}), progress=False, memory_limit="1KB")
    assert r.memory.streamed and r.multilabel and len(r.thresholds) == PEOPLE and 0 < r.val.mean_ap <= 1
    with pytest.raises(ParameterError, match="multi-label logreg fits one classifier per class") as err:
        fit_head(faces["store"], [], "logreg", progress=False, memory_limit="1KB")
    assert err.value.param == "solver"


def test_knn_votes_per_label_and_its_keras_head_agrees(faces):
    from featcache.heads import make_head
    from featcache.train.fit import fit_head

    r = fit_head(faces["store"], [], make_head("knn", {"k": 5}), progress=False)
    m = open_store(faces["store"]).manifest()
    chance = float(m.label_sets[m.splits == 1].mean())
    assert r.multilabel and r.val.mean_ap > chance + 0.1, (r.val.mean_ap, chance)
    X = np.random.default_rng(0).normal(size=(7, r.input_dim)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(r.head.to_keras()(X)), r.head.predict_proba(X), atol=1e-5)

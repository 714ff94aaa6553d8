"""Export and predict: the backbone re-attached to a trained head gives the numbers fit-head gave."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_tree

from featcache.cli import cli
from featcache.extraction import ExtractOptions, extract
from featcache.heads import make_head
from featcache.ingest.augment import AugmentParams
from featcache.serve.export import export
from featcache.serve.predict import load_classifier
from featcache.stores import open_store
from featcache.train.fit import fit_head
from featcache.train.run import load_run

FAST = {"mlp": {"epochs": 5}, "linear": {"epochs": 5}, "logreg": {}}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """float32 features of the tiny backbone at two input sizes (two configs) on 3 x 12 images."""
    root = tmp_path_factory.mktemp("inference")
    data = make_tree(root / "data", per_class=12)
    path = root / "s.zarr"
    for size in (32, 48):
        extract(data, path, ExtractOptions(backbones=["tiny_test"], weights="random", image_size=size, dtype="float32", split="50/20/30", augment=AugmentParams(augmented_views=1), progress=False))
    return path


def _keys(store_path: Path) -> list[str]:
    with open_store(store_path) as st:
        return sorted(st.keys(), key=lambda k: st.config(k).backbone.input_size)


def _test_split(store_path: Path, keys: list[str]) -> tuple[list[str], np.ndarray]:
    """Absolute paths of the test images and their cached view-0 (concatenated) features."""
    with open_store(store_path) as st:
        fs = st.load(keys)
        root = st.manifest().data_root
    idx = fs.indices("test")
    return [f"{root}/{fs.paths[i]}" for i in idx], fs.features[idx, 0]


def _probs(preds) -> np.ndarray:
    assert all(p.error is None for p in preds)
    return np.array([p.probabilities for p in preds])


@pytest.mark.parametrize("head", ["mlp", "linear", "logreg"])
def test_exported_model_reproduces_fit_head_probabilities(store, tmp_path, head):
    key = _keys(store)[:1]
    fit_head(store, key, make_head(head, FAST[head]), tmp_path / "run", progress=False)
    paths, feats = _test_split(store, key)
    assert len(paths) >= 3
    expected = load_run(tmp_path / "run").head.predict_proba(feats)

    from_run = _probs(load_classifier(tmp_path / "run").predict(paths))
    assert np.abs(from_run - expected).max() <= 1e-4

    exported = export(tmp_path / "run", tmp_path / "clf.keras")
    assert json.loads((tmp_path / "clf.keras.labels.json").read_text())["classes"] == ["blue", "green", "red"]
    reloaded = load_classifier(exported)
    assert reloaded.classes == ["blue", "green", "red"]
    assert np.abs(_probs(reloaded.predict(paths)) - expected).max() <= 1e-4


def test_multi_backbone_export_runs_every_backbone(store, tmp_path):
    keys = _keys(store)
    fit_head(store, keys, "logreg", tmp_path / "run", progress=False)
    paths, feats = _test_split(store, keys)
    assert feats.shape[1] == 32  # 16 + 16 concatenated
    expected = load_run(tmp_path / "run").head.predict_proba(feats)
    clf = load_classifier(export(tmp_path / "run", tmp_path / "multi.keras"))
    assert clf.input_sizes == [32, 48]
    assert [t.name for t in clf.model.inputs] == ["image_32", "image_48"]
    assert np.abs(_probs(clf.predict(paths)) - expected).max() <= 1e-4


def test_exported_model_accepts_uint8_and_float_batches(store, tmp_path):
    fit_head(store, _keys(store)[:1], "logreg", tmp_path / "run", progress=False)
    clf = load_classifier(export(tmp_path / "run", tmp_path / "clf.keras"))
    batch = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    p_uint8 = np.asarray(clf.model.predict_on_batch(batch))
    p_float = np.asarray(clf.model.predict_on_batch(batch.astype(np.float32)))
    assert p_uint8.shape == (2, 3) and np.allclose(p_uint8.sum(1), 1, atol=1e-5)
    assert np.allclose(p_uint8, p_float, atol=1e-6)


@pytest.fixture
def run_dir(store, tmp_path) -> Path:
    fit_head(store, _keys(store)[:1], "logreg", tmp_path / "run", progress=False)
    return tmp_path / "run"


def test_predict_cli_reports_bad_files_and_predicts_the_rest(run_dir, tmp_path):
    folder = make_tree(tmp_path / "new", per_class=2, start_seed=500)
    (folder / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = CliRunner().invoke(cli, ["predict", str(run_dir), str(folder), "--json", "-q"])
    assert result.exit_code == 1
    records = json.loads(result.stdout)
    assert len(records) == 7
    broken = [r for r in records if r["path"].endswith("broken.png")]
    assert broken[0]["error"] and broken[0]["label"] is None
    good = [r for r in records if not r["error"]]
    assert len(good) == 6 and all(r["label"] in {"red", "green", "blue"} for r in good)
    assert "1 of 7 files could not be read" in result.stderr


def test_predict_cli_table_csv_all_classes_and_folder_accuracy(run_dir, tmp_path):
    folder = make_tree(tmp_path / "new", per_class=3, start_seed=900)
    exported = tmp_path / "clf.keras"
    assert CliRunner().invoke(cli, ["export", str(run_dir), "--out", str(exported)]).exit_code == 0

    table = CliRunner().invoke(cli, ["predict", str(exported), str(folder), "--top-k", "0", "--folder-labels"])
    assert table.exit_code == 0, table.output
    lines = [line for line in table.stdout.splitlines() if line.startswith(str(folder))]
    assert len(lines) == 9 and all(all(c in line for c in ("red", "green", "blue")) for line in lines)
    accuracy = [line for line in table.stdout.splitlines() if line.startswith("accuracy")]
    assert accuracy and float(accuracy[0].rsplit("=", 1)[1]) >= 0.66
    correct = int(accuracy[0].split()[1].split("/")[0])
    wrong = [line for line in lines if "WRONG (folder: " in line]  # each miss is marked, naming its folder
    assert len(wrong) == 9 - correct
    assert all(line.split("WRONG (folder: ")[1].rstrip(")") in line.split()[0] for line in wrong)

    as_csv = CliRunner().invoke(cli, ["predict", str(exported), str(folder), "--csv", "--top-k", "2"])
    rows = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert rows[0] == ["path", "label", "confidence", "error", "class1", "prob1", "class2", "prob2"]
    assert len(rows) == 10


def test_predict_rejects_what_is_not_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "empty", tmp_path / "nothing.keras"):
        result = CliRunner().invoke(cli, ["predict", str(target), str(tmp_path)])
        assert result.exit_code == 2 and "Traceback" not in result.output


def test_real_backbone_export_matches_cached_features(orl_dir, tmp_path):
    """The user's path: real efficientnet_lite0 on real photos, float32 store, export, predict."""
    data = tmp_path / "faces"
    for person in sorted(orl_dir.iterdir())[:6]:
        if person.is_dir():
            (data / person.name).mkdir(parents=True)
            for photo in sorted(person.glob("*.pgm")):
                (data / person.name / photo.name).write_bytes(photo.read_bytes())
    store = tmp_path / "faces.zarr"
    extract(data, store, ExtractOptions(backbones=["efficientnet_lite0"], dtype="float32", split="60/10/30", progress=False))
    fit_head(store, ["efficientnet_lite0"], "logreg", tmp_path / "run", progress=False)
    paths, feats = _test_split(store, ["efficientnet_lite0"])
    expected = load_run(tmp_path / "run").head.predict_proba(feats)
    got = _probs(load_classifier(export(tmp_path / "run", tmp_path / "faces.keras")).predict(paths))
    assert np.abs(got - expected).max() <= 1e-4
    truth = [Path(p).parent.name for p in paths]
    classes = load_run(tmp_path / "run").config.classes
    assert np.mean([classes[i] == t for i, t in zip(got.argmax(1), truth, strict=True)]) >= 0.9

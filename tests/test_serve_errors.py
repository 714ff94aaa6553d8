"""Export, predict and run folders against careless and hostile input: every problem is one clear
error (exit 2 through the CLI) that names the file and the problem, never a traceback, and never a
label drawn from numbers that are not class probabilities."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, make_image, make_tree

from featcache.cli import cli
from featcache.extraction import ExtractOptions, extract
from featcache.heads import make_head
from featcache.train.fit import fit_head

COLOURS = {"red": (200, 40, 40), "blue": (40, 60, 200)}


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _refused(result, *messages: str) -> None:
    """Exit 2 with one clear message; a raw exception would give exit 1 (CliRunner catches it)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    for message in messages:
        assert message in result.output


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A logreg and a linear run folder of the tiny backbone (32 px) on 2 classes x 6 images."""
    root = tmp_path_factory.mktemp("serve_errors")
    store = root / "s.zarr"
    extract(make_tree(root / "data", per_class=6, classes=COLOURS), store,
            ExtractOptions(backbones=[TINY], weights="random", dtype="float32", split="60/20/20",
                           progress=False))
    heads = {"logreg": make_head("logreg"), "linear": make_head("linear", {"epochs": 1})}
    return {name: Path(fit_head(store, [TINY], head, root / name, progress=False).run_dir)
            for name, head in heads.items()}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for i, colour in enumerate(COLOURS.values()):
        make_image(folder / f"{i}.png", colour, 1000 + i)
    return folder


# -- run folders -----------------------------------------------------------------------------------

def test_fit_head_out_is_an_existing_file(runs, tmp_path):
    store = json.loads((runs["logreg"] / "config.json").read_text())["store"]["path"]
    (tmp_path / "taken").write_text("not a folder")
    _refused(_cli("fit-head", store, "-b", TINY, "--head", "logreg", "--out", tmp_path / "taken"),
             "--out:", "is a file")
    _refused(_cli("fit-head", store, "-b", TINY, "--head", "logreg", "--out", tmp_path / "taken" / "run"),
             "--out:", "taken")


def _tampered(runs, tmp_path, head: str = "logreg", edit=None) -> Path:
    """A copy of a run folder with its config.json passed through ``edit``, and without its
    integrity record (which refuses any edit: test_run_integrity.py), as a run folder written
    before integrity records: these are the checks such a folder still gets."""
    run = tmp_path / f"{head}_run"
    shutil.copytree(runs[head], run)
    cfg = json.loads((run / "config.json").read_text())
    cfg.pop("integrity")
    if edit is not None:
        edit(cfg)
    (run / "config.json").write_text(json.dumps(cfg))
    return run


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("head"), "missing 'head'"),
    (lambda c: c.pop("features"), "missing 'features'"),
    (lambda c: c.update(classes="blue,red"), "'classes' must be a list"),
    (lambda c: c.update(input_dim="sixteen"), "'input_dim' must be an integer"),
    (lambda c: c["head"].update(type="svm"), "unknown head 'svm'"),
    (lambda c: c["head"].update(params=[1, 2]), "'head.params' must be an object"),
    (lambda c: c["head"]["params"].update(max_iter=0), "max_iter"),
    (lambda c: c.update(features=[]), "'features' is empty"),
    (lambda c: c["features"][0].pop("backbone"), "features[0]"),
    (lambda c: c.update(classes=["blue", "green", "red"]), "3 classes"),
    (lambda c: c.update(classes=["blue", "blue"]), "twice"),
    (lambda c: c["features"][0]["backbone"].update(name="no_such_backbone"), "cannot rebuild its model"),
    (lambda c: c["features"].append(c["features"][0]), "the head takes features of shape (16,)"),
])
def test_tampered_run_config_is_refused(runs, images, tmp_path, edit, message):
    run = _tampered(runs, tmp_path, edit=edit)
    _refused(_cli("predict", run, images), str(run), message)


def test_tampered_run_config_is_refused_by_export(runs, tmp_path):
    run = _tampered(runs, tmp_path, edit=lambda c: c.update(features=[]))
    _refused(_cli("export", run, "--out", tmp_path / "m.keras"), str(run), "'features' is empty")
    assert not (tmp_path / "m.keras").exists()


def test_run_config_that_is_not_json(runs, images, tmp_path):
    run = _tampered(runs, tmp_path)
    (run / "config.json").write_text('{"head": ')
    _refused(_cli("predict", run, images), str(run / "config.json"), "not valid JSON")


def test_bad_head_parameter_is_not_worded_as_a_predict_flag(runs, images, tmp_path):
    # the linear head's batch_size must not come out as predict's own --batch-size
    run = _tampered(runs, tmp_path, "linear", lambda c: c["head"]["params"].update(batch_size=0))
    result = _cli("predict", run, images)
    _refused(result, str(run), "batch_size")
    assert "--batch-size" not in result.output


@pytest.mark.parametrize("head, name, message", [
    ("logreg", "logreg.npz", "not a NumPy .npz (zip) archive"),
    ("logreg", "logreg.json", "cannot load the logreg head"),
    ("linear", "head.keras", "not a Keras zip archive"),
])
def test_damaged_head_file_is_refused(runs, images, tmp_path, head, name, message):
    run = _tampered(runs, tmp_path, head)
    data = (run / name).read_bytes()
    (run / name).write_bytes(data[: len(data) // 2])
    _refused(_cli("predict", run, images), str(run), message)


def test_missing_head_file_is_refused(runs, images, tmp_path):
    run = _tampered(runs, tmp_path)
    (run / "logreg.npz").unlink()
    _refused(_cli("predict", run, images), str(run), "missing logreg.npz")


# -- export ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("out, message", [
    ("folder", "is a folder"), ("folder.keras", "is a folder"), ("model.h5", "must end in .keras"),
    ("file.txt/model.keras", "is a file"),
])
def test_export_refuses_a_bad_output_path(runs, tmp_path, out, message):
    for folder in ("folder", "folder.keras"):
        (tmp_path / folder).mkdir()
    (tmp_path / "file.txt").write_text("a file")
    _refused(_cli("export", runs["logreg"], "--out", tmp_path / out), "--out:", message)


# -- foreign and damaged .keras files --------------------------------------------------------------

def _save_model(path: Path, input_shape=(8, 8, 3), activation="softmax", nan=False,
                sidecar: object = ("cat", "dog")) -> Path:
    """A small Keras model (2 outputs) of the kind someone else trains, with a sidecar holding
    ``sidecar`` (a class list, other JSON, or raw text)."""
    import keras

    inputs = keras.Input(input_shape)
    dense = keras.layers.Dense(2, activation=activation, kernel_initializer=keras.initializers.GlorotUniform(seed=1))
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    if nan:
        dense.set_weights([np.full(w.shape, np.nan, np.float32) for w in dense.get_weights()])
    model.save(path)
    return _write_sidecar(path, sidecar)


def _write_sidecar(path: Path, sidecar: object = ("cat", "dog")) -> Path:
    text = sidecar if isinstance(sidecar, str) else json.dumps(
        {"classes": list(sidecar)} if isinstance(sidecar, tuple) else sidecar)
    path.with_suffix(".labels.json").write_text(text)
    return path


def test_foreign_model_with_a_sidecar_predicts(images, tmp_path):
    result = _cli("predict", _save_model(tmp_path / "m.keras"), images, "--json")
    assert result.exit_code == 0, result.output
    assert {r["label"] for r in json.loads(result.stdout)} <= {"cat", "dog"}


@pytest.mark.parametrize("model, message", [
    ({"input_shape": (None, None, 3)}, "no fixed image size"),
    ({"input_shape": (8, 8, 1)}, "1 channel"),
    ({"input_shape": (8, 12, 3)}, "not square"),
    ({"sidecar": ("cat",)}, "names 1 class"),
    ({"sidecar": ("cat", "dog", "eel")}, "names 3 classes"),
    ({"activation": None}, "not class probabilities"),
    ({"sidecar": "{not json"}, "not valid JSON"),
    ({"sidecar": {"labels": ["cat", "dog"]}}, 'no "classes"'),
    ({"sidecar": ["cat", "dog"]}, 'no "classes"'),
    ({"sidecar": {"classes": "cat,dog"}}, '"classes" must be a list'),
])
def test_unusable_keras_model_is_refused(images, tmp_path, model, message):
    path = _save_model(tmp_path / "m.keras", **model)
    _refused(_cli("predict", path, images), str(tmp_path / "m"), message)


@pytest.mark.filterwarnings("ignore:You are saving a model that has not yet been built")
def test_keras_model_saved_unbuilt_is_refused(images, tmp_path):
    import keras

    keras.Sequential([keras.layers.Dense(2, activation="softmax")]).save(tmp_path / "m.keras")
    path = _write_sidecar(tmp_path / "m.keras")
    _refused(_cli("predict", path, images), str(path), "no input shape")


def test_nan_probabilities_never_give_a_label(images, tmp_path):
    result = _cli("predict", _save_model(tmp_path / "m.keras", nan=True), images, "--json")
    assert result.exit_code == 1 and "Traceback" not in result.output
    records = json.loads(result.stdout)
    assert records and all(r["label"] is None and "NaN" in r["error"] for r in records)


@pytest.mark.parametrize("content", [b"hello, not a model", b"PK\x03\x04 truncated"])
def test_keras_file_that_is_not_a_zip(images, tmp_path, content):
    (tmp_path / "m.keras").write_bytes(content)
    _refused(_cli("predict", tmp_path / "m.keras", images), str(tmp_path / "m.keras"), "not a Keras zip archive")


def test_missing_model_path(images, tmp_path):
    _refused(_cli("predict", tmp_path / "nothing.keras", images), "nothing.keras", "does not exist")

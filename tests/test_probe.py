"""The probe options of fit-head (train/probe.py): test-time augmentation, temperature calibration,
refit on train + validation, per-backbone ensembles; and `predict --tta`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, make_tree

from featcache.cli import cli
from featcache.extraction import ExtractOptions, extract
from featcache.heads import clone, make_head
from featcache.ingest.augment import AugmentParams
from featcache.stores import open_store
from featcache.train.fit import fit_head, load_training_data
from featcache.train.probe import (
    ProbeOptions,
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    mean_over_views,
)
from featcache.train.run import load_run


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Tiny backbone at two input sizes (two configs), 2 augmented views, float32 features."""
    root = tmp_path_factory.mktemp("probe")
    data = make_tree(root / "data", per_class=14)
    for size in (32, 40):
        extract(data, root / "s.zarr", ExtractOptions(backbones=[TINY], weights="random", image_size=size,
                                                      dtype="float32", augment=AugmentParams(augmented_views=2),
                                                      progress=False))
    return root / "s.zarr"


def _keys(store):
    with open_store(store) as st:
        return sorted(st.keys(), key=lambda k: st.config(k).backbone.input_size)


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _test_files(store) -> list[str]:
    with open_store(store) as st:
        m = st.manifest()
        return [str(Path(m.data_root) / p) for p, s in zip(m.paths, m.splits, strict=True) if s == 2]


def test_ece_and_temperature_recover_known_values():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20000, 5))
    true_t = 2.0  # labels drawn from softmax(z / 2): softmax(z) is overconfident by exactly T = 2
    e = np.exp(logits / true_t)
    y = np.array([rng.choice(5, p=row / row.sum()) for row in e])
    overconfident = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    t = fit_temperature(overconfident, y)
    assert abs(t - true_t) < 0.1
    calibrated = apply_temperature(overconfident, t)
    assert expected_calibration_error(calibrated, y) < 0.02 < expected_calibration_error(overconfident, y)
    assert (calibrated.argmax(1) == overconfident.argmax(1)).all()  # a temperature never changes the class
    # hand-checked ECE: two bins, confidence 0.9 all right (gap 0.1), confidence 0.6 half right (gap 0.1)
    proba = np.array([[0.9, 0.1]] * 2 + [[0.6, 0.4]] * 2)
    assert expected_calibration_error(proba, np.array([0, 0, 0, 1])) == pytest.approx(0.1)


def test_tta_calibrate_refit_through_fit_head_and_predict(store, tmp_path):
    small = _keys(store)[0]
    r = _run("fit-head", store, "-b", small, "--head", "logreg", "--tta", "--calibrate", "--refit",
             "--out", tmp_path / "run", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    data = load_training_data(store, [small])
    assert out["probe"] == {"tta": True, "calibrate": True, "refit": True, "combine": "concat"}
    assert out["refit"]["images"] == len(data.y_train) + len(data.y_val)
    assert out["refit"]["params"] == {"C": out["training"]["C"]}  # the C validation chose, fixed
    run = load_run(tmp_path / "run")
    assert run.config.temperature == out["temperature"] != 1.0
    # the kept head is the refit one: trained on every view of train + validation
    assert run.head.n_rows_ == (len(data.y_train) + len(data.y_val)) * 3
    # the test score is TTA over the cached views, with the temperature
    proba = apply_temperature(mean_over_views(run.head.predict_proba, data.X_test_views), run.config.temperature)
    assert out["test"]["accuracy"] == pytest.approx(float(np.mean(proba.argmax(1) == data.y_test)))
    assert out["test"]["ece"] == pytest.approx(expected_calibration_error(proba, data.y_test))
    # predict --tta recomputes the same views from the files: the same probabilities
    r = _run("predict", tmp_path / "run", *_test_files(store), "--tta", "--top-k", "0", "--json", "-q")
    np.testing.assert_allclose(_probabilities(r, run.config.classes), proba, atol=1e-4)
    # the exported model carries the temperature (and loads without featcache's code)
    assert _run("export", tmp_path / "run", "--out", tmp_path / "m.keras").exit_code == 0
    r = _run("predict", tmp_path / "m.keras", *_test_files(store), "--top-k", "0", "--json", "-q")
    view0 = apply_temperature(run.head.predict_proba(data.X_test), run.config.temperature)
    np.testing.assert_allclose(_probabilities(r, run.config.classes), view0, atol=1e-4)


def _probabilities(result, classes) -> np.ndarray:
    """predict --json --top-k 0 records -> (n, C) probabilities in class order."""
    assert result.exit_code == 0, result.output
    by_class = {c: i for i, c in enumerate(classes)}
    return np.array([[t["probability"] for t in sorted(rec["top"], key=lambda t: by_class[t["class"]])]
                     for rec in json.loads(result.stdout)])


def test_refit_keeps_the_epochs_validation_chose(store):
    small = _keys(store)[0]
    head = make_head("linear", {"epochs": 20, "patience": 5})
    plain = fit_head(store, [small], head, progress=False)
    refit = fit_head(store, [small], clone(head), progress=False, probe=ProbeOptions(refit=True))
    assert refit.refit["params"] == {"epochs": plain.summary["best_epoch"]}
    assert refit.summary["epochs_trained"] == plain.summary["best_epoch"]  # no early stop: no validation
    assert refit.val.accuracy == plain.val.accuracy  # validation is scored before the refit


def test_ensemble_averages_per_backbone_heads(store, tmp_path):
    keys = _keys(store)
    r = _run("fit-head", store, "-b", keys[0], "-b", keys[1], "--head", "logreg", "--combine", "ensemble",
             "--out", tmp_path / "ens", "-q")
    assert r.exit_code == 0, r.output
    ens = load_run(tmp_path / "ens")
    alone = [fit_head(store, [k], "logreg", progress=False).head for k in keys]
    data = load_training_data(store, keys)
    d0 = data.dims[0]
    expected = (alone[0].predict_proba(data.X_test[:, :d0]) + alone[1].predict_proba(data.X_test[:, d0:])) / 2
    np.testing.assert_allclose(ens.head.predict_proba(data.X_test), expected, atol=1e-6)
    assert [m["features"] for m in json.loads((tmp_path / "ens" / "metrics.json").read_text())["training"][
        "members"]] == data.dims
    # predict rebuilds both backbones and averages the two heads inside one Keras model
    assert _run("export", tmp_path / "ens", "--out", tmp_path / "ens.keras").exit_code == 0
    for model in (tmp_path / "ens", tmp_path / "ens.keras"):
        r = _run("predict", model, *_test_files(store), "--top-k", "0", "--json", "-q")
        np.testing.assert_allclose(_probabilities(r, ens.config.classes), expected, atol=1e-4)


@pytest.mark.parametrize("args, message", [
    (["--combine", "ensemble"], "--combine: an ensemble needs features of two or more backbones"),
    (["--head", "ensemble"], "--combine ensemble"),
])
def test_probe_errors_name_the_flag(store, tmp_path, args, message):
    r = _run("fit-head", store, "-b", _keys(store)[0], "--head", "logreg", "--out", tmp_path / "r", *args)
    assert r.exit_code == 2 and message in r.output, r.output


def test_tta_without_views_is_refused(tmp_path):
    data = make_tree(tmp_path / "data", per_class=4)
    extract(data, tmp_path / "s.zarr", ExtractOptions(backbones=[TINY], weights="random", progress=False))
    r = _run("fit-head", tmp_path / "s.zarr", "-b", TINY, "--head", "logreg", "--tta", "--out", tmp_path / "r")
    assert r.exit_code == 2 and "--tta: the features have no augmented views" in r.output, r.output
    assert _run("fit-head", tmp_path / "s.zarr", "-b", TINY, "--head", "logreg", "--out", tmp_path / "r",
                "-q").exit_code == 0
    r = _run("predict", tmp_path / "r", str(data), "--tta")
    assert r.exit_code == 2 and "--tta:" in r.output and "nothing to average" in r.output, r.output


STREAMED = "4KB"  # under the probe store's features: 42 images x 3 views x 16 float32 per config, ~8 KB each


def _same_numbers(streamed, in_memory, atol: float) -> None:
    assert streamed.memory.streamed and not in_memory.memory.streamed
    for split in ("val", "test"):
        a, b = getattr(streamed, split), getattr(in_memory, split)
        assert a.accuracy == b.accuracy and a.confusion == b.confusion, split
        assert a.log_loss == pytest.approx(b.log_loss, abs=atol) and a.ece == pytest.approx(b.ece, abs=atol), split


@pytest.mark.parametrize("probe", [ProbeOptions(tta=True), ProbeOptions(refit=True), ProbeOptions(combine="ensemble"),
                                   ProbeOptions(tta=True, calibrate=True, refit=True, combine="ensemble")],
                         ids=["tta", "refit", "ensemble", "all"])
def test_probe_options_stream_under_a_memory_limit_with_the_numbers_of_memory(store, probe):
    """TTA (per-view probabilities, block by block), refit (one view of train + validation) and
    per-backbone ensembles (each member reads its own columns) read the store's view when the
    features do not fit: the same numbers as in memory. knn: its bank is the same rows whatever
    the order they were read in; logreg: the stacked solver over blocks in memory or streamed."""
    keys = _keys(store)
    for head, atol in (("knn", 1e-6), ("logreg", 1e-3)):
        params = {"k": 5} if head == "knn" else {"C": 1.0, "solver": "lbfgs"}
        mem = fit_head(store, keys, make_head(head, params), progress=False, probe=probe)
        streamed = fit_head(store, keys, make_head(head, params), progress=False, memory_limit=STREAMED, probe=probe)
        _same_numbers(streamed, mem, atol)
        assert streamed.refit == mem.refit and streamed.temperature == pytest.approx(mem.temperature, abs=atol)


def test_fit_head_tta_under_a_memory_limit_through_the_cli(store, tmp_path):
    small = _keys(store)[0]
    outs = []
    for extra in ((), ("--memory-limit", STREAMED)):
        r = _run("fit-head", store, "-b", small, "--head", "knn", "--tta", "--refit", "--out", tmp_path / f"r{len(extra)}",
                 "--json", *extra)
        assert r.exit_code == 0, r.output
        outs.append(json.loads(r.stdout))
    assert [o["memory"]["streamed"] for o in outs] == [False, True]
    assert outs[1]["test"]["accuracy"] == outs[0]["test"]["accuracy"]
    assert outs[1]["test"]["log_loss"] == pytest.approx(outs[0]["test"]["log_loss"], abs=1e-6)


def test_cross_validated_compare_streams_under_a_memory_limit_with_the_numbers_of_memory(store):
    from featcache.train.compare import compare
    from featcache.train.memory import parse_size, plan_memory

    small = _keys(store)[0]  # one config: the winner, scored on test, is then the same entry
    with open_store(store) as st:
        assert plan_memory(st.rows([small]), parse_size(STREAMED)).streamed
    runs = [compare(store, ["knn"], backbones=[small], folds=5, tta=True, progress=False, memory_limit=limit)
            for limit in (None, STREAMED)]
    mem, streamed = ({e.key: e for e in r.entries} for r in runs)
    assert mem.keys() == streamed.keys() and len(mem) == 1
    for key in mem:
        assert streamed[key].fold_accuracy == mem[key].fold_accuracy
        assert streamed[key].scores["log_loss"].mean == pytest.approx(mem[key].scores["log_loss"].mean, abs=1e-6)
    assert runs[1].winner_test == runs[0].winner_test is not None
    # the command line says the same
    r = _run("compare", store, "-b", small, "--head", "knn", "--folds", "5", "--tta", "--memory-limit", STREAMED,
             "--json", "-q")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["leaderboard"][0]["fold_accuracy"] == streamed[small].fold_accuracy


def test_compare_scores_held_out_images_over_their_views_with_tta(store):
    from featcache.train.compare import compare

    small = _keys(store)[0]
    one = compare(store, ["logreg"], backbones=[small], tta=True, progress=False)
    alone = fit_head(store, [small], "logreg", progress=False, probe=ProbeOptions(tta=True))
    assert one.entries[0].test_accuracy == alone.test_accuracy
    plain, tta = (compare(store, ["logreg"], backbones=[small], folds=3, tta=t, progress=False) for t in (False, True))
    assert tta.to_dict()["tta"] and not plain.to_dict()["tta"]
    assert tta.entries[0].scores["log_loss"].mean != plain.entries[0].scores["log_loss"].mean  # other probabilities

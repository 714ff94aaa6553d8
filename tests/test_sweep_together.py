"""A sweep trains its grid together (Keras heads in one graph, logreg's C in one solve, knn heads
on one bank) and picks what fitting each configuration alone picks."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic_store import write_synthetic_store

from featcache.heads import make_head
from featcache.train.fit import fit_on_data, load_training_data
from featcache.train.sweep import sweep

BACKBONE = "efficientnet_lite0"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sweep") / "s.zarr"
    write_synthetic_store(path, 1500, 32, views=2, n_classes=3, separation=0.6, chunk_rows=128)
    return path


def test_logreg_c_sweep_is_one_solve_and_picks_the_c_of_fitting_each_alone(store):
    grid = {"C": [1e-4, 1e-2, 1.0, 100.0]}
    result = sweep(store, [BACKBONE], "logreg", grid, progress=False)
    assert {t.group_size for t in result.trials} == {4} and len({t.group for t in result.trials}) == 1
    data = load_training_data(store, [BACKBONE])
    alone = {c: fit_on_data(data, make_head("logreg", {"C": c}), progress=False, evaluate_test=False).val.accuracy
             for c in grid["C"]}
    best_alone = max(alone, key=alone.get)
    assert result.best.params["C"] == best_alone
    assert abs(result.best.val.accuracy - alone[best_alone]) <= 0.01
    for t in result.trials:  # every C as good as alone
        assert abs(t.val.accuracy - alone[t.params["C"]]) <= 0.02


def test_keras_sweep_trains_together_and_picks_the_winner_of_fitting_each_alone(store):
    fixed = {"epochs": 5, "patience": 5, "batch_size": 64}
    grid = {"lr": [1e-6, 3e-2], "hidden": [16], "dropout": [0.2, 0.5]}  # lr 1e-6 barely moves in 5 epochs
    result = sweep(store, [BACKBONE], make_head("mlp", fixed), grid, progress=False)
    assert {t.group_size for t in result.trials} == {4}
    data = load_training_data(store, [BACKBONE])
    alone = {}
    for lr, dropout in ((1e-6, 0.5), (3e-2, 0.2)):  # two of the four, alone: the tests' time is short
        head = make_head("mlp", {**fixed, "lr": lr, "hidden": 16, "dropout": dropout})
        alone[(lr, dropout)] = fit_on_data(data, head, progress=False, evaluate_test=False).val.accuracy
    winner = max(alone, key=alone.get)
    assert result.best.params["lr"] == winner[0] == 3e-2
    together = {(t.params["lr"], t.params["dropout"]): t.val.accuracy for t in result.trials}
    for k, acc in alone.items():  # same batches, same initial weights and dropout masks: the same heads
        assert abs(together[k] - acc) <= 0.02, (k, together[k], acc)
    assert result.seconds > 0 and all(row["fit_seconds"] > 0 for row in result.leaderboard())


def test_knn_sweep_builds_one_bank_and_matches_fitting_each_alone(store):
    grid = {"k": [1, 5, 25], "weighting": ["softmax", "uniform"]}
    result = sweep(store, [BACKBONE], "knn", grid, progress=False)
    assert {t.group_size for t in result.trials} == {6} and len({t.group for t in result.trials}) == 1
    banks = {id(t.result.head.bank_) for t in result.trials}
    assert len(banks) == 1  # one array shared by the six heads, not six copies
    data = load_training_data(store, [BACKBONE])
    for t in result.trials:
        alone = fit_on_data(data, make_head("knn", t.params), progress=False, evaluate_test=False).val
        assert (t.val.accuracy, t.val.log_loss) == (alone.accuracy, alone.log_loss)

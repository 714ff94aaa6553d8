"""The fit-head / sweep / compare commands, through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TINY, make_image, make_tree

from featcache.cli import cli
from featcache.extraction import ExtractOptions, extract
from featcache.ingest.augment import AugmentParams


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    data = make_tree(root / "data", per_class=12)
    extract(data, root / "s.zarr", ExtractOptions(backbones=[TINY], weights="random", augment=AugmentParams(augmented_views=2), progress=False))
    return root / "s.zarr"


def _run(*args):
    # stderr kept apart: --json output must be clean JSON on stdout whatever the progress says
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_fit_head_json(store, tmp_path):
    r = _run("fit-head", store, "-b", TINY, "--head", "mlp", "--out", tmp_path / "run", "--epochs", 5,
             "--hidden", 16, "--dropout", 0.3, "--lr", 0.01, "--optimizer", "sgd", "--momentum", 0.9,
             "--batch-size", 8, "--patience", 3, "--seed", 7, "--tensorboard-dir", tmp_path / "tb", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["head"]["type"] == "mlp" and out["seed"] == 7
    assert out["head"]["params"] | {"hidden": 16, "dropout": 0.3, "lr": 0.01, "optimizer": "sgd",
                                    "momentum": 0.9, "batch_size": 8, "patience": 3} == out["head"]["params"]
    assert 0 <= out["validation"]["accuracy"] <= 1
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["head"]["params"]["hidden"] == 16 and cfg["seed"] == 7
    assert list((tmp_path / "tb").rglob("events.out.tfevents*"))


def test_fit_head_keeps_every_epoch_weights_when_asked(store, tmp_path):
    r = _run("fit-head", store, "-b", TINY, "--head", "linear", "--out", tmp_path / "run", "--epochs", 3,
             "--patience", 5, "--checkpoint-every-epoch", "-q")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "run").glob("weights.*.weights.h5")) == [
        "weights.01.weights.h5", "weights.02.weights.h5", "weights.03.weights.h5"]


def test_fit_head_human_summary(store, tmp_path):
    r = _run("fit-head", store, "-b", TINY, "--head", "logreg", "--out", tmp_path / "run", "--C", 0.5)
    assert r.exit_code == 0, r.output
    assert "validation accuracy" in r.stdout and str(tmp_path / "run") in r.stdout


@pytest.mark.parametrize("args, message", [
    (["-b", "resnet50", "--head", "logreg"], "no features for 'resnet50'"),
    (["-b", TINY, "--head", "svm"], "unknown head 'svm'"),
    (["-b", TINY, "--head", "logreg", "--hidden", "8"], "has no parameter 'hidden'"),
])
def test_fit_head_bad_input_exits_2(store, tmp_path, args, message):
    r = _run("fit-head", store, *args, "--out", tmp_path / "run")
    assert r.exit_code == 2
    assert message in r.stderr and "Traceback" not in r.output


def test_one_class_exits_2(tmp_path):
    for i in range(3):
        make_image(tmp_path / "data" / "cats" / f"{i}.png", (90, 90, 90), i)
    extract(tmp_path / "data", tmp_path / "s.zarr", ExtractOptions(backbones=[TINY], weights="random", progress=False))
    r = _run("fit-head", tmp_path / "s.zarr", "-b", TINY, "--head", "logreg", "--out", tmp_path / "run")
    assert r.exit_code == 2 and "at least two class" in r.stderr


def test_missing_store_exits_2(tmp_path):
    r = _run("fit-head", tmp_path / "nope.zarr", "-b", TINY, "--out", tmp_path / "run")
    assert r.exit_code == 2 and "does not exist" in r.stderr


def test_sweep_json(store, tmp_path):
    r = _run("sweep", store, "-b", TINY, "--head", "mlp", "--lr", "1e-2,1e-3", "--hidden", "8,16", "--epochs", "3",
             "--out", tmp_path / "sw", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert len(out["leaderboard"]) == 4 == out["trials"] and out["seconds"] >= out["fit_seconds"] > 0
    assert all(row["fit_seconds"] > 0 and row["group_size"] == 4 for row in out["leaderboard"])  # trained together
    accs = [row["val_accuracy"] for row in out["leaderboard"]]
    assert accs == sorted(accs, reverse=True)
    assert out["best"]["test_accuracy"] is not None and Path(out["best"]["run_dir"]).is_dir()
    assert (tmp_path / "sw" / "leaderboard.csv").is_file()


def test_sweep_bad_value_is_a_usage_error(store):
    r = _run("sweep", store, "-b", TINY, "--head", "mlp", "--lr", "fast")
    assert r.exit_code == 2 and "--lr: expected number, got 'fast'" in r.output


def test_compare_json_and_table(store, tmp_path):
    r = _run("compare", store, "--head", "logreg", "--head", "linear", "--out", tmp_path / "cmp", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["leaderboard"]
    assert {row["head"] for row in rows} == {"logreg", "linear"} and all(row["feature_dim"] == 16 for row in rows)
    assert (tmp_path / "cmp" / "compare.png").is_file() and (tmp_path / "cmp" / "report.html").is_file()
    r = _run("compare", store, "-q")
    assert r.exit_code == 0 and "val_accuracy" in r.stdout

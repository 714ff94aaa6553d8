"""featcache auto: a search over a real (tiny-backbone) store's configurations, heads and grids by
cross-validation on train + validation, ties to the cheapest, the test split read once by the winner,
a resumable leaderboard, a run folder predict accepts."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from conftest import TINY, make_tree

from featcache.auto import AutoOptions, auto, parse_budget
from featcache.auto import search as search_module
from featcache.auto.selection import select
from featcache.cli import cli
from featcache.errors import FeatcacheError, ParameterError
from featcache.extraction import ExtractOptions, extract
from featcache.ingest.augment import AugmentParams
from featcache.stores import open_store
from featcache.stores.errors import StoreDamagedError

HEADS = ("logreg", "knn")  # the fast heads: the Keras ones are searched the same way, only slower
TAP = f"{TINY}.conv1"


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def two_config_store(tmp_path_factory) -> Path:
    """Two configurations of one net (its final block, 16-d, and a tap, 8-d), one augmented view."""
    root = tmp_path_factory.mktemp("auto")
    data = make_tree(root / "data", per_class=8)
    extract(data, root / "s.zarr", ExtractOptions(backbones=[TINY], taps="conv1", weights="random", split="60/20/20",
                                                  augment=AugmentParams(augmented_views=1), progress=False))
    return root / "s.zarr"


def _options(**kw) -> AutoOptions:
    return AutoOptions(**{"heads": HEADS, "folds": 3, "progress": False, **kw})


def test_auto_writes_a_run_folder_predict_accepts_and_a_leaderboard_of_every_candidate(two_config_store, tmp_path):
    out = tmp_path / "best"
    r = _run("auto", two_config_store, "--out", out, "--budget", "40", "--folds", 3, "--head", "logreg",
             "--head", "knn", "-q")
    assert r.exit_code == 0, r.output
    board = json.loads((out / "leaderboard.json").read_text())
    rows = board["board"]
    # 2 configs x (4 C + 2 k), the greedy step (one concatenation: it does not help, so no ensemble of
    # it and no second step), TTA of the leader
    phases = [row["phase"] for row in rows]
    assert phases.count("single") == 12 and phases.count("concat") == 1 and phases.count("tta") == 1
    assert len(rows) == board["candidates"] == 14
    assert len({row["digest"] for row in rows}) == 14 and board["stopped"] == "every candidate scored"
    assert sum(row["winner"] for row in rows) == 1 and all(row["tied"] for row in rows if row["winner"])
    csv_lines = (out / "leaderboard.csv").read_text().splitlines()
    assert len(csv_lines) == 15 and csv_lines[0].startswith("rank,label,keys,head")
    w = board["winner"]
    assert w["command"].startswith(f"featcache fit-head {two_config_store.resolve()} ") and "--out" in w["command"]
    assert w["command"] in r.stdout and "selection-adjusted" in r.stdout
    assert w["test"]["n"] > 0 and 0 <= w["test"]["accuracy"] <= 1
    # a normal run folder: predict reads it
    images = sorted((two_config_store.parent / "data" / "red").iterdir())[:2]
    p = _run("predict", out, *images, "--json", "-q")
    assert p.exit_code == 0, p.output
    assert len(json.loads(p.stdout)) == 2
    config = json.loads((out / "config.json").read_text())
    assert config["head"]["type"] == w["head"] and config["keys"] == w["keys"] and config["probe"]["refit"]
    # the printed command line reproduces the winner: the same head, bit for bit
    argv = shlex.split(w["command"])
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    again = _run(*argv[1:], "-q")
    assert again.exit_code == 0, again.output
    weights = [f for f in config["files"]["head"] if f.endswith((".npz", ".h5"))]  # (the .json records timings)
    assert weights and all((out / f).read_bytes() == (tmp_path / "again" / f).read_bytes() for f in weights)
    metrics = [json.loads((d / "metrics.json").read_text())["test"] for d in (out, tmp_path / "again")]
    assert metrics[0] == metrics[1]


def test_the_test_split_is_never_read_before_the_winner_is_fixed(tmp_path):
    data = make_tree(tmp_path / "data", per_class=8)
    store = tmp_path / "s.zarr"
    extract(data, store, ExtractOptions(backbones=[TINY], taps="conv1", weights="random", split="60/20/20",
                                        progress=False))
    with open_store(store) as st:
        m = st.manifest()
        test_digests = {d for d, s in zip(m.digests, m.splits, strict=True) if s == 2}
        keys = st.keys()
        rows = {k: [r for r, d in enumerate(st[k].row_digests()) if d in test_digests] for k in keys}
    assert test_digests and all(rows.values())
    for k in keys:  # every test row of every config altered behind featcache's back: checksums fail
        arr = zarr.open_array(str(store / "features" / k / "features"), mode="r+")
        for r in rows[k]:
            arr[r] = np.asarray(arr[r]) + 1
    out = tmp_path / "best"
    with pytest.raises(StoreDamagedError) as refused:  # the final fit, which reads the test split, finds it
        auto(store, out, _options(budget=6))
    test_paths = {p for p, s in zip(m.paths, m.splits, strict=True) if s == 2}
    assert set(refused.value.images) <= test_paths
    board = json.loads((out / "leaderboard.json").read_text())  # the search itself read none of them
    assert board["candidates"] == 6 and not board["finished"] and "test" not in board["winner"]
    assert not (out / "config.json").exists()
    r = _run("auto", store, "--out", tmp_path / "cli", "--budget", 3, "--folds", 3, "--head", "logreg", "-q")
    assert r.exit_code == 2 and "damaged" in r.stderr and "Traceback" not in r.output


def test_a_tie_goes_to_the_cheaper_candidate(two_config_store, tmp_path):
    # three colours the tiny net separates perfectly: every fold of every candidate scores alike
    result = auto(two_config_store, None, _options(budget=40, tta=False, ensembles=False))
    rows = result.to_dict()["board"]
    tied = [r for r in rows if r["tied"]]
    assert len(tied) >= 2
    winner = result.winner
    assert min(tuple(r["cost"]) for r in tied) == winner.cost
    assert winner.candidate.keys == (result.entries[0].candidate.keys if len(tied) == 1 else winner.candidate.keys)
    assert len(winner.candidate.keys) == 1 and winner.candidate.head == "logreg" and winner.feature_dim == 8
    # the rule alone: equal scores, the cheaper wins; a clear gap, the best wins; "best" takes the best mean
    folds = [(0.9, 0.8, 0.9), (0.9, 0.8, 0.9), (0.5, 0.4, 0.5)]
    costs = [(2, 2, 32, 0, 0), (1, 0, 8, 0, 0), (1, 0, 4, 0, 0)]
    s = select(folds, costs, "accuracy", 0.5)
    assert s.winner == 1 and s.tied == (True, True, False)
    noisy = [(0.95, 0.70, 0.99), (0.90, 0.72, 0.93), (0.2, 0.2, 0.2)]
    assert select(noisy, costs, "accuracy", 0.5).winner == 1
    assert select(noisy, costs, "accuracy", 0.5, prefer="best").winner == 0
    low = select([(0.3, 0.3, 0.3), (0.9, 0.9, 0.9)], costs[:2], "log_loss", 0.5)
    assert low.best == 0 and low.winner == 0 and low.tied == (True, False)


def test_an_interrupted_search_resumes_scoring_only_new_candidates(two_config_store, tmp_path, monkeypatch):
    out = tmp_path / "best"
    first = auto(two_config_store, out, _options(budget=4))
    board = json.loads((out / "leaderboard.json").read_text())["board"]
    assert first.resumed == 0 and len(board) == 4
    scored = []
    real = search_module.score

    def counting(pool, c, seed, deadline=None):
        scored.append(c.label)
        if len(scored) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third new candidate
        return real(pool, c, seed, deadline)

    monkeypatch.setattr("featcache.auto.pipeline.score", counting)
    with pytest.raises(KeyboardInterrupt):
        auto(two_config_store, out, _options(budget=8))
    kept = json.loads((out / "leaderboard.json").read_text())
    assert kept["candidates"] == 6 and not kept["finished"]
    scored.clear()
    monkeypatch.setattr("featcache.auto.pipeline.score", real)
    resumed = auto(two_config_store, out, _options(budget=8))
    final = json.loads((out / "leaderboard.json").read_text())
    assert resumed.resumed == 6 and final["candidates"] == 8 and final["finished"]
    old = {r["digest"]: r["seconds"] for r in board}
    assert all(old[r["digest"]] == r["seconds"] for r in final["board"] if r["digest"] in old)  # not rescored
    # other folds: other digests, so nothing is reused
    again = auto(two_config_store, out, _options(budget=2, folds=2))
    assert again.resumed == 0


def test_json_output_and_user_mistakes(two_config_store, tmp_path):
    r = _run("auto", two_config_store, "--budget", 3, "--folds", 3, "--head", "logreg", "-q", "--json",
             "--metric", "log_loss")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["metric"] == "log_loss" and out["candidates"] == 3 and out["out"] is None
    assert out["winner"]["command"].startswith("featcache fit-head ") and "--c " in out["winner"]["command"]
    assert "Nadeau-Bengio" in out["interval"] and out["winner"]["test"]["n"] > 0
    means = [row["intervals"]["log_loss"]["mean"] for row in out["board"]]
    assert means == sorted(means)  # lower is better
    for args, message in (((), "--budget: expected a time"), (("--folds", 1), "--folds: needs at least 2"),
                          (("--concat-from", 0), "--concat-from: must be at least 1")):
        bad = ["--budget", "soon"] if not args else ["--budget", 2, *args]
        r = _run("auto", two_config_store, *bad, "-q")
        assert r.exit_code == 2 and message in r.stderr, r.output
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    r = _run("auto", two_config_store, "--out", tmp_path / "mine", "--budget", 2, "-q")
    assert r.exit_code == 2 and "--out:" in r.stderr and (tmp_path / "mine" / "notes.txt").exists()


def test_budget_parsing():
    assert parse_budget("5m").seconds == 300 and parse_budget("90s").seconds == 90 and parse_budget(12).candidates == 12
    assert parse_budget(None).seconds == 300 and parse_budget("1.5h").seconds == 5400
    with pytest.raises(ParameterError):
        parse_budget("0")
    with pytest.raises(FeatcacheError):
        parse_budget("later")


def test_a_keras_head_is_scored_with_early_stopping_and_time_runs_out_between_folds(two_config_store):
    result = auto(two_config_store, None, _options(heads=("linear",), grids={"linear": ({"epochs": 5},)},
                                                   budget="1s", backbones=(TAP,)))
    (only,) = result.entries  # the first candidate is always finished; the time was gone after it
    assert only.candidate.head == "linear" and len(only.score.folds["accuracy"]) == 3
    assert result.stopped.startswith("time budget") and result.test["n"] > 0
    with open_store(two_config_store) as st:
        pool = search_module.FoldPool(st, [st.resolve_key(TAP)], 3, 0, 1 << 30)
        with pytest.raises(search_module.OutOfTime):
            search_module.score(pool, only.candidate, 0, deadline=0.0)


def test_a_grouped_store_is_searched_on_grouped_folds(tmp_path):
    from conftest import make_image

    data = tmp_path / "d"
    for g in range(18):
        for i in range(2):
            make_image(data / ("a" if g % 2 else "b") / f"patient{g:03d}_{i}.png", (40 * (g % 5), 90, 200), 100 * g + i)
    store = tmp_path / "s.zarr"
    extract(data, store, ExtractOptions(backbones=(TINY,), weights="random", progress=False, group_by=r"patient(\d+)_"))
    result = auto(store, None, _options(heads=("logreg",), budget=2))
    assert result.grouped and result.to_dict()["grouped_folds"] is True and len(result.entries) == 2


def test_a_multi_label_store_is_refused_in_one_clear_line(tmp_path):
    from conftest import CLASS_COLOURS, make_image

    from featcache.ingest.label_file import LabelSource

    rows = ["path,labels"]
    for i in range(12):
        names = list(CLASS_COLOURS)[i % 3], list(CLASS_COLOURS)[(i + 1) % 3]
        make_image(tmp_path / "flat" / f"img{i:02d}.png", CLASS_COLOURS[names[0]], i)
        rows.append(f"img{i:02d}.png,{'|'.join(names)}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    store = tmp_path / "s.zarr"
    extract(tmp_path / "flat", store, ExtractOptions(backbones=(TINY,), weights="random", progress=False,
                                                    labels=LabelSource(tmp_path / "labels.csv")))
    r = _run("auto", store, "--budget", 2, "-q")
    assert r.exit_code == 2 and "several labels per image" in r.stderr and "featcache fit-head" in r.stderr

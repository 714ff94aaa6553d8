"""The `knn` head: cosine k-NN votes (uniform as scikit-learn's, softmax as DINO's), its bank,
persistence, Keras form, parameters, a streamed fit, and the CLI from fit-head to predict/export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, make_tree
from synthetic_store import write_synthetic_store

from featcache.cli import cli
from featcache.errors import ParameterError
from featcache.extraction import ExtractOptions, extract
from featcache.heads import FitContext, KNNHead, clone, make_head
from featcache.heads import knn as knn_module
from featcache.ingest.augment import AugmentParams
from featcache.stores import open_store
from featcache.train.fit import load_training_data
from featcache.train.run import load_run


def _features(n=60, views=3, dim=16, classes=4, seed=0):
    """(n, V, D) training views, their labels and 25 queries: random, so no ties among neighbours."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, views, dim)).astype(np.float32), rng.integers(0, classes, n),
            rng.normal(size=(25, dim)).astype(np.float32))


@pytest.mark.parametrize("k", [7, 1000])  # 1000 > the 180 bank rows: the whole bank votes
def test_uniform_weighting_is_scikit_learns_cosine_knn(k):
    from sklearn.neighbors import KNeighborsClassifier

    X, y, Q = _features()
    head = make_head("knn", {"k": k, "weighting": "uniform"}).fit(X, y, context=FitContext(n_classes=4))
    assert head.summary() == {"bank_rows": 180, "k": min(k, 180)}
    sk = KNeighborsClassifier(min(k, 180), metric="cosine", algorithm="brute").fit(X.reshape(180, -1), np.repeat(y, 3))
    np.testing.assert_allclose(head.predict_proba(Q), sk.predict_proba(Q), atol=1e-6)
    np.testing.assert_array_equal(head.predict(Q), sk.predict(Q))


def test_softmax_weighting_by_hand():
    # one view per image; rows at 0, 90, 45 and 180 degrees; a zero row must not give NaN
    bank = np.array([[1, 0], [0, 1], [1, 1], [-1, 0], [0, 0]], np.float32)[:, None]
    head = make_head("knn", {"k": 3, "temperature": 0.5}).fit(bank, np.array([0, 1, 1, 0, 2]), context=FitContext(n_classes=3))
    assert np.isfinite(head.bank_).all() and not head.bank_[4].any()
    # a long query (its length must not matter) just off the first axis: the 3 nearest are rows 0
    # (cosine ~1, class 0), 2 (~0.71, class 1) and 1 (~0.01, class 1), ahead of the zero row (0, class 2)
    q = np.array([[3.0, 0.03]], np.float32)
    c = q[0] / np.linalg.norm(q[0])
    cos = [c[0], (c[0] + c[1]) / math.sqrt(2), c[1]]  # rows 0, 2 and 1
    w = [math.exp((s - cos[0]) / 0.5) for s in cos]
    expected = [w[0], w[1] + w[2], 0.0]
    np.testing.assert_allclose(head.predict_proba(q)[0], np.array(expected) / sum(expected), rtol=1e-5, atol=1e-7)
    # a colder temperature leans harder on the nearest neighbour
    colder = clone(head).set_params(temperature=0.05).fit(bank, np.array([0, 1, 1, 0, 2]), context=FitContext(n_classes=3))
    assert colder.predict_proba(q)[0, 0] > head.predict_proba(q)[0, 0] > 0.5


def test_views_all_or_first_make_the_bank():
    X, y, _ = _features(n=10, views=3)
    every = make_head("knn").fit(X, y, context=FitContext(n_classes=4))
    first = make_head("knn", {"views": "first"}).fit(X, y, context=FitContext(n_classes=4))
    assert every.bank_.shape == (30, 16) and first.bank_.shape == (10, 16)
    np.testing.assert_array_equal(every.labels_, np.repeat(y, 3))  # image i's views are rows 3i..3i+2
    np.testing.assert_allclose(first.bank_, X[:, 0] / np.linalg.norm(X[:, 0], axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_array_equal(first.labels_, y)
    assert first.summary()["k"] == 10  # k=20 > 10 rows


def test_queries_are_split_into_blocks_under_the_memory_budget(monkeypatch):
    X, y, Q = _features()
    head = make_head("knn").fit(X, y, context=FitContext(n_classes=4))
    whole = head.predict_proba(Q)
    monkeypatch.setattr(knn_module, "SIMILARITY_BYTES", 180 * knn_module.BYTES_PER_SIMILARITY * 4)  # 4 rows a block
    calls = []
    block = head._block_proba
    monkeypatch.setattr(head, "_block_proba", lambda q: calls.append(len(q)) or block(q))
    np.testing.assert_allclose(head.predict_proba(Q), whole, atol=1e-6)  # BLAS rounds other shapes differently
    assert max(calls) == 4 and sum(calls) == 25


def test_save_load_round_trip(tmp_path):
    X, y, Q = _features()
    head = make_head("knn", {"k": 5, "temperature": 0.2}).fit(X, y, context=FitContext(n_classes=5))  # class 4 has no image
    head.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == list(KNNHead.files) == ["knn_bank.npz"]
    loaded = KNNHead.load(tmp_path, head.get_params())
    assert loaded.get_params() == head.get_params() and loaded.n_classes_ == 5
    np.testing.assert_array_equal(loaded.predict_proba(Q), head.predict_proba(Q))
    assert (loaded.predict_proba(Q)[:, 4] == 0).all()


@pytest.mark.parametrize("weighting", ["softmax", "uniform"])
def test_keras_form_gives_predict_probas_numbers(weighting):
    X, y, Q = _features()
    head = make_head("knn", {"k": 9, "weighting": weighting}).fit(X, y, context=FitContext(n_classes=4))
    model = head.to_keras()
    assert model.input_shape == (None, 16) and model.output_shape == (None, 4)
    np.testing.assert_allclose(np.asarray(model.predict_on_batch(Q)), head.predict_proba(Q), atol=1e-5)


def test_parameters_clone_and_bad_values():
    head = KNNHead()
    assert head.get_params() == {"k": 20, "vote_temperature": 0.07, "weighting": "softmax", "bank_views": "all"}
    assert all(KNNHead.param(n).sweepable for n in ("k", "vote_temperature"))
    head.set_params(k=5, bank_views="first")
    copy = clone(head.fit(*_features()[:2], context=FitContext(n_classes=4)))
    assert copy.get_params() == head.get_params() and not hasattr(copy, "bank_")
    assert repr(copy) == "KNNHead(k=5, bank_views='first')"
    for bad in ({"k": 0}, {"k": 2.5}, {"vote_temperature": 0}, {"vote_temperature": -1.0}, {"weighting": "distance"},
                {"bank_views": "some"}, {"n_neighbors": 5}):
        with pytest.raises(ParameterError) as err:
            make_head("knn", bad)
        assert err.value.param == next(iter(bad))
    with pytest.raises(ParameterError):  # all or nothing: k stays 5
        head.set_params(k=3, vote_temperature=0)
    assert head.k == 5


def test_the_old_parameter_names_still_work():
    """featcache 0.1 called them temperature and views (run folders record them so)."""
    old = make_head("knn", {"temperature": 0.5, "views": "first"})
    assert old.get_params() == {"k": 20, "vote_temperature": 0.5, "weighting": "softmax", "bank_views": "first"}
    with pytest.raises(ParameterError) as err:
        old.set_params(temperature=0)
    assert err.value.param == "vote_temperature"


def test_streamed_fit_builds_the_in_memory_bank(tmp_path):
    """A training stream (store order, its own labels) gives the same bank rows and the same numbers."""
    path = tmp_path / "s.zarr"
    key = write_synthetic_store(path, 400, 16, views=2, n_classes=3, chunk_rows=32)
    mem = load_training_data(path, [key])
    streamed = load_training_data(path, [key], memory_limit="16KB")
    try:
        assert streamed.memory.streamed and not mem.memory.streamed
        a = make_head("knn", {"k": 5}).fit(mem.X_train, mem.y_train, context=FitContext(n_classes=3))
        b = make_head("knn", {"k": 5}).fit(streamed.X_train, streamed.y_train, context=FitContext(n_classes=3))
        rows = lambda h: sorted(map(tuple, np.column_stack([h.bank_, h.labels_])))  # noqa: E731
        assert len(b.bank_) == 2 * len(mem.y_train) and rows(a) == rows(b)
        np.testing.assert_allclose(b.predict_proba(mem.X_test), a.predict_proba(mem.X_test), atol=1e-6)
        np.testing.assert_allclose(b.predict_proba(streamed.X_test), a.predict_proba(streamed.X_test), atol=1e-6)
    finally:
        streamed.close()


# -- the command line, through the real pipeline -----------------------------------------------------

def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_cli_fit_head_predict_and_export(tmp_path):
    """heads/--help list knn's options; fit-head --head knn, then predict (backbone re-attached to the
    head's Keras form) and a TFLite export give the numbers of the head on the cached test features."""
    rows = [r for r in json.loads(_cli("heads", "--json").stdout) if r["head"] == "knn"]
    assert {r["flag"]: r["allowed"] for r in rows} == {
        "--k": ">= 1", "--vote-temperature": "> 0", "--weighting": "one of softmax, uniform",
        "--bank-views": "one of all, first"}
    help_text = _cli("fit-head", "--help").stdout
    assert all(f in help_text for f in ("--k ", "--vote-temperature", "--weighting", "--bank-views"))
    assert "--temperature" not in help_text and "--views" not in help_text  # the old spellings: hidden

    data = make_tree(tmp_path / "data", per_class=6)
    store, run = tmp_path / "s.zarr", tmp_path / "run"
    # float32 features: the images' recomputed features then match the cached ones closely
    extract(data, store, ExtractOptions(backbones=[TINY], weights="random", dtype="float32", split="50/20/30",
                                        augment=AugmentParams(augmented_views=1), progress=False))
    r = _cli("fit-head", store, "-b", TINY, "--head", "knn", "--k", 3, "--out", run, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["head"] == {"type": "knn", "params": {"k": 3, "vote_temperature": 0.07, "weighting": "softmax",
                                                     "bank_views": "all"}}
    old = _cli("fit-head", store, "-b", TINY, "--head", "knn", "--k", 3, "--temperature", 0.5, "--views", "first",
               "--out", tmp_path / "old", "--json", "-q")  # the old flags, kept hidden for one release
    assert json.loads(old.stdout)["head"]["params"] == {"k": 3, "vote_temperature": 0.5, "weighting": "softmax",
                                                        "bank_views": "first"}, old.output
    assert out["training"]["k"] == 3 and out["training"]["bank_rows"] == 2 * out["n"]["train"]

    with open_store(store) as st:
        fs = st.load([st.resolve_key(TINY)])
        root = st.manifest().data_root
    test = fs.indices("test")
    paths = [f"{root}/{fs.paths[i]}" for i in test]
    assert len(paths) >= 3
    trained = load_run(run)
    expected = trained.head.predict_proba(fs.features[test, 0])
    assert np.mean(expected.argmax(1) == fs.labels[test]) == pytest.approx(out["test"]["accuracy"])

    def predicted(model):
        r = _cli("predict", model, *paths, "--json", "--top-k", 0, "-q")
        assert r.exit_code == 0, r.output
        recs = {Path(rec["path"]).resolve(): {t["class"]: t["probability"] for t in rec["top"]}
                for rec in json.loads(r.stdout)}
        return np.array([[recs[Path(p).resolve()][c] for c in trained.config.classes] for p in paths])

    np.testing.assert_allclose(predicted(run), expected, atol=1e-4)
    r = _cli("export", run, "--out", tmp_path / "knn.tflite", "--json")
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(predicted(tmp_path / "knn.tflite"), expected, atol=1e-4)

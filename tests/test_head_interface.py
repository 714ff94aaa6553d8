"""The head interface as scikit-learn sees it: get_params(deep=True), sklearn.base.clone on every
head (an ensemble's template included), GridSearchCV over a head's parameters on 2-D or 3-D
arrays, score(); fit(X, y, *, validation=, context=); grouped training through the interface."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone as sk_clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from featcache.errors import ParameterError, RegistryError
from featcache.heads import HEADS, EnsembleHead, FitContext, Head, KNNHead, clone, make_head
from featcache.heads.base import register_head
from featcache.heads.ensemble import ENSEMBLE_FILE
from featcache.train.sweep_tasks import plan_tasks


def _separable(n: int = 90, views: int = 2, dim: int = 8, seed: int = 0):
    """Three classes, each pushed along its own axis: any head separates them."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.normal(size=(n, views, dim)) + 3 * np.eye(3, dim)[y][:, None]
    return X.astype(np.float32), y


def _heads() -> list[Head]:
    """Every registered head, with a non-default parameter where it has one, and an ensemble."""
    heads = [cls() for cls in HEADS if cls is not EnsembleHead]
    heads.append(make_head("logreg", {"c_grid": [0.1, 1.0], "max_iter": 50}))
    heads.append(EnsembleHead(head=make_head("logreg", {"C": 0.5}), dims=[4, 4]))
    return heads


@pytest.mark.parametrize("head", _heads(), ids=repr)
def test_sklearn_clone_copies_parameters_of_every_head(head):
    copy = sk_clone(head)
    assert type(copy) is type(head) and copy is not head
    assert repr(copy) == repr(head)
    deep = head.get_params(deep=True)
    assert copy.get_params(deep=False).keys() == head.get_params(deep=False).keys()
    for name, value in copy.get_params(deep=True).items():
        if isinstance(value, Head):  # an ensemble's template: a clone, not the same object
            assert value is not deep[name] and value.get_params() == deep[name].get_params()
        else:
            assert value == deep[name], name
    assert repr(clone(head)) == repr(head)  # featcache's own clone agrees


def test_an_ensembles_template_is_a_parameter_with_nested_names():
    ens = EnsembleHead(head=make_head("logreg", {"C": 0.5}), dims=[4, 4])
    params = ens.get_params(deep=True)
    assert params["head__C"] == 0.5 and params["dims"] == [4, 4] and "head__C" not in ens.get_params(deep=False)
    ens.set_params(head__C=2.0)
    assert ens.head.C == 2.0
    with pytest.raises(ParameterError, match="C: must be > 0"):
        ens.set_params(head__C=-1.0)
    with pytest.raises(ParameterError, match="no parameter 'depth'"):
        ens.set_params(depth=3)
    X, y = _separable()
    fitted = ens.fit(X, y, validation=(X[:12, 0], y[:12]))
    assert len(fitted.members_) == 2 and fitted.dims_ == [4, 4] and fitted.score(X, y) > 0.9
    fresh = sk_clone(fitted)  # learned state stays behind
    assert not hasattr(fresh, "members_") and fresh.head is not fitted.head and fresh.head.C == 2.0


def test_ensemble_run_folders_load_old_and_new(tmp_path):
    X, y = _separable()
    ens = EnsembleHead(head=make_head("logreg", {"C": 0.5}), dims=[4, 4]).fit(X, y)
    ens.save(tmp_path)
    loaded = EnsembleHead.load(tmp_path, ens.params_record())
    np.testing.assert_allclose(loaded.predict_proba(X[:, 0]), ens.predict_proba(X[:, 0]), atol=1e-6)
    assert loaded.head.C == 0.5 and loaded.dims == [4, 4]
    # a folder written before the ensemble had parameters: config.json recorded none, ensemble.json no template
    record = json.loads((tmp_path / ENSEMBLE_FILE).read_text())
    del record["template"]
    (tmp_path / ENSEMBLE_FILE).write_text(json.dumps(record))
    old = EnsembleHead.load(tmp_path, {})
    np.testing.assert_allclose(old.predict_proba(X[:, 0]), ens.predict_proba(X[:, 0]), atol=1e-6)
    assert old.head.get_params() == ens.members_[0].get_params() and not hasattr(old.head, "coef_")


def test_grid_search_over_logreg_C_on_2d_and_3d_arrays():
    X, y = _separable()
    grid = [1e-4, 1.0]
    flat = GridSearchCV(make_head("logreg"), {"C": grid}, cv=3).fit(X[:, 0], y)  # 2-D: one view per image
    views = GridSearchCV(make_head("logreg"), {"C": grid}, cv=3).fit(X, y)  # 3-D: every view trains
    # a classifier to scikit-learn: stratified folds, each scored by the head's own score()
    by_hand = [np.mean([make_head("logreg", {"C": C}).fit(X[tr, 0], y[tr]).score(X[te, 0], y[te])
                        for tr, te in StratifiedKFold(3).split(X[:, 0], y)]) for C in grid]
    np.testing.assert_allclose(flat.cv_results_["mean_test_score"], by_hand)
    for search in (flat, views):
        best = grid[int(np.argmax(search.cv_results_["mean_test_score"]))]
        assert search.best_params_ == {"C": best} and search.best_score_ > 0.9
        assert isinstance(search.best_estimator_, Head) and search.best_estimator_.C_ == best  # refit on all
    assert views.best_estimator_.n_rows_ == 2 * flat.best_estimator_.n_rows_ == 2 * len(y)
    assert views.score(X, y) == views.best_estimator_.score(X[:, 0], y)  # 3-D X is scored on view 0


def test_grid_search_over_a_keras_heads_epochs_and_an_ensembles_nested_C():
    X, y = _separable(60)
    search = GridSearchCV(make_head("linear", {"lr": 0.1, "patience": 50, "batch_size": 32}), {"epochs": [1, 8]},
                          cv=2).fit(X, y)
    assert search.best_params_ == {"epochs": 8} and search.best_estimator_.epochs_trained_ == 8
    ens = EnsembleHead(head=make_head("logreg"), dims=[4, 4])
    search = GridSearchCV(ens, {"head__C": [1e-4, 1.0]}, cv=3).fit(X, y)
    assert search.best_params_ == {"head__C": 1.0} and len(search.best_estimator_.members_) == 2


def test_a_2d_X_is_one_view_and_the_context_reaches_the_head(tmp_path):
    X, y = _separable(views=1)
    flat = make_head("logreg", {"C": 1.0}).fit(X[:, 0], y)
    views = make_head("logreg", {"C": 1.0}).fit(X, y, context=FitContext(workdir=tmp_path / "run"))
    np.testing.assert_array_equal(flat.coef_, views.coef_)
    assert (tmp_path / "run" / "history.csv").exists()  # logreg writes its C path into the workdir
    four = make_head("knn").fit(X, y, context=FitContext(n_classes=4))  # a class with no training image
    assert four.n_classes_ == 4 and four.predict_proba(X[:2, 0]).shape == (2, 4)
    assert make_head("knn").fit(X, y, validation=(X[:0, 0], y[:0])).n_classes_ == 3  # empty validation: none


def test_sweep_groups_follow_the_heads_own_keys():
    """plan_tasks asks each head: logreg with C set groups (unlimited; C left to validation:
    alone), Keras heads by batch size and seed up to their group_limit, knn by the bank's views."""
    def plan(name, combos):
        models = [make_head(name, c) for c in combos]
        return plan_tasks(models[0], combos, models, [None] * len(models), "s.zarr", ["b"], 0, None)

    tasks = plan("logreg", [{"C": c} for c in (0.1, 1.0, 10.0)] + [{"C": None}])
    assert [(t.kind, t.indices) for t in tasks] == [("group", (0, 1, 2)), ("single", (3,))]
    combos = [{"batch_size": b, "dropout": d} for b in (32, 64) for d in (0.1, 0.2)]
    assert [(t.kind, t.indices) for t in plan("mlp", combos)] == [("group", (0, 1)), ("group", (2, 3))]
    big = plan("linear", [{"dropout": d / 100} for d in range(20)])
    assert [len(t.indices) for t in big] == [16, 4]
    knn = plan("knn", [{"k": 1}, {"k": 5, "views": "first"}, {"k": 9}])
    assert [(t.kind, t.indices) for t in knn] == [("group", (0, 2)), ("single", (1,))]


def test_a_head_with_the_old_fit_signature_is_refused_when_registered():
    class OldHead(KNNHead):
        name = "old_fit"

        def fit(self, X_train, y_train, X_val=None, y_val=None, *, n_classes=None, workdir=None):
            return self

    with pytest.raises(RegistryError, match=r"head 'old_fit' .*featcache 0.1 fit\(\).*fit\(X, y, \*, validation="):
        register_head(OldHead)
    assert "old_fit" not in HEADS

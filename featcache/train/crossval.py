"""Cross-validation folds over the cached features: train + validation images only.

The test split is never in a fold: it stays untouched until the winner is chosen. Folds are
stratified and seeded (scikit-learn's RepeatedStratifiedKFold), built once over the images every
compared config holds, so every entry is scored on the same folds and pairs can be tested. A head
trains on every cached view of a fold's training images and is scored on view 0 of the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..errors import FeatcacheError, ParameterError
from ..heads import FitContext, Head, clone, make_head
from ..heads.data import as_rows
from ..ingest.scan import SPLITS
from ..stores import FeatureRows
from .probe import view_proba

METRICS = ("accuracy", "macro_f1", "balanced_accuracy", "log_loss")


@dataclass(frozen=True)
class FoldPlan:
    paths: list[str]  # the images folds are drawn from (train + validation), in a fixed order
    labels: np.ndarray
    folds: int  # per repeat, after the cap
    repeats: int
    splits: list[tuple[np.ndarray, np.ndarray]]  # (train, test) positions into ``paths``
    note: str = ""  # why fewer folds than asked, if so
    grouped: bool = False  # folds drawn per group (no group in two folds' test parts)

    @property
    def test_over_train(self) -> float:
        """n_test / n_train of a fold: the Nadeau-Bengio correction."""
        tr, te = self.splits[0]
        return len(te) / len(tr)


def make_folds(paths: list[str], labels: np.ndarray, folds: int, repeats: int = 1, seed: int = 0,
               groups: list[str] | None = None) -> FoldPlan:
    """Stratified folds, capped at the smallest class count (each fold then holds every class).

    With ``groups`` (one per path) the folds are grouped too (StratifiedGroupKFold): a group's images
    are never split across folds, else a fold's test part leaks its training part."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    if folds < 2:
        raise ParameterError("folds", f"needs at least 2 folds, got {folds}")
    if repeats < 1:
        raise ParameterError("repeats", f"needs at least 1 repeat, got {repeats}")
    if groups is not None:
        return _grouped_folds(list(paths), np.asarray(labels), folds, repeats, seed, list(groups))
    smallest = int(min(np.bincount(labels)[np.unique(labels)])) if len(labels) else 0
    if smallest < 2:
        raise FeatcacheError("cross-validation needs at least 2 train/validation images in every class; "
                             f"one class has {smallest}")
    k = min(folds, smallest)
    note = (f"{folds} folds asked, {k} used: the smallest class has {smallest} train/validation images"
            if k < folds else "")
    cv = RepeatedStratifiedKFold(n_splits=k, n_repeats=repeats, random_state=seed)
    splits = list(cv.split(np.zeros(len(labels)), labels))
    return FoldPlan(list(paths), labels, k, repeats, splits, note)


def _grouped_folds(paths, labels, folds, repeats, seed, groups) -> FoldPlan:
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(set(groups))
    if n_groups < folds:
        raise ParameterError("folds", f"{folds} folds need at least {folds} groups; the train/validation "
                             f"images hold {n_groups}: ask for at most {n_groups} folds")
    for c in np.unique(labels):
        held = len({g for g, y in zip(groups, labels, strict=True) if y == c})
        if held < folds:
            raise ParameterError("folds", f"{folds} grouped folds need every class in at least {folds} groups; "
                                 f"class {int(c)} is in {held}: ask for at most {held} folds")
    g = np.asarray(groups)
    splits = []
    for r in range(repeats):  # a repeat is a fresh shuffle of the groups
        cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed + r)
        splits += list(cv.split(np.zeros(len(labels)), labels, g))
    return FoldPlan(paths, labels, folds, repeats, splits, "", grouped=True)


def cv_rows(fs: FeatureRows) -> dict[str, int]:
    """Path -> row of the images folds may use (train and validation splits)."""
    pool, paths = np.flatnonzero(fs.splits != SPLITS.index("test")), fs.paths
    return {paths[i]: int(i) for i in pool}


def common_pool(sets: list[FeatureRows]) -> tuple[list[str], np.ndarray]:
    """The train/validation images every config holds (a config may have lost a few to decode errors)."""
    rows = [cv_rows(fs) for fs in sets]
    labels = sets[0].labels
    paths = [p for p in rows[0] if all(p in r for r in rows[1:])]
    return paths, np.array([labels[rows[0][p]] for p in paths], int)


def pool_groups(manifest, paths: list[str]) -> list[str] | None:
    """The group of each pooled path, from the manifest (None: the store has no groups)."""
    if manifest.groups is None:
        return None
    by_path = dict(zip(manifest.paths, manifest.groups, strict=True))
    return [by_path[p] for p in paths]


@dataclass
class FoldScore:
    accuracy: float
    macro_f1: float
    balanced_accuracy: float
    log_loss: float
    fit_seconds: float


def score_fold(X, y: np.ndarray, train: np.ndarray, test: np.ndarray, head: str | Head,
               n_classes: int, seed: int, tta: bool = False, holdout: float = 0.0) -> FoldScore:
    """Fit a fresh ``head`` (a name: default parameters; a Head: an unfitted clone of it; no inner
    validation) on ``train`` rows' views,
    score it on ``test`` rows' view 0 (``tta``: the mean over their views). ``X``: (n, V, D)
    arrays, or a store's view (each fold reads its rows chunk by chunk). ``holdout``: a stratified
    share of ``train`` held out as validation (view 0), for heads whose fit stops on it (the Keras
    heads' early stopping), as fitting a head on a store without a validation split does."""
    X = as_rows(X)
    model = make_head(head, seed=seed) if isinstance(head, str) else clone(head)
    validation = None
    if holdout:
        from .fit import _holdout

        held = _holdout(y[train], holdout, seed)
        if held.any():
            validation, train = (X.take(train[held]).view(0), y[train[held]]), train[~held]
    start = time.perf_counter()
    model.fit(X.take(train), y[train], validation=validation, context=FitContext(n_classes=n_classes))
    seconds = time.perf_counter() - start
    return split_scores(y[test], view_proba(model, X.take(test), tta), n_classes, seconds)



def split_scores(y: np.ndarray, proba: np.ndarray, n_classes: int, fit_seconds: float = 0.0) -> FoldScore:
    from sklearn.metrics import f1_score

    pred = np.argmax(proba, axis=1)
    present = np.unique(y)  # balanced accuracy: mean recall over the classes in the split
    picked = np.clip(proba[np.arange(len(y)), y], 1e-15, None)
    return FoldScore(float(np.mean(pred == y)), float(f1_score(y, pred, average="macro", zero_division=0)),
                     float(np.mean([np.mean(pred[y == c] == c) for c in present])), float(-np.mean(np.log(picked))), fit_seconds)


def subsample_per_class(train: np.ndarray, y: np.ndarray, shots: int | None, seed: int) -> np.ndarray:
    """At most ``shots`` training rows per class (all with None), drawn with ``seed``: a few-shot budget."""
    if shots is None:
        return train
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(train[y[train] == c])[:shots] for c in np.unique(y[train])]
    return np.sort(np.concatenate(keep))

"""Likely label errors: out-of-fold class probabilities, ranked by a confident-learning score.

Each image is predicted by a model that never saw it: K stratified folds, a multinomial logistic
regression (scikit-learn, on features standardized with the training folds' statistics) fitted on
the other folds. scikit-learn directly rather than the `logreg` head: a fold may miss a small
class entirely, which the head refuses and which here just means probability 0 for that class.
Training rows are all cached views of the training folds' images, as `fit-head` trains; the
held-out image is predicted on view 0.

Flagged by confident learning (Northcutt et al. 2021, cleanlab's per-class thresholds): class j's
threshold t_j is the mean out-of-fold p(j) of the images labelled j; an image is flagged when its
given class's probability is below that class's threshold AND another class's probability reaches
that other class's threshold. Flagged images are ranked by self-confidence p(given) or by the
normalized margin p(given) - max p(other), lowest first (the ranking is the same as before; only the
cut moved). Measured (benchmarks/bench_audit.py, efficientnet_lite0 at 128 px): every out-of-fold
miss, the old cut, flagged 18% of a clean Fashion-MNIST sample; confident learning flags 9.5%
there, 0.25% of clean ORL, and 23 of ORL's 25 planted errors among 35 flagged (precision 0.66
against 0.57).
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import FeatcacheError
from ..progress import progress_bar


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, n_classes: int, *, folds: int = 5,
                              C: float = 1.0, seed: int = 0, progress: bool = False) -> np.ndarray:
    """(n, V, D) features, (n,) labels -> (n, n_classes) probabilities, each row from a model fitted
    without that image."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    n, views = features.shape[:2]
    counts = np.bincount(labels, minlength=n_classes)
    if np.count_nonzero(counts) < 2:
        raise FeatcacheError("finding label errors needs images of at least two classes")
    # StratifiedKFold needs a class with at least `folds` images; fewer folds then, never an error
    folds = min(folds, int(counts.max()))
    if folds < 2:
        raise FeatcacheError("finding label errors needs a class with at least two images")
    proba = np.zeros((n, n_classes), np.float64)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings(), progress_bar(folds, "label errors", unit="fold", enabled=progress) as bar:
        warnings.simplefilter("ignore")  # "least populated class has fewer members" and convergence notes
        for train, held in splitter.split(np.zeros(n), labels):
            X = features[train].reshape(len(train) * views, -1)
            mean, std = X.mean(axis=0), X.std(axis=0)
            std[std < 1e-8] = 1.0
            model = LogisticRegression(C=C, max_iter=1000, random_state=seed)
            # one BLAS thread: small products, and shared cores make threads ~10x slower (see heads/logreg.py)
            with threadpool_limits(limits=1, user_api="blas"):
                model.fit((X - mean) / std, np.repeat(labels[train], views))
                p = model.predict_proba((features[held, 0] - mean) / std)
            proba[np.ix_(held, model.classes_)] = p
            bar.update(1)
    return proba


def label_scores(proba: np.ndarray, labels: np.ndarray, score: str = "self_confidence"):
    """-> (scores, suggested, flagged): the score of every image (lower = more suspicious), the most
    probable class other than its given one, and the flagged images ranked most suspicious first."""
    rows = np.arange(len(labels))
    given = proba[rows, labels]
    others = proba.copy()
    others[rows, labels] = -np.inf
    suggested = others.argmax(axis=1)
    scores = given if score == "self_confidence" else given - others[rows, suggested]
    flagged = np.flatnonzero(confident_errors(proba, labels))
    return scores, suggested, flagged[np.lexsort((flagged, scores[flagged]))]


def class_thresholds(proba: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n_classes,) mean self-confidence: the mean p(j) over the images labelled j (1 for a class with
    no image: nothing is ever confidently it)."""
    n_classes = proba.shape[1]
    counts = np.bincount(labels, minlength=n_classes)
    sums = np.bincount(labels, weights=proba[np.arange(len(labels)), labels], minlength=n_classes)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)


def confident_errors(proba: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n,) bool: p(given) below the given class's threshold, and some other class at or above its own."""
    rows = np.arange(len(labels))
    t = class_thresholds(proba, labels)
    above = proba >= t[None, :]
    above[rows, labels] = False
    return (proba[rows, labels] < t[labels]) & above.any(axis=1)

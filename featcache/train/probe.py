"""What a linear probe protocol adds around a head's fit, each optional (``ProbeOptions``):

- ``tta``: a split's probabilities are the mean over every cached view of its images (view 0 and
  the K augmented ones) instead of view 0 alone;
- ``calibrate``: one temperature T, fitted on validation, divides the log-probabilities
  (softmax(log p / T)); it changes confidence, never the predicted class. Expected calibration
  error is reported with or without it;
- ``refit``: after validation chose the hyper-parameters (epochs, C), the head is fitted again with
  them on train + validation, and that head is the one kept and tested;
- ``combine``: several backbones' features feed one head on their concatenation ("concat"), or
  one head each, probabilities averaged ("ensemble", heads/ensemble.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ParameterError
from ..heads.data import as_rows

COMBINES = ("concat", "ensemble")
ECE_BINS = 15
TINY = 1e-30  # log(0) guard: a float32 softmax can round a probability to zero


@dataclass(frozen=True)
class ProbeOptions:
    tta: bool = False
    calibrate: bool = False
    refit: bool = False
    combine: str = "concat"

    def __post_init__(self):
        if self.combine not in COMBINES:
            raise ParameterError("combine", f"unknown {self.combine!r}; choose {' or '.join(COMBINES)}")

    def to_dict(self) -> dict:
        return asdict(self)


PLAIN = ProbeOptions()  # none of them


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by their size."""
    conf, correct = proba.max(axis=1), proba.argmax(axis=1) == np.asarray(y)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    gaps = [abs(correct[which == b].mean() - conf[which == b].mean()) * np.sum(which == b)
            for b in range(bins) if np.any(which == b)]
    return float(sum(gaps) / max(1, len(y)))


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    if temperature == 1.0:
        return proba
    z = np.log(np.maximum(proba, TINY)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(proba: np.ndarray, y: np.ndarray) -> float:
    """The T minimising the log-loss of softmax(log p / T) on (proba, y): a 1-D convex problem in
    log T, solved by bounded scalar minimisation over T in [0.05, 20]."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y, int)
    logp = np.log(np.maximum(np.asarray(proba, np.float64), TINY))

    def loss(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        return float(-np.mean(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1))))

    best = minimize_scalar(loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(best.x))


def mean_over_views(predict_proba, X) -> np.ndarray:
    """(m, V, D) views (arrays or a store's view) -> (m, C): the mean of the head's probabilities
    over the V views, one view at a time (a store's view is read once per view, block by block)."""
    rows = as_rows(X)
    return np.mean([predict_proba(rows.view(v)) for v in range(rows.shape[1])], axis=0)


def view_proba(model, X, tta: bool) -> np.ndarray:
    """(m, V, D) views -> the head's probabilities of view 0, or (tta) their mean over the views."""
    return mean_over_views(model.predict_proba, X) if tta else model.predict_proba(as_rows(X).view(0))

"""Confidence intervals and paired tests over cross-validation fold scores.

Fold scores are not independent (the training sets overlap), so the naive t-interval is too narrow
and the naive paired t-test too eager. Both use Nadeau & Bengio's corrected variance (2003):
``(1/J + n_test/n_train) * s^2`` over J fold scores, with a t distribution of J-1 degrees of
freedom (Bouckaert & Frank's "corrected repeated k-fold cv test").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

METHOD = "Nadeau-Bengio corrected t over folds"
ALPHA = 0.05


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    def to_dict(self) -> dict:
        return asdict(self)

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high


@dataclass(frozen=True)
class PairedTest:
    diff: float  # mean of a - b over the folds
    t: float
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def _corrected_se(values: np.ndarray, test_over_train: float) -> float:
    j = len(values)
    var = float(np.var(values, ddof=1)) if j > 1 else 0.0
    return math.sqrt((1.0 / j + test_over_train) * var)


def corrected_interval(scores, test_over_train: float, level: float = 0.95, digits: int = 4,
                       bounds: tuple[float, float] = (-math.inf, math.inf)) -> Interval:
    """The ``level`` interval of the mean fold score; ``test_over_train``: n_test / n_train of a fold.
    Clipped to the metric's ``bounds`` (an accuracy interval never passes 1)."""
    from scipy.stats import t as student_t

    s = np.asarray(scores, float)
    mean = float(s.mean())
    half = float(student_t.ppf(0.5 + level / 2, len(s) - 1)) * _corrected_se(s, test_over_train) if len(s) > 1 else 0.0
    low, high = max(bounds[0], mean - half), min(bounds[1], mean + half)
    return Interval(round(mean, digits), round(low, digits), round(high, digits))


def metric_interval(scores, test_over_train: float, metric: str) -> Interval:
    """``corrected_interval`` within the metric's range: log-loss from 0 up, every other score 0 to 1."""
    bounds = (0.0, math.inf) if metric == "log_loss" else (0.0, 1.0)
    return corrected_interval(scores, test_over_train, bounds=bounds)


def paired_test(a, b, test_over_train: float) -> PairedTest:
    """Two-sided corrected paired t-test of two entries scored on the same folds."""
    from scipy.stats import t as student_t

    d = np.asarray(a, float) - np.asarray(b, float)
    diff, se = float(d.mean()), _corrected_se(d, test_over_train)
    if se == 0.0:  # identical scores on every fold (p=1), or a constant gap (as certain as folds get)
        return PairedTest(round(diff, 6), 0.0 if diff == 0 else math.copysign(math.inf, diff), 1.0 if diff == 0 else 0.0)
    t = diff / se
    return PairedTest(round(diff, 6), round(t, 4), round(float(2 * student_t.sf(abs(t), len(d) - 1)), 6))

"""Choosing the winner honestly among scored candidates.

The best mean of many noisy fold scores is optimistic (the winner's curse), so the search does not
simply take it:

- **ties**: every candidate whose corrected paired t-test against the best (on the chosen metric,
  over the same folds; stats.py) is not significant at 5% is *tied* with it. Among tied candidates
  the cheapest wins (``Candidate.cost``: fewest backbone networks, smallest head, fewest features,
  fewest configurations, no TTA, concatenation), unless the best mean is preferred;
- **a selection-adjusted estimate**: for each fold, the same rule (best, ties, cheapest) is applied
  to the scores of the *other* folds only, and the candidate it picks is scored on the held-out
  fold. The mean of those scores estimates what the whole procedure (search, then selection)
  achieves on images that took no part in the choice; its interval is corrected like every other.
  It is reported beside the winner's own cross-validated mean, which is the maximum of many;
- the test split is read once, by the winner, after it is fixed (pipeline.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError
from ..train.stats import ALPHA, Interval, PairedTest, metric_interval, paired_test
from .search import LOWER_IS_BETTER

PREFERENCES = ("cheapest", "best")


def check_prefer(prefer: str) -> str:
    if prefer not in PREFERENCES:
        raise ParameterError("prefer", f"unknown {prefer!r}; choose {' or '.join(PREFERENCES)}")
    return prefer


@dataclass(frozen=True)
class Selection:
    best: int  # the index with the best mean
    winner: int  # the index chosen (the cheapest tied one, or the best)
    tied: tuple[bool, ...]  # with the best: not significantly different
    vs_best: tuple[PairedTest | None, ...]  # None for the best itself
    adjusted: Interval | None  # the selection-adjusted estimate (None with fewer than 3 folds)
    adjusted_folds: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        return {"best": self.best, "winner": self.winner,
                "adjusted": None if self.adjusted is None else self.adjusted.to_dict(),
                "adjusted_folds": list(self.adjusted_folds), "alpha": ALPHA}


def _pick(scores: np.ndarray, costs: list[tuple], lower: bool, prefer: str, test_over_train: float,
          second: np.ndarray):
    """(best, winner, tied, tests) over candidates x folds ``scores``; ``second``: the tie-breaking
    candidates x folds scores, lower is better (log-loss: of two equally accurate, the surer)."""
    means = scores.mean(axis=1)
    signed = -means if lower else means
    seconds = second.mean(axis=1)
    order = sorted(range(len(means)), key=lambda i: (-signed[i], seconds[i], costs[i]))  # best, surest, cheapest
    best = order[0]
    tests: list[PairedTest | None] = []
    tied = []
    for i in range(len(means)):
        if i == best:
            tests.append(None)
            tied.append(True)
            continue
        t = paired_test(scores[best], scores[i], test_over_train)
        tests.append(t)
        tied.append(not (t.significant and signed[best] > signed[i]))
    if prefer == "best":
        return best, best, tied, tests
    winner = min((i for i in range(len(means)) if tied[i]), key=lambda i: (costs[i], -signed[i], seconds[i]))
    return best, winner, tied, tests


def select(fold_scores: list[tuple[float, ...]], costs: list[tuple], metric: str, test_over_train: float,
           prefer: str = "cheapest", tie_break: list[tuple[float, ...]] | None = None) -> Selection:
    """The winner among candidates scored on the same folds (``fold_scores``: one tuple each, in
    fold order), with the selection-adjusted estimate (see the module). ``tie_break``: fold scores
    (lower is better) that order candidates of equal mean and cost, e.g. log-loss."""
    check_prefer(prefer)
    if not fold_scores:
        raise ValueError("nothing was scored")
    scores = np.asarray(fold_scores, float)
    second = np.zeros_like(scores) if tie_break is None else np.asarray(tie_break, float)
    lower = metric in LOWER_IS_BETTER
    best, winner, tied, tests = _pick(scores, costs, lower, prefer, test_over_train, second)
    adjusted, per_fold = None, ()
    j = scores.shape[1]
    if j >= 3:
        picks = []
        for f in range(j):
            rest = np.delete(scores, f, axis=1)
            _, w, _, _ = _pick(rest, costs, lower, prefer, test_over_train, np.delete(second, f, axis=1))
            picks.append(float(scores[w, f]))
        per_fold = tuple(round(p, 6) for p in picks)
        adjusted = metric_interval(picks, test_over_train, metric)
    return Selection(best, winner, tuple(tied), tuple(tests), adjusted, per_fold)


__all__ = ["PREFERENCES", "Selection", "check_prefer", "select"]

"""``auto``: one call from a store to the best probe it can make, chosen by cross-validation on
train + validation only, with ties going to the cheapest candidate, and the test split read once
by the winner (pipeline.py). candidates.py: what is searched; search.py: scoring; selection.py:
the honest choice; leaderboard.py: the records a resumed search reads back; budget.py: when to stop."""

from .budget import Budget, parse_budget
from .candidates import DEFAULT_GRIDS, DEFAULT_HEADS, Candidate
from .pipeline import AutoOptions, AutoResult, auto

__all__ = ["DEFAULT_GRIDS", "DEFAULT_HEADS", "AutoOptions", "AutoResult", "Budget", "Candidate", "auto",
           "parse_budget"]

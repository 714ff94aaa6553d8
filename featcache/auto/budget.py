"""How long a search may go on: a time ("90s", "5m", "1.5h") or a number of candidates ("40").

A candidate budget counts every candidate of the leaderboard, those a resumed search read back
included: a search stopped at 10 and run again with 20 scores 10 more. A time budget counts this
run's time: a candidate still being scored when it runs out is left out (the first one is always
finished, so a search has a winner).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from ..errors import ParameterError

UNITS = {"s": 1, "m": 60, "h": 3600}
_TIME = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh])\s*$", re.IGNORECASE)
DEFAULT = "5m"


@dataclass(frozen=True)
class Budget:
    seconds: float | None = None
    candidates: int | None = None

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "candidates": self.candidates}

    def exhausted(self, started: float, scored: int) -> str | None:
        """Why the search stops now (None: it goes on)."""
        if self.candidates is not None and scored >= self.candidates:
            return f"candidate budget of {self.candidates} reached"
        if self.seconds is not None and time.monotonic() - started >= self.seconds:
            return f"time budget of {self.seconds:g} s reached"
        return None


def parse_budget(value: str | int | Budget | None) -> Budget:
    """'5m' -> 300 seconds; '12' or 12 -> 12 candidates; None: the default (5 minutes)."""
    if isinstance(value, Budget):
        return value
    if value is None:
        value = DEFAULT
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    else:
        text = str(value).strip()
    if text.isdigit():
        n = int(text)
        if n < 1:
            raise ParameterError("budget", "a candidate budget must be at least 1")
        return Budget(candidates=n)
    m = _TIME.match(text)
    if not m:
        raise ParameterError("budget", f"expected a time such as 90s, 5m or 1h, or a number of candidates, got "
                                       f"{value!r}")
    seconds = float(m.group(1)) * UNITS[m.group(2).lower()]
    if seconds <= 0:
        raise ParameterError("budget", f"must be more than no time, got {value!r}")
    return Budget(seconds=seconds)


__all__ = ["DEFAULT", "Budget", "parse_budget"]

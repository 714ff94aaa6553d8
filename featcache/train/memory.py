"""The memory budget of a fit: whether the features are loaded into memory or streamed from the store.

A size is a number of bytes with an optional unit: "512MB", "2GB", "1.5GiB", "300000000". Units are
binary (KB = KiB = 1024 bytes). Without one, the budget is half of the memory available now.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..errors import ParameterError

DEFAULT_FRACTION = 0.5  # of the memory available when the fit starts
WINDOW_SHARE = 8  # of the budget, per shuffle window of a streamed epoch
UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str | int | float, param: str = "memory_limit") -> int:
    """'512MB' -> 536870912. A ParameterError naming ``param`` says what is accepted."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = int(text)
    else:
        m = _SIZE.match(str(text))
        if not m:
            raise ParameterError(param, f"expected a size such as 512MB or 2GB, got {text!r}")
        value = int(float(m.group(1)) * UNITS[m.group(2).upper()])
    if value <= 0:
        raise ParameterError(param, f"must be more than 0 bytes, got {text!r}")
    return value


def available_memory() -> int:
    """MemAvailable from /proc/meminfo (Linux), else the physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class MemoryPlan:
    """What a fit decided: ``needed`` (the features as float32, as loading them would hold them)
    against ``limit``; streamed when they do not fit."""

    limit: int
    needed: int
    streamed: bool
    window_chunks: int = 0  # chunks per shuffle window when streamed

    def to_dict(self) -> dict:
        return {"limit_bytes": self.limit, "needed_bytes": self.needed, "streamed": self.streamed,
                "window_chunks": self.window_chunks}


def resolve_memory_limit(value: str | int | None) -> int:
    """The budget in bytes: ``value`` parsed, or the default share of the available memory."""
    return parse_size(value) if value is not None else int(DEFAULT_FRACTION * available_memory())


def plan_memory(rows, limit: int) -> MemoryPlan:
    """In memory when ``rows`` (a store's view) take at most ``limit`` bytes as float32; else
    streamed, a shuffle window taking 1/WINDOW_SHARE of the budget (the window training, the next
    one read ahead and the one being read are in memory at once)."""
    needed = rows.nbytes()
    if needed <= limit:
        return MemoryPlan(limit, needed, False)
    return MemoryPlan(limit, needed, True, max(1, limit // WINDOW_SHARE // max(1, rows.chunk_bytes)))


def rows_for(rows, plan: MemoryPlan):
    """What heads read under ``plan``: the rows loaded (arrays), or the view itself, windowed."""
    from ..heads.data import ArrayRows

    return rows.windowed(plan.window_chunks) if plan.streamed else ArrayRows(rows.load(), rows.labels)

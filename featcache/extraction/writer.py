"""The writer: one unit's features, then its status, into the store; failures into the skip record."""

from __future__ import annotations

import numpy as np

from ..stores import DONE, FAILED, FeatureStore
from .runner import UnitFeatures


class UnitWriter:
    def __init__(self, store: FeatureStore, row_digests: list[str]):
        self.store = store
        self.row_digests = row_digests

    def write(self, done: UnitFeatures) -> None:
        """A chunk-aligned read-modify-write of the unit's region: rows of the unit that were not
        pending (computed earlier) keep their values."""
        unit = done.unit
        region, status = (np.array(a) for a in self.store.read_unit(unit))
        if done.rows:
            at = np.asarray(done.rows) - unit.start
            region[at] = done.features()
            status[at] = DONE
        for row in done.failures:
            status[row - unit.start] = FAILED
        self.store.write_unit(unit, region, status)
        self.store.record_skipped({self.row_digests[row]: {"path": s.path, "reason": s.reason}
                                   for row, s in done.failures.items()})

"""The writer: one unit's features and status into the store (checksummed there), failures into
the skip record."""

from __future__ import annotations

from ..stores import FeatureStore
from .runner import UnitFeatures


class UnitWriter:
    def __init__(self, store: FeatureStore, row_digests: list[str]):
        self.store = store
        self.row_digests = row_digests

    def write(self, done: UnitFeatures) -> None:
        """The unit's region is rewritten whole; rows of it computed earlier keep their values."""
        unit = done.unit
        # the reasons first: a crash before the unit's status leaves its rows pending (retried)
        self.store.record_skipped({self.row_digests[row]: {"path": s.path, "reason": s.reason}
                                   for row, s in done.failures.items()})
        self.store.commit_unit(unit, self.row_digests[unit.start:unit.stop], done.rows,
                               done.features() if done.rows else None, list(done.failures))

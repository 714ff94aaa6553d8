"""The writer: one unit's features and status into the store (checksummed there), and the reasons
for the rows that could not be decoded to whoever keeps them (the store's skip record, a shard's
own record, or nobody: a distributed worker returns them to its client, which records them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ..stores import FeatureStore
from .reader import SkippedImage
from .runner import UnitFeatures

RecordFailures = Callable[[dict[str, SkippedImage]], None]  # {digest: why it could not be decoded}


class UnitWriter:
    def __init__(self, store: FeatureStore, row_digests: Sequence[str] | Mapping[int, str],
                 record_failures: RecordFailures | None):
        self.store = store
        self.row_digests = row_digests
        self.record_failures = record_failures

    def failures(self, done: UnitFeatures) -> dict[str, SkippedImage]:
        return {self.row_digests[row]: s for row, s in done.failures.items()}

    def write(self, done: UnitFeatures) -> None:
        """The unit's region is rewritten whole; rows of it computed earlier keep their values."""
        unit = done.unit
        # the reasons first: a crash before the unit's status leaves its rows pending (retried)
        if self.record_failures is not None and done.failures:
            self.record_failures(self.failures(done))
        self.store.commit_unit(unit, [self.row_digests[r] for r in range(unit.start, unit.stop)], done.rows,
                               done.features() if done.rows else None, list(done.failures))

"""Compute work units in this process: read -> run -> write. Every executor runs this loop: the
in-process one over all of a config's units, a Dask worker over one unit per task, a shard over
its own units."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from ..config import FeatureConfig
from ..stores import FeatureStore, WorkUnit
from .reader import ImageReader, SkippedImage
from .runner import BackboneRunner, UnitBatcher
from .writer import RecordFailures, UnitWriter


@dataclass
class UnitOutcome:
    """What computing one unit did: what a worker hands back to its client."""

    key: str
    start: int
    rows: int  # rows computed
    views: int
    failures: dict[str, dict] = field(default_factory=dict)  # {digest: {"path", "reason"}} not decodable

    def skipped(self) -> list[SkippedImage]:
        return [SkippedImage(f["path"], f["reason"]) for f in self.failures.values()]


def compute_units(st: FeatureStore, cfg: FeatureConfig, units: Sequence[WorkUnit],
                  row_digests: Sequence[str] | Mapping[int, str], paths: Mapping[str, str], *,
                  runner: Callable[[], BackboneRunner], workers: int, batch_size: int,
                  record_failures: RecordFailures | None, on_images: Callable[[int], None] = lambda n: None
                  ) -> Iterator[UnitOutcome]:
    """Compute ``units`` of ``cfg`` into ``st``, yielding each unit's outcome once it is written.
    ``row_digests``: row -> content digest (at least the units' regions); ``paths``: digest -> file.
    ``runner`` is called once decoding has started, so a model builds while the first images decode."""
    views = cfg.augment.views
    reader = ImageReader(paths, row_digests, cfg.backbone.input_size, cfg.augment, workers, cfg.compute.jpeg_draft)
    writer = UnitWriter(st, row_digests, record_failures)
    # rows decoding ahead: two forward batches' worth keeps the backbone fed, and bounds memory
    window = max(2 * workers, 2 * -(-batch_size // views))
    try:
        rows = reader.iter_rows(units, window)  # decoding starts now, while the model is built
        for done in UnitBatcher(runner(), views, on_batch=on_images).run(rows):
            writer.write(done)
            yield UnitOutcome(done.unit.key, done.unit.start, len(done.rows), views, writer.failures(done))
    finally:
        reader.close()

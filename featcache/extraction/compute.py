"""Compute work units in this process: read -> run -> write. Every executor runs this loop: the
in-process one over all of a config's units, a Dask worker over one unit per task, a shard over
its own units."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..config import FeatureConfig
from ..stores import FeatureStore, WorkUnit
from .reader import ImageReader, SkippedImage
from .runner import BackboneRunner, UnitBatcher, UnitFeatures
from .writer import RecordFailures, UnitWriter


@dataclass(frozen=True)
class UnitOutcome:
    """What computing one unit did: what a worker hands back to its client."""

    key: str
    start: int
    rows: int  # rows computed
    views: int
    failures: dict[str, SkippedImage] = field(default_factory=dict)  # {digest: why} not decodable

    def skipped(self) -> list[SkippedImage]:
        return list(self.failures.values())


def compute_units(st: FeatureStore, cfg: FeatureConfig, units: Sequence[WorkUnit],
                  row_digests: Sequence[str] | Mapping[int, str], paths: Mapping[str, str], *,
                  runner: Callable[[], BackboneRunner], workers: int, batch_size: int,
                  record_failures: RecordFailures | None, on_images: Callable[[int], None] = lambda n: None,
                  together: Sequence[Sequence[WorkUnit]] = ()) -> Iterator[UnitOutcome]:
    """Compute ``units`` of ``cfg`` into ``st``, yielding each unit's outcome once it is written.
    ``row_digests``: row -> content digest (at least the units' regions); ``paths``: digest -> file.
    ``runner`` is called once decoding has started, so a model builds while the first images decode.
    ``together``: the units of other configs over the same rows that the runner computes in the
    same pass (taps of the network, ``BackboneRunner(together=...)``): each gets its columns."""
    views = cfg.augment.views
    reader = ImageReader(paths, row_digests, cfg.backbone.input_size, cfg.augment, workers, cfg.compute.jpeg_draft)
    # the decoding failures are recorded once: they are the image's, whichever config meets them
    writers = [UnitWriter(st, row_digests, record_failures)] + [UnitWriter(st, row_digests, None) for _ in together]
    units_of = [{u.start: u for u in us} for us in together]
    # rows decoding ahead: two forward batches' worth keeps the backbone fed, and bounds memory
    window = max(2 * workers, 2 * -(-batch_size // views))
    try:
        rows = reader.iter_rows(units, window)  # decoding starts now, while the model is built
        model = runner()
        ends = np.cumsum([0, *model.dims]) if together else None
        for done in UnitBatcher(model, views, on_batch=on_images).run(rows):
            parts = [done] if not together else [
                UnitFeatures(unit, views, done.rows, [o[:, a:b] for o in done.outputs], done.failures)
                for unit, a, b in zip([done.unit, *(u[done.unit.start] for u in units_of)], ends[:-1], ends[1:],
                                      strict=True)]
            for writer, part in zip(writers, parts, strict=True):
                writer.write(part)
                yield UnitOutcome(part.unit.key, part.unit.start, len(part.rows), views, writer.failures(part))
    finally:
        reader.close()

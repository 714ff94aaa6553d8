"""What an extraction run did: per configuration (ConfigRun) and in all (ExtractResult), and the
loop that drives an executor's units of one configuration while counting them (compute_config)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..errors import FeatcacheError
from ..progress import progress_bar
from .compute import UnitOutcome
from .plan import ConfigPlan
from .reader import SkippedImage


@dataclass
class ConfigRun:
    key: str
    backbone: str  # the backbone's label: its name, or name.tap
    extracted: int  # rows computed in this run
    reused: int  # rows already in the store
    failed: int
    seconds: float
    views: int = 1  # V = 1 + K stored views per image
    repaired: int = 0  # of the rows extracted, rows whose stored data was damaged
    batch_size: int = 0  # the forward batch size used: the one the config was started with
    pending: int = 0  # rows left to compute after this run (a plan-only run, a shard, a stopped run)

    @classmethod
    def planned(cls, plan: ConfigPlan) -> ConfigRun:
        """A config's run before any unit is computed: what its plan reuses, repairs and has to do."""
        return cls(plan.key, plan.cfg.backbone.label, 0, plan.reused, 0, 0.0, plan.cfg.augment.views,
                   repaired=plan.repaired, batch_size=plan.batch_size, pending=plan.todo)

    @property
    def images_per_s(self) -> float | None:
        """Images (rows) extracted per second, all their views included."""
        return None if not self.seconds or not self.extracted else self.extracted / self.seconds

    @property
    def views_per_s(self) -> float | None:
        """Forward passes per second (rows x views): the backbone's throughput, as the store's stats record it."""
        return None if not self.seconds or not self.extracted else self.extracted * self.views / self.seconds


@dataclass
class ExtractResult:
    store: str
    images: int
    classes: list[str]
    configs: list[ConfigRun] = field(default_factory=list)
    skipped: list[SkippedImage] = field(default_factory=list)  # image files that could not be used
    empty_classes: list[str] = field(default_factory=list)  # class folders without a usable image
    added_beside: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (new key, key of the same
    # backbone the store already held, what differs): a second configuration of one backbone

    @property
    def complete(self) -> bool:
        """False when some image files could not be read (each is in ``skipped``, with the reason)."""
        return not self.skipped


def compute_config(runs: list[ConfigRun], todo: int,
                   outcomes: Callable[[Callable[[int], None]], Iterable[UnitOutcome]], strict: bool,
                   progress: bool) -> None:
    """Drive ``outcomes(on_images=...)`` (an executor's units of one config, or of taps computed in
    one pass: ``runs``) to the end, counting into each run, with a progress bar; strict mode stops
    at the first image that cannot be decoded."""
    by_key = {r.key: r for r in runs}
    first = runs[0]
    desc = first.backbone + (f" + {len(runs) - 1} tap(s)" if len(runs) > 1 else "")
    bar = progress_bar(total=todo * first.views, desc=desc, unit="img", enabled=progress)
    start = time.perf_counter()
    try:
        for out in outcomes(on_images=bar.update):
            run = by_key[out.key]
            run.extracted += out.rows
            run.failed += len(out.failures)
            run.pending -= out.rows + len(out.failures)
            if run is first:  # the images went through the network once, whoever else got columns
                bar.update(len(out.failures) * run.views)
            if strict and out.failures:
                first = next(iter(out.failures.values()))
                raise FeatcacheError(f"{first.path}: {first.reason} (strict mode; the {run.extracted} images "
                                     "extracted so far are saved)")
    finally:
        for run in runs:  # a shared pass's time is each tap's: together they took it
            run.seconds = time.perf_counter() - start
        bar.close()

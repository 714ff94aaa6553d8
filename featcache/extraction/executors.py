"""Executors: who computes a config's pending work units. The client (``extract()``, holding the
store's lock) scans, writes the manifest and plans; an executor then computes the units and hands
back one UnitOutcome per unit.

Built in: ``InProcessExecutor`` (the default: this process, decoding on threads) and
``DaskExecutor`` (dask_executor.py: one task per unit on a Dask cluster). Another engine is an
``Executor`` subclass passed as ``extract(..., executor=...)``: its workers run
``compute.compute_units`` on their units, opening the store with the client's run token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from ..ingest.scan import digest_files
from ..stores import FeatureStore
from .compute import UnitOutcome, compute_units
from .plan import ConfigPlan
from .reader import decode_threads
from .runner import BackboneRunner


class Executor:
    distributed = False  # True: other processes write the store (a Zarr store, reachable by them)
    shares_passes = False  # True: run() takes ``together``, taps computed in the plan's forward pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027  (nothing to release in this process)
        pass

    def digests(self, paths: list[Path]) -> list[tuple[str, str]]:
        """(content digest, "") or ("", why the file cannot be read) per path: scanning's slow part."""
        return digest_files(paths)

    def check_store(self, st: FeatureStore) -> None:  # noqa: B027
        """Before any unit is submitted: raise if the workers cannot write ``st``."""

    def run(self, st: FeatureStore, plan: ConfigPlan, paths: dict[str, str], workers: int | None,
            on_images: Callable[[int], None]) -> Iterator[UnitOutcome]:
        """Compute ``plan.units``; yield each unit's outcome once it is in the store."""
        raise NotImplementedError


class InProcessExecutor(Executor):
    """This process: rows decode on threads a window ahead of the backbone, across unit boundaries.
    Taps of one network over the same pending rows (``together``) share one forward pass."""

    shares_passes = True

    def run(self, st, plan, paths, workers, on_images, together: tuple[ConfigPlan, ...] = ()):
        runner = (partial(BackboneRunner, plan.cfg, plan.batch_size, plan.device, tuple(p.cfg for p in together))
                  if together else plan.runner_factory())
        yield from compute_units(st, plan.cfg, plan.units, st.row_digests(plan.key), paths, runner=runner,
                                 workers=decode_threads(workers), batch_size=plan.batch_size,
                                 record_failures=st.record_skipped, on_images=on_images,
                                 together=[p.units for p in together])

"""Executors: who computes a config's pending work units. The client (``extract()``, holding the
store's lock) scans, writes the manifest and plans; an executor then computes the units and hands
back one UnitOutcome per unit.

Who computes is one value, ``extract(..., executor=...)``: an ``Executor``, or a text that the
``EXECUTORS`` registry turns into one (``make_executor``). Built in:

    process      this process, decoding on threads (the default)
    local:N      a Dask cluster of N worker processes here (dask_executor.py, one task per unit)
    tcp://HOST:PORT  a running Dask scheduler (any scheme://address Dask takes)
    plan-only    scan, write the image list and plan the rows, then stop: shards run next
    shard:I/N    one shard of a planned store (shards.py), beside the other shards

Another engine is an ``Executor`` subclass (its workers run ``compute.compute_units`` on their
units, opening the store with the client's run token), passed as such or registered as an
``ExecutorKind`` (entry-point group ``featcache.executors``) so that its text works everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ParameterError
from ..ingest.scan import digest_files
from ..registry import Registry
from ..stores import FeatureStore
from .compute import UnitOutcome, compute_units
from .plan import ConfigPlan
from .reader import decode_threads


class Executor:
    distributed = False  # True: other processes write the store (a Zarr store, reachable by them)
    shares_passes = False  # True: run() takes ``together``, taps computed in the plan's forward pass
    plan_only = False  # True: extract() plans the rows and computes none of them
    shard = None  # a shards.Shard: extract() computes that shard of a planned store (shards.run_shard)

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
        runner = plan.runner_factory(tuple(p.cfg for p in together))
        yield from compute_units(st, plan.cfg, plan.units, st[plan.key].row_digests(), paths, runner=runner,
                                 workers=decode_threads(workers), batch_size=plan.batch_size,
                                 record_failures=st.record_skipped, on_images=on_images,
                                 together=[p.units for p in together])


class PlanOnlyExecutor(InProcessExecutor):
    """Computes nothing: extract() scans, writes the image list and plans every config's rows, so
    that shards (``shard:I/N``) can start."""

    plan_only = True


class ShardExecutor(InProcessExecutor):
    """One shard of a store planned by ``plan-only``, computed in this process (shards.py)."""

    def __init__(self, shard):
        self.shard = shard


@dataclass(frozen=True)
class ExecutorKind:
    """What a text such as "local:4" or "shard:0/2" names: ``pattern`` matches the whole text,
    ``make`` builds the executor from it (raising ParameterError("executor", ...) on a bad value)."""

    name: str
    syntax: str  # how it is written, for messages and help
    help: str
    pattern: str
    make: Callable[[str], Executor]

    def matches(self, spec: str) -> bool:
        return re.fullmatch(self.pattern, spec) is not None


EXECUTORS: Registry[ExecutorKind] = Registry("executor", "featcache.executors",
                                             lambda obj: isinstance(obj, ExecutorKind))


def _dask(spec: str) -> Executor:
    from .dask_executor import DaskExecutor

    return DaskExecutor(spec)


def _shard(spec: str) -> Executor:
    from .shards import Shard

    return ShardExecutor(Shard.parse(spec.split(":", 1)[1]))


for _kind in (
    ExecutorKind("process", "process", "this process (the default)", r"process", lambda spec: InProcessExecutor()),
    ExecutorKind("dask", "local:N|tcp://HOST:PORT", "a Dask cluster: N worker processes here, or a running "
                 "scheduler (a store every worker can reach)", r"local:.*|[a-z][a-z0-9+.-]*://\S+", _dask),
    ExecutorKind("plan-only", "plan-only", "scan and plan the rows, compute none: shards run next", r"plan-only",
                 lambda spec: PlanOnlyExecutor()),
    ExecutorKind("shard", "shard:I/N", "the units of chunk index I modulo N of a planned store, beside the "
                 "other shards", r"shard:.*", _shard),
):
    EXECUTORS.register(_kind)


def executor_syntax() -> str:
    """Every way to write an executor, for messages and help: "process, local:N|..., ..."."""
    return ", ".join(kind.syntax for kind in EXECUTORS)


def make_executor(executor: Executor | str | None) -> Executor:
    """None: this process. An Executor: itself. A text: the registered kind whose pattern matches it."""
    if executor is None:
        return InProcessExecutor()
    if isinstance(executor, Executor):
        return executor
    if isinstance(executor, str):
        spec = executor.strip()
        for kind in EXECUTORS:
            if kind.matches(spec):
                return kind.make(spec)
    raise ParameterError("executor", f"expected one of {executor_syntax()}, got {executor!r}")

"""DaskExecutor: one Dask task per work unit, on a LocalCluster ("local:N") or a running scheduler
("tcp://host:8786"), through the cluster helper `sweep` uses too (featcache/cluster.py).

The client (``extract()``) holds the store's lock, scans (the files' content digests are computed
on the workers, a batch of files per task), writes the manifest and plans. Each task then carries
one unit: the FeatureConfig RECORD (never a model), the unit's rows, their digests and files, and
the run token. A worker builds the backbone from the record once per config and keeps it, opens
the store with the token, and writes the unit's features, checksums, then status; it writes
nothing shared. The client records the skip reasons and stats. A worker killed mid-unit loses that
unit only: the scheduler runs its task again elsewhere, and the rewrite covers the whole region.

Bit for bit the same store as one process: a unit's forward batches are the same whoever runs it
(and the workers' thread counts are chosen for it: featcache/cluster.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from ..cluster import DaskCluster
from ..config import FeatureConfig
from ..errors import FeatcacheError, describe_error
from ..ingest.scan import digest_files
from ..stores import FeatureStore, WorkUnit, open_store
from .compute import UnitOutcome, compute_units
from .executors import Executor
from .plan import ConfigPlan
from .runner import BackboneRunner

DIGEST_BATCH = 256  # files hashed per task: big enough to amortise a task's overhead (~1 ms)


@dataclass(frozen=True)
class UnitTask:
    """Everything a worker needs to compute one unit, and nothing heavy."""

    store: str
    token: str  # the client's run token: admits the worker as a writer of its units
    config: dict  # FeatureConfig.to_dict(): backbone record, preprocessing numbers, augmentation
    batch_size: int
    unit: WorkUnit
    region: tuple[str, ...]  # row digests of [unit.start, unit.stop)
    paths: dict[str, str]  # digest -> image file, for the unit's rows
    workers: int  # decoding threads
    device: str | None = None  # TensorFlow device name; None: the worker's first GPU if it has one


_runners: dict[tuple, BackboneRunner] = {}  # this worker's model: (config key, batch size, device)
_computing = threading.Lock()  # one unit at a time per worker process: the backbone has all its threads


def worker_runner(cfg: FeatureConfig, batch_size: int, device: str | None = None) -> BackboneRunner:
    """The worker's model for ``cfg``, built on its first unit and kept (only the latest config's)."""
    if (cfg.key, batch_size, device) not in _runners:
        _runners.clear()
        _runners[(cfg.key, batch_size, device)] = BackboneRunner(cfg, batch_size, device)
    return _runners[(cfg.key, batch_size, device)]


def run_unit(task: UnitTask) -> UnitOutcome:
    """Worker side: compute one unit into the store."""
    cfg = FeatureConfig.from_dict(task.config)
    with _computing, open_store(task.store, "a", token=task.token) as st:
        digests = {task.unit.start + i: d for i, d in enumerate(task.region)}
        (outcome,) = compute_units(st, cfg, [task.unit], digests, task.paths,
                                   runner=lambda: worker_runner(cfg, task.batch_size, task.device), workers=task.workers,
                                   batch_size=task.batch_size, record_failures=None)
    return outcome


def _can_write(store: str, token: str) -> str:
    """Worker side: "" when this worker can open ``store`` as a worker of the run, else why not."""
    try:
        open_store(store, "a", token=token).close()
    except Exception as exc:  # noqa: BLE001  (reported to the client, with the worker's address)
        return str(exc) if isinstance(exc, FeatcacheError) else describe_error(exc)
    return ""


class DaskExecutor(Executor):
    distributed = True

    def __init__(self, cluster: str | DaskCluster, *, decode_threads: int = 2, connect_timeout: float = 30.0):
        self.cluster = cluster if isinstance(cluster, DaskCluster) else DaskCluster(cluster,
                                                                                    connect_timeout=connect_timeout)
        self.spec = self.cluster.spec
        self.decode_threads = decode_threads
        self.connect_timeout = connect_timeout

    @property
    def client(self):
        return self.cluster.client

    @property
    def entered(self) -> int:  # how many callers hold the cluster open (0: none started or kept)
        return self.cluster.entered

    def __enter__(self) -> DaskExecutor:
        self.cluster.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.cluster.__exit__(*exc)

    def close(self) -> None:
        self.cluster.close()

    def _key(self, *parts) -> str:
        return "featcache-" + "-".join(map(str, parts))

    def digests(self, paths: list[Path]) -> list[tuple[str, str]]:
        batches = [paths[i:i + DIGEST_BATCH] for i in range(0, len(paths), DIGEST_BATCH)]
        futures = self.client.map(digest_files, batches, pure=False)
        return [d for batch in self.client.gather(futures) for d in batch]

    def check_store(self, st: FeatureStore) -> None:
        """Every worker must open the store where the client does (a file system they all mount)."""
        try:
            self.client.wait_for_workers(1, timeout=self.connect_timeout)
        except TimeoutError:
            raise FeatcacheError(f"the Dask scheduler at {self.spec} has no workers",
                                 remedy=f"start some with `dask worker {self.spec}`") from None
        answers = self.client.run(_can_write, str(st.path), st.token)
        if bad := {w: why for w, why in answers.items() if why}:
            worker, why = next(iter(bad.items()))
            raise FeatcacheError(f"{st.path}: {len(bad)} of {len(answers)} Dask workers cannot write this store "
                                 f"(worker {worker}: {why})",
                                 remedy="put the store on a file system every worker mounts at the same path")

    def run(self, st: FeatureStore, plan: ConfigPlan, paths: dict[str, str], workers: int | None,
            on_images) -> Iterator[UnitOutcome]:
        row_digests = st[plan.key].row_digests()
        config = plan.cfg.to_dict()
        tasks = [UnitTask(str(st.path), st.token, config, plan.batch_size, unit,
                          tuple(row_digests[unit.start:unit.stop]),
                          {row_digests[r]: paths[row_digests[r]] for r in unit.rows},
                          workers or self.decode_threads, plan.device) for unit in plan.units]
        # a deterministic key per unit and run: a retried task is the same task
        keys = [self._key(plan.key, unit.start, st.token[:8]) for unit in plan.units]
        calls = [(task,) for task in tasks]
        with closing(self.cluster.results(run_unit, calls, keys=keys, what=f"a unit of {plan.key}")) as outcomes:
            for outcome in outcomes:
                if outcome.failures:  # the client records why; the worker wrote the rows' FAILED status
                    st.record_skipped(outcome.failures)
                on_images(outcome.rows * outcome.views)
                yield outcome

"""One Dask cluster helper for every command that computes on one: `extract`'s executor
(extraction/dask_executor.py, one task per work unit) and `sweep`'s tasks (train/sweep.py, one task
per group of trials). ``local:N`` starts N worker processes here; a scheduler address
(``tcp://host:8786``) uses a running cluster. Install with ``pip install 'featcache[dask]'``.

LocalCluster workers get max(2, cores // N) TensorFlow threads each, never 1: TensorFlow's
single-threaded kernels round differently from its multi-threaded ones (measured on
efficientnet_lite0: features differ in the last bits between 1 and 2 intra-op threads; 2, 3, 4 and
8 agree), and a Dask run must write what one process writes.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator

from .errors import FeatcacheError, ParameterError, describe_error
from .install import pip_install

LOCAL = re.compile(r"local:(\d+)")
ADDRESS = re.compile(r"[a-z][a-z0-9+.-]*://\S+")
SYNTAX = "local:N (a local cluster of N worker processes) or a scheduler address such as tcp://host:8786"


def is_cluster_spec(spec: str) -> bool:
    """Whether ``spec`` is meant as a Dask cluster (checked in full by DaskCluster)."""
    spec = spec.strip()
    return spec.startswith("local:") or ADDRESS.fullmatch(spec) is not None


def dask_cluster(executor) -> DaskCluster | None:
    """What a caller that computes here or on Dask (a sweep) was given: None or "process" (here), a
    cluster's text, a DaskCluster, or an executor holding one (a DaskExecutor: one cluster, and its
    workers, for an extract and a sweep)."""
    if executor is None or (isinstance(executor, str) and executor.strip() == "process"):
        return None
    if isinstance(executor, DaskCluster):
        return executor
    if isinstance(getattr(executor, "cluster", None), DaskCluster):
        return executor.cluster
    if isinstance(executor, str) and is_cluster_spec(executor):
        return DaskCluster(executor)
    raise ParameterError("executor", f"expected process, {SYNTAX}, got {executor!r}")


class DaskCluster:
    """A client of a Dask cluster, started on first use; entered several times (a caller keeping
    one cluster, and its workers' models, for several runs), it closes on the last exit."""

    def __init__(self, spec: str, *, connect_timeout: float = 30.0, param: str = "executor"):
        spec = spec.strip()
        if m := LOCAL.fullmatch(spec):
            self.local_workers = int(m.group(1))
            if self.local_workers < 1:
                raise ParameterError(param, "local:N needs at least 1 worker")
        elif ADDRESS.fullmatch(spec):
            self.local_workers = 0
        else:
            raise ParameterError(param, f"expected {SYNTAX}, got {spec!r}")
        self.spec = spec
        self.connect_timeout = connect_timeout
        self.client = self.local = None
        self.entered = 0

    def __enter__(self) -> DaskCluster:
        self.entered += 1
        if self.client is None:
            self._start()
        return self

    def __exit__(self, *exc) -> None:
        self.entered -= 1
        if not self.entered:
            self.close()

    def _start(self) -> None:
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError:
            raise FeatcacheError("a Dask run needs Dask", remedy=pip_install("featcache[dask]")) from None
        if self.local_workers:
            n = self.local_workers
            threads = str(max(2, (os.cpu_count() or 1) // n))  # never 1: see the module's docstring
            env = {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": threads,
                   "TF_CPP_MIN_LOG_LEVEL": "2"}
            # Dask sets MALLOC_TRIM_THRESHOLD_ in its workers, which freezes glibc's mmap threshold:
            # every large TensorFlow buffer is then mapped and unmapped per batch (measured: 13%
            # slower on EfficientNet-Lite0). Spawned, not forked: TensorFlow does not survive a fork.
            environ = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
                       if k != "MALLOC_TRIM_THRESHOLD_"}
            with dask.config.set({"distributed.worker.multiprocessing-method": "spawn",
                                  "distributed.nanny.pre-spawn-environ": environ}):
                self.local = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, env=env,
                                          dashboard_address=None, silence_logs=logging.ERROR)
            self.client = Client(self.local)
        else:
            try:
                self.client = Client(self.spec, timeout=self.connect_timeout)
            except OSError as exc:
                raise FeatcacheError(f"cannot reach the Dask scheduler at {self.spec} ({describe_error(exc)})",
                                     remedy="is `dask scheduler` running there?") from None

    def close(self) -> None:
        for part in (self.client, self.local):
            if part is not None:
                part.close()
        self.client = self.local = None

    def results(self, fn: Callable, calls: Iterable[tuple], *, keys: Iterable[str] | None = None,
                what: str = "a task") -> Iterator:
        """Submit ``fn(*args)`` per args of ``calls``; yield each result as it completes. A dead worker's task is
        run again elsewhere by the scheduler; workers dying again and again end the run with one
        line. What is not done when the caller stops is cancelled."""
        from distributed import as_completed
        from distributed.client import FutureCancelledError
        from distributed.scheduler import KilledWorker

        keys = list(keys) if keys is not None else None
        futures = [self.client.submit(fn, *args, **({"key": keys[i]} if keys else {"pure": False}))
                   for i, args in enumerate(calls)]
        try:
            for future in as_completed(futures):
                try:
                    yield future.result()
                except KilledWorker as exc:
                    raise FeatcacheError(f"Dask workers died computing {what} ({exc}); what was written so far "
                                         "is kept", remedy="run the same command again") from None
                except FutureCancelledError:
                    raise FeatcacheError("the Dask run was cancelled; what was written so far is kept") from None
        finally:
            self.client.cancel([f for f in futures if not f.done()])

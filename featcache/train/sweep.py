"""Hyper-parameter sweep of one head on cached features: every combination of a grid.

The features are read once (or streamed, when they do not fit the memory budget); the
combinations are trained in groups that share each pass over the features, as the head's
``group_key``/``fit_group`` say (sweep_tasks.py: Keras heads in one graph, logreg's C values in one
stacked solve, knn heads on one bank, a plugin head as it declares) and scored on validation; the
leaderboard is sorted by validation accuracy (ties: lower validation loss). The test split is
touched once, by the chosen (best) configuration only, so the reported test accuracy stays an
honest estimate. Times: each trial's ``fit_seconds`` is its share of its group's fit, and the
result's ``seconds`` the whole sweep's (loading, fitting, evaluating, writing).
"""

from __future__ import annotations

import itertools
import time
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import FeatcacheError, ParameterError
from ..heads import Head, clone, make_head
from ..progress import progress_bar
from .fit import FitResult, evaluate_on_test, load_training_data, write_run
from .metrics import SplitMetrics, write_leaderboard
from .run import ValidationSource, replaced_folder
from .sweep_tasks import plan_tasks, run_task

SWEEP_FILE = "sweep.json"  # the leaderboard; also what makes a folder a sweep's, which a new sweep replaces


@dataclass
class Trial:
    index: int
    params: dict  # the grid values of this combination
    result: FitResult = field(repr=False)
    group: int = 0  # the task that trained it
    group_size: int = 1  # trials trained together with it (itself included)

    @property
    def val(self) -> SplitMetrics:
        return self.result.val

    def row(self) -> dict:
        return {"trial": self.index, **self.params, "val_accuracy": self.val.accuracy,
                "val_macro_f1": self.val.macro_f1, "val_loss": self.val.log_loss,
                "fit_seconds": round(self.result.fit_seconds, 3), "group": self.group,
                "group_size": self.group_size, "run_dir": self.result.run_dir,
                **({"val_map": self.val.mean_ap} if self.result.multilabel else {})}

    @property
    def score(self) -> float:
        """What ranks the trial: validation accuracy (multi-label: mean average precision)."""
        return self.val.mean_ap if self.result.multilabel else self.val.accuracy


@dataclass
class SweepResult:
    head: str
    keys: list[str]
    grid: dict[str, list]
    trials: list[Trial]  # the leaderboard: best first
    test: SplitMetrics | None  # of the best trial only
    out: str | None = None
    seconds: float = 0.0  # the whole sweep
    fit_seconds: float = 0.0  # of which fitting

    @property
    def best(self) -> Trial:
        return self.trials[0]

    def leaderboard(self) -> list[dict]:
        return [t.row() for t in self.trials]

    def to_dict(self) -> dict:
        return {"head": self.head, "keys": self.keys, "grid": self.grid, "trials": len(self.trials),
                "seconds": round(self.seconds, 3), "fit_seconds": round(self.fit_seconds, 3),
                "leaderboard": self.leaderboard(),
                "best": {"params": self.best.params, "all_params": self.best.result.params,
                         "val_accuracy": self.best.val.accuracy, "run_dir": self.best.result.run_dir,
                         "test_accuracy": self.test.accuracy if self.test else None,
                         "test_macro_f1": self.test.macro_f1 if self.test else None},
                "out": self.out}


def expand_grid(grid: dict[str, list]) -> list[dict]:
    """{"lr": [1e-3, 3e-4], "dropout": [0.3]} -> [{"lr": 1e-3, "dropout": 0.3}, {"lr": 3e-4, ...}]"""
    names = list(grid)
    values = [list(v) if isinstance(v, list | tuple) else [v] for v in grid.values()]
    for name, v in zip(names, values, strict=True):
        if not v:
            raise ParameterError(name, "a swept parameter needs at least one value")
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def _slug(params: dict) -> str:
    return "-".join(f"{k}{v}" for k, v in params.items()) or "defaults"


def sweep(store: str | Path, backbones: list[str], head: Head | str = "mlp", grid: dict[str, list] | None = None,
          out: str | Path | None = None, seed: int = 0, progress: bool = True,
          memory_limit: str | int | None = None, executor=None) -> SweepResult:
    """Train a copy of ``head`` (its parameters are the fixed ones) for every combination of ``grid``.

    With ``out``: one run folder per trial under ``out/trials/``, plus ``leaderboard.csv`` and
    ``sweep.json``; the best trial's metrics.json also holds its test metrics. Features larger
    than ``memory_limit`` are streamed from the store. ``executor``: a Dask cluster ("local:N", a
    scheduler address, a DaskCluster or a DaskExecutor) runs the sweep's tasks (each group of trials trained in
    one pass is a task), each worker reading the features from the store itself.
    """
    start = time.perf_counter()
    base = make_head(head) if isinstance(head, str) else head
    grid = dict(grid or {})
    combos = expand_grid(grid)
    models = [clone(base).set_params(**combo) for combo in combos]  # bad names or values: fail before training
    data = load_training_data(store, backbones, seed, memory_limit)
    try:
        if data.validation == ValidationSource.NONE:
            raise FeatcacheError("a sweep ranks configurations on validation images, and this store has none "
                                 "(and too few training images to hold some out); re-extract with a validation split")
        if out is None:
            return _sweep(data, base, grid, combos, models, None, None, seed, memory_limit, executor, progress, start)
        # a second sweep on one out is refused; a killed one leaves the previous sweep's folder whole
        with replaced_folder(out, SWEEP_FILE) as (staging, final):
            return _sweep(data, base, grid, combos, models, staging, final, seed, memory_limit, executor, progress,
                          start)
    finally:
        data.close()


def _sweep(data, base, grid, combos, models, out_dir: Path | None, final: Path | None, seed, memory_limit, executor,
           progress, start) -> SweepResult:
    """Train and rank the trials; run folders and outputs under ``out_dir``, which becomes ``final``
    (the paths the result records)."""
    runs = [str(out_dir / "trials" / f"{i:03d}-{_slug(c)}") if out_dir else None for i, c in enumerate(combos)]
    tasks = plan_tasks(base, combos, models, runs, data.store_path, list(data.keys), seed, memory_limit)
    trials = []
    bar = progress_bar(total=len(combos), desc=f"sweep {base.name}", unit="fit", enabled=progress)
    try:
        for o in _outcomes(tasks, data, executor, progress):
            trials.append(Trial(o.index, o.params, o.result, o.task, o.task_size))
            best = max(trials, key=lambda t: t.score)  # the leader so far, and what it scores
            bar.set_postfix({"best": f"{best.score:.3f}", **best.params}, refresh=False)
            bar.update(1)
    finally:
        bar.close()
    trials.sort(key=lambda t: (-t.score, t.val.log_loss, t.index))
    best = evaluate_on_test(trials[0].result, data)
    trials[0] = replace(trials[0], result=best)
    if out_dir is not None:
        write_run(best, data, best.run_dir)  # again, now with the test metrics
        trials = [replace(t, result=replace(t.result, run_dir=str(final / Path(t.result.run_dir).relative_to(out_dir))))
                  for t in trials]
    result = SweepResult(base.name, data.keys, grid, trials, best.test, str(final) if final else None,
                         fit_seconds=sum(t.result.fit_seconds for t in trials))
    result.seconds = time.perf_counter() - start
    if out_dir is not None:
        _write_outputs(result, out_dir)
    return result


def _outcomes(tasks: list, data, executor, progress: bool):
    """Every trial's outcome: the tasks run here, one after another, or as tasks on a Dask cluster
    (the cluster helper extract's executor uses)."""
    from ..cluster import dask_cluster

    cluster = dask_cluster(executor)
    if cluster is None:
        for t, task in enumerate(tasks):
            yield from run_task(task, data, t, progress=progress and len(task.indices) > 1)
        return
    with cluster, closing(cluster.results(run_task, [(task, None, t) for t, task in enumerate(tasks)],
                                          what="a sweep task")) as outcomes:
        for outcome in outcomes:
            yield from outcome


def _write_outputs(result: SweepResult, out: Path) -> None:
    write_leaderboard(result.leaderboard(), out / "leaderboard.csv", out / SWEEP_FILE, result.to_dict())


__all__ = ["SweepResult", "Trial", "expand_grid", "sweep"]

"""A sweep's units of work: trials grouped so that one pass over the features trains them all.

- Keras heads that share a batch size (and the seed) train together (heads/keras_group.py): one
  graph, every batch read once, each head its own optimizer and early stopping.
- logreg trials that differ only in C are one stacked solve of all their C values
  (heads/logreg_solver.py); each trial then gets its C's solution.
- Any other head (a plugin's) is one fit per trial.

``SweepTask`` is a plain record (the store, the head type and the trials' parameters) and
``run_task`` does one task's work: the shape of a task an executor could ship to a worker, which
would open the store itself (``data=None``).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

from ..heads import Head, KerasHead, LogRegHead, clone, get_head_class
from ..heads.keras_group import fit_together, group_key
from .fit import FitResult, TrainingData, fitted_result, load_training_data, prepare_run_dir

TOGETHER_MAX = 16  # Keras heads per graph: beyond this a step's memory and trace time grow for little gain


@dataclass(frozen=True)
class SweepTask:
    store: str
    backbones: tuple[str, ...]
    seed: int
    memory_limit: int | str | None
    head: str  # head type
    params: tuple[dict, ...]  # every parameter of each trial's head
    combos: tuple[dict, ...]  # the grid values of each trial
    indices: tuple[int, ...]  # each trial's index in the sweep
    runs: tuple[str | None, ...]  # each trial's run folder (None: none written)
    kind: str  # "together" (Keras), "c_path" (logreg over C) or "single"


@dataclass
class TrialOutcome:
    index: int
    params: dict  # the grid values
    result: FitResult
    seconds: float  # this trial's share of its task's fit time
    task: int  # which task trained it
    task_size: int  # trials trained together with it (itself included)


def plan_tasks(base: Head, combos: list[dict], models: list[Head], runs: list[str | None], store: str,
               backbones: list[str], seed: int, memory_limit) -> list[SweepTask]:
    """Group the trials (``models`` are the trials' heads) into tasks, keeping grid order within each."""
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(models):
        if isinstance(m, KerasHead):
            key = ("together", group_key(m))
        elif isinstance(m, LogRegHead) and m.C is not None:
            key = ("c_path", tuple(sorted((k, repr(v)) for k, v in m.get_params().items() if k not in ("C", "solver"))))
        else:
            key = ("single", i)
        groups.setdefault(key, []).append(i)
    tasks = []
    for (kind, _), members in groups.items():
        size = TOGETHER_MAX if kind == "together" else len(members)
        for s in range(0, len(members), size):
            part = members[s:s + size]
            tasks.append(SweepTask(store, tuple(backbones), seed, memory_limit, base.name,
                                   tuple(models[i].get_params() for i in part), tuple(combos[i] for i in part),
                                   tuple(part), tuple(runs[i] for i in part), kind if len(part) > 1 else "single"))
    return sorted(tasks, key=lambda t: t.indices[0])


def run_task(task: SweepTask, data: TrainingData | None = None, task_id: int = 0,
             progress: bool = False) -> list[TrialOutcome]:
    """Train one task's trials and evaluate each on validation (test is left to the sweep's best)."""
    own = data is None
    data = data or load_training_data(task.store, list(task.backbones), task.seed, task.memory_limit)
    try:
        cls = get_head_class(task.head)
        models = [cls(**p) for p in task.params]
        run_dirs = [prepare_run_dir(r) if r else None for r in task.runs]
        start = time.perf_counter()
        if task.kind == "together":
            fit_together(models, data.X_train, data.y_train, data.X_val, data.y_val, len(data.classes), progress)
        elif task.kind == "c_path":
            models = _fit_c_path(models, data)
        else:
            m, r = models[0], run_dirs[0]
            m.fit(data.X_train, data.y_train, data.X_val, data.y_val, n_classes=len(data.classes), workdir=r,
                  progress=progress)
        share = (time.perf_counter() - start) / len(models)
        out = []
        for i, m, r, combo in zip(task.indices, models, run_dirs, task.combos, strict=True):
            if task.kind == "together" and r is not None:
                _write_history(m, r)
            out.append(TrialOutcome(i, combo, fitted_result(data, m, share, r, evaluate_test=False), share, task_id,
                                    len(models)))
        return out
    finally:
        if own:
            data.close()


def _fit_c_path(models: list[LogRegHead], data: TrainingData) -> list[LogRegHead]:
    """One stacked solve of every trial's C; each trial's head gets its own C's solution."""
    Cs = [m.C for m in models]
    path = clone(models[0]).set_params(C=None, c_grid=sorted(set(Cs)), solver="lbfgs")
    path.fit(data.X_train, data.y_train, data.X_val, data.y_val, n_classes=len(data.classes))
    by_c = {row["C"]: (row, path.coef_path_[g], path.intercept_path_[g]) for g, row in enumerate(path.grid_scores_)}
    for m in models:
        row, coef, intercept = by_c[float(m.C)]
        m.mean_, m.scale_, m.coef_, m.intercept_, m.C_ = path.mean_, path.scale_, coef, intercept, float(m.C)
        m.grid_scores_, m.n_rows_, m.solver_ = [row], path.n_rows_, "lbfgs"
        m._set_classes(path.n_classes_)
    return models


def _write_history(head: KerasHead, run_dir: Path) -> None:
    """history.csv as Keras' CSVLogger writes it for a head fitted alone."""
    columns = ["epoch", *sorted(head.history_)]
    with (Path(run_dir) / "history.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for e in range(head.epochs_trained_):
            w.writerow([e, *(head.history_[k][e] for k in columns[1:])])


__all__ = ["SweepTask", "TrialOutcome", "plan_tasks", "run_task"]

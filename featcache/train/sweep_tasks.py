"""A sweep's units of work: trials grouped so that one pass over the features trains them all.

Grouping is the head's own say (``Head.group_key`` and ``Head.fit_group``): trials whose heads
give one key (not None) are one task, at most the head type's ``group_limit`` trials each, and
one ``fit_group`` call trains them. The built-in heads: Keras heads that share a batch size and
seed train in one graph (heads/keras_group.py), logreg trials that differ only in C are one
stacked solve (heads/logreg_solver.py), knn trials share one neighbour bank; a head without a key
(logreg choosing C on validation, a plugin that declares none) is one fit per trial.

``SweepTask`` is a plain record (the store, the head type and the trials' parameters) and
``run_task`` does one task's work: the shape of a task an executor could ship to a worker, which
would open the store itself (``data=None``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..heads import FitContext, Head, get_head_class
from .fit import FitResult, TrainingData, fitted_result, load_training_data, prepare_run_dir


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
    kind: str  # "group" (one fit_group call) or "single" (one fit)


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
        key = m.group_key()
        groups.setdefault(("single", i) if key is None else ("group", type(m).name, key), []).append(i)
    tasks = []
    for key, members in groups.items():
        size = (type(models[members[0]]).group_limit or len(members)) if key[0] == "group" else 1
        for s in range(0, len(members), size):
            part = members[s:s + size]
            tasks.append(SweepTask(store, tuple(backbones), seed, memory_limit, base.name,
                                   tuple(models[i].get_params(deep=False) for i in part),
                                   tuple(combos[i] for i in part), tuple(part), tuple(runs[i] for i in part),
                                   "group" if len(part) > 1 else "single"))
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
        contexts = [FitContext(n_classes=len(data.classes), workdir=r, progress=progress, classes=data.classes,
                               features=data.configs) for r in run_dirs]
        validation = (data.X_val, data.y_val) if len(data.y_val) else None
        start = time.perf_counter()
        if task.kind == "group":
            models = list(cls.fit_group(models, data.X_train, data.y_train, validation=validation, contexts=contexts))
        else:
            models[0].fit(data.X_train, data.y_train, validation=validation, context=contexts[0])
        share = (time.perf_counter() - start) / len(models)
        out = []
        for i, m, r, combo in zip(task.indices, models, run_dirs, task.combos, strict=True):
            out.append(TrialOutcome(i, combo, fitted_result(data, m, share, r, evaluate_test=False), share, task_id,
                                    len(models)))
        return out
    finally:
        if own:
            data.close()


__all__ = ["SweepTask", "TrialOutcome", "plan_tasks", "run_task"]

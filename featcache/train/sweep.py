"""Hyper-parameter sweep of one head on cached features: every combination of a grid.

The features are read once; every combination is trained and scored on validation; the
leaderboard is sorted by validation accuracy (ties: lower validation loss). The test split is
touched once, by the chosen (best) configuration only, so the reported test accuracy stays an
honest estimate.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FeatcacheError, ParameterError
from ..heads import Head, clone, make_head
from ..progress import progress_bar
from .fit import FitResult, evaluate_on_test, fit_on_data, load_training_data, write_run
from .metrics import SplitMetrics, write_leaderboard
from .run import ValidationSource


@dataclass
class Trial:
    index: int
    params: dict  # the grid values of this combination
    result: FitResult = field(repr=False)

    @property
    def val(self) -> SplitMetrics:
        return self.result.val

    def row(self) -> dict:
        return {"trial": self.index, **self.params, "val_accuracy": self.val.accuracy,
                "val_macro_f1": self.val.macro_f1, "val_loss": self.val.log_loss,
                "fit_seconds": round(self.result.fit_seconds, 3), "run_dir": self.result.run_dir}


@dataclass
class SweepResult:
    head: str
    keys: list[str]
    grid: dict[str, list]
    trials: list[Trial]  # the leaderboard: best first
    test: SplitMetrics | None  # of the best trial only
    out: str | None = None

    @property
    def best(self) -> Trial:
        return self.trials[0]

    def leaderboard(self) -> list[dict]:
        return [t.row() for t in self.trials]

    def to_dict(self) -> dict:
        return {"head": self.head, "keys": self.keys, "grid": self.grid, "leaderboard": self.leaderboard(),
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
          out: str | Path | None = None, seed: int = 0, progress: bool = True) -> SweepResult:
    """Train a copy of ``head`` (its parameters are the fixed ones) for every combination of ``grid``.

    With ``out``: one run folder per trial under ``out/trials/``, plus ``leaderboard.csv`` and
    ``sweep.json``; the best trial's metrics.json also holds its test metrics.
    """
    base = make_head(head) if isinstance(head, str) else head
    grid = dict(grid or {})
    combos = expand_grid(grid)
    models = [clone(base).set_params(**combo) for combo in combos]  # bad names or values: fail before training
    data = load_training_data(store, backbones, seed)
    if data.validation == ValidationSource.NONE:
        raise FeatcacheError("a sweep ranks configurations on validation images, and this store has none "
                             "(and too few training images to hold some out); re-extract with a validation split")
    out_dir = Path(out).expanduser().resolve() if out is not None else None
    trials = []
    bar = progress_bar(total=len(combos), desc=f"sweep {base.name}", unit="fit", enabled=progress)
    try:
        for i, (combo, model) in enumerate(zip(combos, models, strict=True)):
            run = out_dir / "trials" / f"{i:03d}-{_slug(combo)}" if out_dir else None
            result = fit_on_data(data, model, out=run, progress=False, evaluate_test=False)
            trials.append(Trial(i, combo, result))
            bar.set_postfix({"val_acc": f"{result.val.accuracy:.3f}"}, refresh=False)
            bar.update(1)
    finally:
        bar.close()
    trials.sort(key=lambda t: (-t.val.accuracy, t.val.log_loss, t.index))
    best = trials[0].result
    evaluate_on_test(best, data)
    result = SweepResult(base.name, data.keys, grid, trials, best.test, str(out_dir) if out_dir else None)
    if out_dir is not None:
        write_run(best, data, best.run_dir)  # again, now with the test metrics
        _write_outputs(result, out_dir)
    return result


def _write_outputs(result: SweepResult, out: Path) -> None:
    write_leaderboard(result.leaderboard(), out / "leaderboard.csv", out / "sweep.json", result.to_dict())


__all__ = ["SweepResult", "Trial", "expand_grid", "sweep"]

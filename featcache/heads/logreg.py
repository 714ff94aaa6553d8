"""`logreg`: scikit-learn's multinomial LogisticRegression on standardized cached features.

Training rows are ALL cached views of the training images (view 0 and the K augmented ones).
Unless C is given, C is chosen on the validation split (view 0) from a log grid: best accuracy,
ties broken by the lower log-loss. Each C of the grid is solved from zero, as a fit given that C
alone is, so the C the search reports reproduces its scores. Warm starts (``warm_start=True``: each
C starts from the previous C's solution) halve the path's cost, but a weakly regularized problem
is so flat that a warm start already meets the stopping test near the previous C's optimum, so
those points are not what a fit at their C gives. Without validation rows and without C, C=1.0
(scikit-learn's default) is used.

Two solvers reach the same optimum (scikit-learn's objective and stopping test): scikit-learn's
lbfgs, one C after another (``solver="sklearn"``), and featcache's stacked L-BFGS
(``solver="lbfgs"``, logreg_solver.py), which solves every C of the grid together in one pass over
the rows per iteration and reads them in blocks, so it also trains on features streamed from a
store. ``solver="auto"`` (the default) keeps scikit-learn for rows held in memory, as before, and
takes the stacked solver for streamed rows.

Multi-label (y a multi-hot (n, classes) 0/1 matrix): one-vs-rest, one binary
LogisticRegression per class on the same standardized rows (scikit-learn, rows in memory; the
stacked solver refuses), per-class sigmoid probabilities; C is chosen on validation by the macro
mean average precision, ties broken by the lower binary cross-entropy.

Learned state is saved as plain arrays (``logreg.npz``) and JSON (``logreg.json``), never pickle;
prediction is numpy only, so a loaded head does not need scikit-learn.
"""

from __future__ import annotations

import csv
import json
import time
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import FeatcacheError, ParameterError
from .base import FitContext, Head, fit_inputs, register_head
from .data import as_rows, map_blocks
from .logreg_solver import moments, solve_path
from .params import Param

DEFAULT_C_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
FALLBACK_C = 1.0
STATE_FILE, META_FILE, HISTORY_FILE = "logreg.npz", "logreg.json", "history.csv"
SOLVERS = ("auto", "sklearn", "lbfgs")
BLOCK_ROWS = 1024  # rows per block of the stacked solver on rows in memory


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-15, None))))


@register_head
class LogRegHead(Head):
    name = "logreg"
    files: ClassVar[tuple[str, ...]] = (STATE_FILE, META_FILE)
    multilabel_capable: ClassVar[bool] = True
    multilabel_ = False

    parameters = (
        Param("C", float, None, "Inverse regularization (default: the best of the C grid on validation).",
              low=0, low_open=True, optional=True),
        Param("c_grid", float, None, f"C values tried on validation (default: {', '.join(map(str, DEFAULT_C_GRID))}).",
              low=0, low_open=True, optional=True, multiple=True),
        Param("max_iter", int, 1000, "Solver iterations per C.", low=1),
        Param("tol", float, 1e-4, "Solver tolerance.", low=0, low_open=True),
        Param("warm_start", bool, False, "Start each C of the search from the previous C's solution: about 2x "
              "faster, but its points are then not what a fit at their C alone gives.", sweep=False),
        Param("solver", str, "auto", "sklearn: one C after another; lbfgs: every C together, rows in memory or "
              "streamed; auto: sklearn in memory, lbfgs when streamed.", choices=SOLVERS, sweep=False),
        Param("seed", int, 0, "Solver seed.", sweep=False),
    )

    # -- learned state -> probabilities (numpy, float64) -----------------------------------------
    def _logits(self, X) -> np.ndarray:
        return map_blocks(X, lambda xb: ((np.asarray(xb, np.float64) - self.mean_) / self.scale_) @ self.coef_.T
                          + self.intercept_, len(self.intercept_))

    @staticmethod
    def _proba_from_logits(z: np.ndarray, multilabel: bool = False) -> np.ndarray:
        if multilabel:  # one-vs-rest: an independent sigmoid per class
            return 1.0 / (1.0 + np.exp(-z))
        if z.shape[1] == 1:  # scikit-learn's binary case: one logit for class 1, sigmoid
            p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.stack([1.0 - p1, p1], axis=1)
        return _softmax(z)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self._proba_from_logits(self._logits(X), self.multilabel_).astype(np.float32)

    # -- training ----------------------------------------------------------------------------------
    def fit(self, X, y, *, validation=None, context: FitContext | None = None) -> LogRegHead:
        from threadpoolctl import threadpool_limits

        X_train, y_train, X_val, y_val, context = fit_inputs(X, y, validation, context)
        workdir, tensorboard_dir = context.workdir, context.tensorboard_dir
        X_train = as_rows(X_train, y_train)  # arrays or a store's view
        streamed = not X_train.in_memory  # rows in the store: the stacked solver, which reads blocks
        if len(X_train.shape) < 3:
            raise ValueError("X_train must be (n, V, D): the cached views of each training image")
        n, v = X_train.shape[:2]
        y_train = np.asarray(y_train)
        if y_train.ndim == 2:
            return self._fit_multilabel(X_train, y_train, X_val, y_val, context, streamed)
        n_classes = int(context.n_classes or 1 + np.max(y_train))
        missing = sorted(set(range(n_classes)) - set(np.unique(y_train).tolist()))
        if missing or n_classes < 2:
            raise FeatcacheError(f"logreg needs training images of every class (missing labels: {missing})")

        has_val = X_val is not None
        if self.C is not None:
            grid = [float(self.C)]
        elif has_val:
            grid = sorted(float(c) for c in (self.c_grid or DEFAULT_C_GRID))
        else:
            grid = [FALLBACK_C]
        self.solver_ = "lbfgs" if streamed or self.solver == "lbfgs" else "sklearn"
        rows = _StreamedRows(X_train) if streamed else _MemoryRows(X_train.load(), y_train)
        self.mean_, self.scale_ = rows.mean, rows.scale
        # One BLAS thread: these matrix products are small, so threads cost more in synchronisation
        # than they save, and ~10x more when the cores are shared with other work (measured).
        with threadpool_limits(limits=1, user_api="blas"):
            if self.solver_ == "sklearn":
                best = self._fit_path(grid, rows.standardized(), rows.y, X_train, y_train,
                                      X_val if has_val else None, y_val)
            else:
                best = self._fit_stacked(grid, rows, n_classes, X_train, y_train, X_val if has_val else None, y_val)
        _, self.C_, self.coef_, self.intercept_ = best
        self._set_classes(n_classes)
        self.n_rows_ = int(n * v)
        if workdir is not None:
            self._write_history(Path(workdir))
        if tensorboard_dir is not None:
            self._write_tensorboard(Path(tensorboard_dir))
        return self

    def _fit_multilabel(self, X_train, y_train, X_val, y_val, context: FitContext, streamed: bool) -> LogRegHead:
        """One-vs-rest: a binary LogisticRegression per class, every C of the grid; the best C by
        validation macro mean average precision."""
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        from .keras_heads import multilabel_scores

        if streamed or self.solver == "lbfgs":
            raise ParameterError("solver", "multi-label logreg fits one classifier per class with scikit-learn, on "
                                           "rows held in memory; the stacked lbfgs solver fits one label per image",
                                 remedy="give solver sklearn (or auto) and a memory limit the features fit in",
                                 mentions=("memory_limit",))
        n, v = X_train.shape[:2]
        n_classes = int(y_train.shape[1])
        rows = _MemoryRows(X_train.load(), np.arange(n))
        Y = np.repeat(np.asarray(y_train, np.int64), v, axis=0)
        Xs = rows.standardized()
        self.mean_, self.scale_ = rows.mean, rows.scale
        self.multilabel_, self.solver_ = True, "sklearn"
        has_val = X_val is not None
        grid = ([float(self.C)] if self.C is not None else sorted(float(c) for c in (self.c_grid or DEFAULT_C_GRID))
                if has_val else [FALLBACK_C])
        models = [LogisticRegression(C=grid[0], max_iter=int(self.max_iter), tol=float(self.tol),
                                     warm_start=bool(self.warm_start), random_state=int(self.seed))
                  for _ in range(n_classes)]
        self.grid_scores_, best = [], None
        D = Xs.shape[1]
        with threadpool_limits(limits=1, user_api="blas"):
            for C in grid:
                start = time.perf_counter()
                coef, intercept, n_iter = np.zeros((n_classes, D)), np.zeros(n_classes), 0
                for j, model in enumerate(models):
                    yj = Y[:, j]
                    if yj.min() == yj.max():  # every training image has it, or none: a constant
                        rate = np.clip(yj.mean(), 1e-4, 1 - 1e-4)
                        intercept[j] = np.log(rate / (1 - rate))
                        continue
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        model.set_params(C=C).fit(Xs, yj)
                    coef[j], intercept[j] = model.coef_[0], model.intercept_[0]
                    n_iter = max(n_iter, int(np.max(model.n_iter_)))
                self.coef_, self.intercept_ = coef, intercept
                row = {"C": C, "seconds": round(time.perf_counter() - start, 4), "n_iter": n_iter,
                       "converged": bool(n_iter < self.max_iter),
                       "train_map": multilabel_scores(self.predict_proba(X_train.view(0)), y_train)["val_map"]}
                if has_val:
                    scores = multilabel_scores(self.predict_proba(X_val), y_val)
                    row["val_map"], row["val_loss"] = scores["val_map"], scores["val_loss"]
                self.grid_scores_.append(row)
                key = (row.get("val_map", 0.0), -row.get("val_loss", 0.0))
                if best is None or key > best[0]:
                    best = (key, C, coef.copy(), intercept.copy())
        _, self.C_, self.coef_, self.intercept_ = best
        self._set_classes(n_classes)
        self.n_rows_ = int(n * v)
        if context.workdir is not None:
            self._write_history(Path(context.workdir))
        return self

    def _fit_path(self, grid, Xs, y, X_train, y_train, X_val, y_val):
        """scikit-learn: fit every C in increasing order; return the best on validation."""
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=grid[0], max_iter=int(self.max_iter), tol=float(self.tol),
                                   warm_start=bool(self.warm_start), random_state=int(self.seed))
        self.grid_scores_, best = [], None
        for C in grid:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence is recorded per C below, not shouted
                model.set_params(C=C).fit(Xs, y)
            row = {"C": C, "seconds": round(time.perf_counter() - start, 4), "n_iter": int(np.max(model.n_iter_)),
                   "converged": bool(np.max(model.n_iter_) < self.max_iter)}
            self.coef_, self.intercept_ = model.coef_.astype(np.float64), model.intercept_.astype(np.float64)
            row["train_accuracy"] = float(np.mean(self.predict(X_train.view(0)) == y_train))
            if X_val is not None:
                proba = self.predict_proba(X_val)
                row["val_accuracy"] = float(np.mean(proba.argmax(1) == y_val))
                row["val_loss"] = _log_loss(proba, np.asarray(y_val))
            best = self._score(row, best, self.coef_.copy(), self.intercept_.copy())
        return best

    def _score(self, row: dict, best, coef: np.ndarray, intercept: np.ndarray):
        """Record one C's row; the best so far by validation accuracy, then lower validation loss."""
        self.grid_scores_.append(row)
        key = (row.get("val_accuracy", 0.0), -row.get("val_loss", 0.0))
        return (key, row["C"], coef, intercept) if best is None or key > best[0] else best

    def _fit_stacked(self, grid, rows, n_classes, X_train, y_train, X_val, y_val):
        """Every C together (logreg_solver.py); ``coef_path_``/``intercept_path_`` keep each C's
        solution (a sweep over C hands them to its trials)."""
        path = solve_path(rows.blocks, rows.n_rows, rows.n_blocks, rows.dim, n_classes, grid, float(self.tol),
                          int(self.max_iter), warm_start=bool(self.warm_start))
        self.coef_path_, self.intercept_path_ = path.coef, path.intercept
        self.passes_ = path.passes
        train_acc, _ = self._path_scores(path, X_train.blocks(view=0))
        val_acc, val_loss = (self._path_scores(path, as_rows(X_val, y_val).blocks())
                             if X_val is not None else (None, None))
        self.grid_scores_, best = [], None
        for g, C in enumerate(path.Cs):
            row = {"C": C, "seconds": round(path.seconds / len(path.Cs), 4), "n_iter": int(path.n_iter[g]),
                   "converged": bool(path.converged[g]), "train_accuracy": float(train_acc[g])}
            if val_acc is not None:
                row["val_accuracy"], row["val_loss"] = float(val_acc[g]), float(val_loss[g])
            best = self._score(row, best, path.coef[g], path.intercept[g])
        return best

    def _path_scores(self, path, pairs) -> tuple[np.ndarray, np.ndarray]:
        """Accuracy and log-loss of every C's solution over (raw rows, labels) blocks, in one pass."""
        G = len(path.Cs)
        correct, loss, seen = np.zeros(G), np.zeros(G), 0
        for X, y in pairs:
            Xs = (np.asarray(X, np.float64) - self.mean_) / self.scale_
            y = np.asarray(y)
            for g in range(G):
                proba = self._proba_from_logits(Xs @ path.coef[g].T + path.intercept[g])
                correct[g] += np.sum(proba.argmax(1) == y)
                loss[g] += _log_loss(proba, y) * len(y)
            seen += len(y)
        return correct / max(seen, 1), loss / max(seen, 1)

    def _write_history(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        columns = list(dict.fromkeys(k for row in self.grid_scores_ for k in row))
        with (folder / HISTORY_FILE).open("w", newline="") as f:
            w = csv.DictWriter(f, columns)
            w.writeheader()
            w.writerows(self.grid_scores_)

    def _write_tensorboard(self, folder: Path) -> None:
        """The C path as steps: validation/train accuracy (and loss) against log10 C."""
        from .tensorboard import ScalarWriter

        writer = ScalarWriter(folder)
        for step, row in enumerate(self.grid_scores_):
            writer.scalar("train", "c_path_accuracy", row["train_accuracy"], step)
            writer.scalar("train", "c_path_log10_C", np.log10(row["C"]), step)
            if "val_accuracy" in row:
                writer.scalar("validation", "c_path_accuracy", row["val_accuracy"], step)
                writer.scalar("validation", "c_path_loss", row["val_loss"], step)
        writer.close()

    def refit_params(self) -> dict:
        return {"C": float(self.C_)}

    # -- grouped training: trials that differ only in C are one stacked solve ----------------------
    def group_key(self) -> tuple | None:
        """Every parameter but C (and the solver: a group takes the stacked one); None when C is
        left to validation (that fit is a path of its own)."""
        if self.C is None or self.multilabel_:
            return None
        return tuple(sorted((k, repr(v)) for k, v in self.get_params().items() if k not in ("C", "solver")))

    @classmethod
    def fit_group(cls, heads, X, y, *, validation=None, contexts=None) -> list[LogRegHead]:
        """One stacked solve of every head's C (logreg_solver.py); each head gets its own C's
        solution, as fitting it alone with the lbfgs solver finds it. One head fits alone."""
        if (len(heads) < 2 or validation is None or not len(validation[1])  # the path picks nothing
                or np.ndim(y) == 2):  # multi-label: one-vs-rest, each alone
            return super().fit_group(heads, X, y, validation=validation, contexts=contexts)
        contexts = [c or FitContext() for c in (contexts if contexts is not None else [None] * len(heads))]
        path = cls(**heads[0].get_params()).set_params(C=None, c_grid=sorted({float(h.C) for h in heads}),
                                                       solver="lbfgs")
        path.fit(X, y, validation=validation, context=FitContext(n_classes=contexts[0].n_classes))
        by_c = {row["C"]: (row, path.coef_path_[g], path.intercept_path_[g]) for g, row in enumerate(path.grid_scores_)}
        for h, c in zip(heads, contexts, strict=True):
            row, coef, intercept = by_c[float(h.C)]
            h.mean_, h.scale_, h.coef_, h.intercept_, h.C_ = path.mean_, path.scale_, coef, intercept, float(h.C)
            h.grid_scores_, h.n_rows_, h.solver_ = [row], path.n_rows_, "lbfgs"
            h._set_classes(path.n_classes_)
            if c.workdir is not None:
                h._write_history(c.workdir)
        return list(heads)

    def summary(self) -> dict:
        if not hasattr(self, "C_"):
            return {}
        return {"C": self.C_, "grid": self.grid_scores_, "train_rows": self.n_rows_,
                "solver": getattr(self, "solver_", "sklearn")}

    # -- persistence (no pickle) -------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / STATE_FILE, mean=self.mean_, scale=self.scale_, coef=self.coef_, intercept=self.intercept_)
        (folder / META_FILE).write_text(json.dumps(
            {"C": self.C_, "n_classes": self.n_classes_, "train_rows": self.n_rows_, "grid": self.grid_scores_,
             "solver": getattr(self, "solver_", "sklearn"), **({"multilabel": True} if self.multilabel_ else {})},
            indent=2))

    @classmethod
    def load(cls, folder: Path, params: dict) -> LogRegHead:
        folder = Path(folder)
        head = cls(**params)
        with np.load(folder / STATE_FILE, allow_pickle=False) as z:
            head.mean_, head.scale_, head.coef_, head.intercept_ = (z["mean"], z["scale"], z["coef"], z["intercept"])
        meta = json.loads((folder / META_FILE).read_text())
        head.C_, head.n_rows_ = meta["C"], meta["train_rows"]
        head._set_classes(meta["n_classes"])
        head.grid_scores_ = meta.get("grid", [])
        head.solver_ = meta.get("solver", "sklearn")
        head.multilabel_ = bool(meta.get("multilabel", False))
        return head

    # -- Keras -------------------------------------------------------------------------------------
    def folded_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(D, C) kernel and (C,) bias of one softmax Dense layer on RAW features: the
        standardization is folded in, and the binary case becomes two logits [0, z]."""
        kernel = (self.coef_ / self.scale_).T
        bias = self.intercept_ - (self.mean_ / self.scale_) @ self.coef_.T
        if kernel.shape[1] == 1 and not self.multilabel_:  # softmax([0, z]) == [1 - sigmoid(z), sigmoid(z)]
            kernel = np.concatenate([np.zeros_like(kernel), kernel], axis=1)
            bias = np.concatenate([np.zeros_like(bias), bias])
        return kernel, bias

    def to_keras(self):
        import keras

        kernel, bias = self.folded_weights()
        inputs = keras.Input((kernel.shape[0],), name="features")
        dense = keras.layers.Dense(kernel.shape[1], activation="sigmoid" if self.multilabel_ else "softmax",
                                   name="probabilities")
        model = keras.Model(inputs, dense(inputs), name="logreg_head")
        dense.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
        return model


class _MemoryRows:
    """Training rows held in memory: every view of every image, standardized as before."""

    def __init__(self, X_train: np.ndarray, y_train: np.ndarray):
        n, v = X_train.shape[:2]
        self.X = X_train.reshape(n * v, -1)
        self.y = np.repeat(y_train, v)  # row-major reshape: image i's views are rows i*v..i*v+v-1
        self.mean = self.X.mean(axis=0, dtype=np.float64)
        std = self.X.std(axis=0, dtype=np.float64)
        self.scale = np.where(std > 1e-8, std, 1.0)  # constant features: leave them unscaled
        self.n_rows, self.dim = self.X.shape
        self.n_blocks = -(-self.n_rows // BLOCK_ROWS)
        self._Xs = None

    def standardized(self) -> np.ndarray:
        if self._Xs is None:  # float32 halves memory; lbfgs keeps it
            self._Xs = ((self.X - self.mean) / self.scale).astype(np.float32)
        return self._Xs

    def blocks(self, every: int = 1):
        Xs = self.standardized()
        for i in range(0, self.n_rows, BLOCK_ROWS * every):
            yield Xs[i:i + BLOCK_ROWS], self.y[i:i + BLOCK_ROWS]


class _StreamedRows:
    """Training rows read from the store block by block; the statistics in one streaming pass."""

    def __init__(self, stream):
        self.stream = stream
        n, v, self.dim = stream.shape
        self.n_rows, self.n_blocks = n * v, len(stream.groups)
        m = moments(self._raw)
        self.mean, self.scale = m.mean, np.where(m.std > 1e-8, m.std, 1.0)
        self._shift, self._inv = self.mean.astype(np.float32), (1.0 / self.scale).astype(np.float32)

    def _raw(self, every: int = 1):
        for X, y in self.stream.blocks(every):
            r, v = X.shape[:2]
            yield X.reshape(r * v, -1).astype(np.float32), np.repeat(y, v)

    def blocks(self, every: int = 1):
        for X, y in self._raw(every):
            yield (X - self._shift) * self._inv, y

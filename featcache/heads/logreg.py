"""`logreg`: scikit-learn's multinomial LogisticRegression on standardized cached features.

Training rows are ALL cached views of the training images (view 0 and the K augmented ones).
Unless C is given, C is chosen on the validation split (view 0) from a log grid: best accuracy,
ties broken by the lower log-loss. The grid is walked from strong to weak regularization with
warm starts (each fit starts from the previous solution), which cuts the path's cost several
fold. Without validation rows and without C, C=1.0 (scikit-learn's default) is used.

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

from ..errors import FeatcacheError
from .base import Head, register_head
from .params import Param

DEFAULT_C_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
FALLBACK_C = 1.0
STATE_FILE, META_FILE, HISTORY_FILE = "logreg.npz", "logreg.json", "history.csv"


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

    parameters = (
        Param("C", float, None, "Inverse regularization (default: the best of the C grid on validation).",
              low=0, low_open=True, optional=True),
        Param("c_grid", float, None, f"C values tried on validation (default: {', '.join(map(str, DEFAULT_C_GRID))}).",
              low=0, low_open=True, optional=True, multiple=True),
        Param("max_iter", int, 1000, "Solver iterations per C.", low=1),
        Param("tol", float, 1e-4, "Solver tolerance.", low=0, low_open=True),
        Param("warm_start", bool, True, "Start each C from the previous C's solution.", sweep=False),
        Param("seed", int, 0, "Solver seed.", sweep=False),
    )

    # -- learned state -> probabilities (numpy, float64) -----------------------------------------
    def _logits(self, X: np.ndarray) -> np.ndarray:
        Xs = (np.asarray(X, np.float64) - self.mean_) / self.scale_
        return Xs @ self.coef_.T + self.intercept_

    @staticmethod
    def _proba_from_logits(z: np.ndarray) -> np.ndarray:
        if z.shape[1] == 1:  # scikit-learn's binary case: one logit for class 1, sigmoid
            p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.stack([1.0 - p1, p1], axis=1)
        return _softmax(z)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self._proba_from_logits(self._logits(X)).astype(np.float32)

    # -- training ----------------------------------------------------------------------------------
    def fit(self, X_train, y_train, X_val=None, y_val=None, *, n_classes: int | None = None,
            workdir: str | Path | None = None, tensorboard_dir: str | Path | None = None,
            progress: bool = False, checkpoint_every_epoch: bool = False) -> LogRegHead:
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        X_train = np.asarray(X_train, np.float32)
        if X_train.ndim < 3:
            raise ValueError("X_train must be (n, V, D): the cached views of each training image")
        n, v = X_train.shape[:2]
        X = X_train.reshape(n * v, -1)
        y = np.repeat(np.asarray(y_train), v)  # row-major reshape: image i's views are rows i*v..i*v+v-1
        n_classes = int(n_classes or 1 + np.max(y_train))
        missing = sorted(set(range(n_classes)) - set(np.unique(y).tolist()))
        if missing or n_classes < 2:
            raise FeatcacheError(f"logreg needs training images of every class (missing labels: {missing})")

        self.mean_ = X.mean(axis=0, dtype=np.float64)
        std = X.std(axis=0, dtype=np.float64)
        self.scale_ = np.where(std > 1e-8, std, 1.0)  # constant features: leave them unscaled
        Xs = ((X - self.mean_) / self.scale_).astype(np.float32)  # float32 halves memory; lbfgs keeps it

        has_val = X_val is not None and len(X_val) > 0
        if self.C is not None:
            grid = [float(self.C)]
        elif has_val:
            grid = sorted(float(c) for c in (self.c_grid or DEFAULT_C_GRID))
        else:
            grid = [FALLBACK_C]

        model = LogisticRegression(C=grid[0], max_iter=int(self.max_iter), tol=float(self.tol),
                                   warm_start=bool(self.warm_start), random_state=int(self.seed))
        # One BLAS thread: these matrix products are small, so threads cost more in synchronisation
        # than they save, and ~10x more when the cores are shared with other work (measured).
        with threadpool_limits(limits=1, user_api="blas"):
            best = self._fit_path(model, grid, Xs, y, X_train, y_train, X_val if has_val else None, y_val)
        _, self.C_, self.coef_, self.intercept_ = best
        self._set_classes(n_classes)
        self.n_rows_ = int(len(Xs))
        if workdir is not None:
            self._write_history(Path(workdir))
        if tensorboard_dir is not None:
            self._write_tensorboard(Path(tensorboard_dir))
        return self

    def _fit_path(self, model, grid, Xs, y, X_train, y_train, X_val, y_val):
        """Fit every C in increasing order (warm starts); return the best on validation."""
        self.grid_scores_, best = [], None
        for C in grid:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence is recorded per C below, not shouted
                model.set_params(C=C).fit(Xs, y)
            row = {"C": C, "seconds": round(time.perf_counter() - start, 4), "n_iter": int(np.max(model.n_iter_)),
                   "converged": bool(np.max(model.n_iter_) < self.max_iter)}
            self.coef_, self.intercept_ = model.coef_.astype(np.float64), model.intercept_.astype(np.float64)
            row["train_accuracy"] = float(np.mean(self.predict(X_train[:, 0]) == y_train))
            if X_val is not None:
                proba = self.predict_proba(X_val)
                row["val_accuracy"] = float(np.mean(proba.argmax(1) == y_val))
                row["val_loss"] = _log_loss(proba, np.asarray(y_val))
            self.grid_scores_.append(row)
            key = (row.get("val_accuracy", 0.0), -row.get("val_loss", 0.0))
            if best is None or key > best[0]:
                best = (key, C, self.coef_.copy(), self.intercept_.copy())
        return best

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

    def summary(self) -> dict:
        if not hasattr(self, "C_"):
            return {}
        return {"C": self.C_, "grid": self.grid_scores_, "train_rows": self.n_rows_}

    # -- persistence (no pickle) -------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / STATE_FILE, mean=self.mean_, scale=self.scale_, coef=self.coef_, intercept=self.intercept_)
        (folder / META_FILE).write_text(json.dumps(
            {"C": self.C_, "n_classes": self.n_classes_, "train_rows": self.n_rows_, "grid": self.grid_scores_},
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
        return head

    # -- Keras -------------------------------------------------------------------------------------
    def folded_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(D, C) kernel and (C,) bias of one softmax Dense layer on RAW features: the
        standardization is folded in, and the binary case becomes two logits [0, z]."""
        kernel = (self.coef_ / self.scale_).T
        bias = self.intercept_ - (self.mean_ / self.scale_) @ self.coef_.T
        if kernel.shape[1] == 1:  # softmax([0, z]) == [1 - sigmoid(z), sigmoid(z)]
            kernel = np.concatenate([np.zeros_like(kernel), kernel], axis=1)
            bias = np.concatenate([np.zeros_like(bias), bias])
        return kernel, bias

    def to_keras(self):
        import keras

        kernel, bias = self.folded_weights()
        inputs = keras.Input((kernel.shape[0],), name="features")
        dense = keras.layers.Dense(kernel.shape[1], activation="softmax", name="probabilities")
        model = keras.Model(inputs, dense(inputs), name="logreg_head")
        dense.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
        return model

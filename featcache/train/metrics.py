"""Classification metrics of one split, and the confusion-matrix figure."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import atomic
from .probe import expected_calibration_error


@dataclass
class ClassMetrics:
    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class SplitMetrics:
    n: int
    accuracy: float
    macro_f1: float
    log_loss: float
    per_class: list[ClassMetrics]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    ece: float = 0.0  # expected calibration error (probe.py)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(y_true: np.ndarray, proba: np.ndarray, classes: list[str]) -> SplitMetrics:
    """Metrics over every class of the store (classes absent from the split get zero support)."""
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    y_true = np.asarray(y_true, int)
    labels = list(range(len(classes)))
    pred = np.argmax(proba, axis=1)
    p, r, f, s = precision_recall_fscore_support(y_true, pred, labels=labels, zero_division=0)
    picked = np.clip(proba[np.arange(len(y_true)), y_true], 1e-15, None)
    return SplitMetrics(
        n=int(len(y_true)),
        accuracy=float(np.mean(pred == y_true)),
        # macro over the classes present in the split: absent ones would only add zeros
        macro_f1=float(f1_score(y_true, pred, labels=sorted(set(y_true.tolist())), average="macro",
                                zero_division=0)),
        log_loss=float(-np.mean(np.log(picked))),
        per_class=[ClassMetrics(c, float(p[i]), float(r[i]), float(f[i]), int(s[i])) for i, c in enumerate(classes)],
        confusion=confusion_matrix(y_true, pred, labels=labels).tolist(),
        ece=expected_calibration_error(proba, y_true),
    )


@dataclass
class ClassAP:
    name: str
    average_precision: float | None  # None: no image of the split has the class
    f1: float
    precision: float
    recall: float
    support: int  # images of the split holding the class
    threshold: float


@dataclass
class MultiLabelMetrics:
    """Several labels per image: ranking (average precision) and the label sets at per-class thresholds."""

    n: int
    mean_ap: float  # macro: the mean of the per-class APs over the classes present in the split
    micro_ap: float  # every (image, class) decision pooled
    f1_macro: float  # at the thresholds, over the classes present
    subset_accuracy: float  # images whose predicted label set is exactly their label set
    log_loss: float  # binary cross-entropy, mean over images and classes
    per_class: list[ClassAP]
    multilabel: bool = True

    @property
    def accuracy(self) -> float:  # what single-label code ranks by: the strictest multi-label score
        return self.subset_accuracy

    @property
    def macro_f1(self) -> float:
        return self.f1_macro

    @property
    def ece(self) -> float:
        return 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def choose_thresholds(y: np.ndarray, proba: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per class, the decision threshold that maximizes its F1 on these (validation) images: the
    midpoint between the lowest score kept and the next one below. A class no image has keeps
    ``default``."""
    y, proba = np.asarray(y) > 0, np.asarray(proba, np.float64)
    out = np.full(y.shape[1], default)
    for j in range(y.shape[1]):
        positives = int(y[:, j].sum())
        if positives == 0:
            continue
        order = np.argsort(-proba[:, j], kind="stable")
        scores, tp = proba[order, j], np.cumsum(y[order, j])
        last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # cut only between distinct scores
        f1 = 2 * tp[last] / (last + 1 + positives)
        k = last[int(np.argmax(f1))]
        out[j] = float(scores[k] + scores[k + 1]) / 2 if k + 1 < len(scores) else float(scores[k]) / 2
    return out


def evaluate_multilabel(y_true: np.ndarray, proba: np.ndarray, classes: list[str],
                        thresholds: np.ndarray) -> MultiLabelMetrics:
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support

    y = (np.asarray(y_true) > 0).astype(int)
    proba = np.asarray(proba, np.float64)
    pred = (proba >= np.asarray(thresholds)[None, :]).astype(int)
    present = y.any(axis=0)
    ap = [float(average_precision_score(y[:, j], proba[:, j])) if present[j] else None for j in range(len(classes))]
    p, r, f, s = precision_recall_fscore_support(y, pred, average=None, zero_division=0,
                                                 labels=list(range(len(classes))))
    q = np.clip(proba, 1e-15, 1 - 1e-15)
    return MultiLabelMetrics(
        n=int(len(y)),
        mean_ap=float(np.mean([a for a in ap if a is not None])) if present.any() else 0.0,
        micro_ap=float(average_precision_score(y.ravel(), proba.ravel())) if y.any() else 0.0,
        f1_macro=float(np.mean(f[present])) if present.any() else 0.0,
        subset_accuracy=float(np.mean(np.all(pred == y, axis=1))) if len(y) else 0.0,
        log_loss=float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))) if len(y) else 0.0,
        per_class=[ClassAP(c, ap[j], float(f[j]), float(p[j]), float(r[j]), int(s[j]), float(thresholds[j]))
                   for j, c in enumerate(classes)],
    )


def plot_confusion(metrics: SplitMetrics, classes: list[str], path: str | Path, title: str = "") -> Path:
    """A PNG heat map (counts written in the cells when there are few classes)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and safe in threads/servers
    import matplotlib.pyplot as plt

    cm = np.asarray(metrics.confusion)
    k = len(classes)
    size = min(16.0, 3.0 + 0.3 * k)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(k)
    fontsize = 8 if k <= 20 else 5
    ax.set_xticks(ticks, classes, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, classes, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {metrics.accuracy:.3f} (n={metrics.n})")
    if k <= 20:
        threshold = cm.max() / 2 if cm.size else 0
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=fontsize,
                            color="white" if cm[i, j] > threshold else "black")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_leaderboard(rows: list[dict], csv_path: Path, json_path: Path, payload: dict) -> None:
    """A leaderboard as CSV (one row per entry) plus the full result as JSON, side by side."""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    # each replaced in one step (a killed writer leaves the previous file whole, never a truncated one)
    with atomic.replaced(csv_path) as tmp, os.fdopen(atomic.create_exclusive(tmp), "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with atomic.replaced(json_path) as tmp, os.fdopen(atomic.create_exclusive(tmp), "w") as f:
        f.write(json.dumps(payload, indent=2, default=str))

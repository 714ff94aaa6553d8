"""The fine-tuned run folder: what fit-head writes (head, config.json, metrics.json, history.csv,
confusion PNGs), plus the trained backbone as ``backbone.weights.h5``. config.json records that
file as the backbone's local weights file, with its digest, so export, predict and
`extract --weights RUN` rebuild the fine-tuned network with no knowledge of fine-tuning."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .. import __version__
from ..backbones.model import resolve_config
from ..backbones.trained_weights import FINE_TUNED_FILE
from ..config import FeatureConfig
from ..heads import Head, KerasHead, LinearHead
from ..train.fit import METRICS_FILE
from ..train.metrics import SplitMetrics, evaluate, plot_confusion
from ..train.run import RunConfig, TrainedRun, ValidationSource, commit_run, final_path
from .blocks import Unfrozen
from .data import ImageSet
from .network import Network
from .options import FineTuneOptions
from .trainer import Training

HISTORY_FILE = "history.csv"
SPLIT_NAMES = ("validation", "test")


@dataclass
class FineTuneResult:
    run_dir: str
    source_run: str
    backbone: str
    key: str  # the store key `featcache extract --weights RUN_DIR` (same options) fills
    weights: str  # the fine-tuned backbone file
    unfrozen: Unfrozen
    n: dict[str, int]
    validation_source: ValidationSource
    before: dict[str, SplitMetrics]  # split -> metrics of the starting network, end to end on the images
    after: dict[str, SplitMetrics]
    best_epoch: int
    epochs_trained: int
    fit_seconds: float
    history: list[dict] = field(default_factory=list)
    probabilities: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # after, per split

    def to_dict(self) -> dict:
        def brief(m: SplitMetrics) -> dict:
            return {"accuracy": m.accuracy, "macro_f1": m.macro_f1, "log_loss": m.log_loss, "n": m.n}

        return {"run_dir": self.run_dir, "from_run": self.source_run, "backbone": self.backbone, "key": self.key,
                "weights": self.weights,
                "unfrozen": {"blocks": list(self.unfrozen.blocks), "of_blocks": self.unfrozen.of_blocks,
                             "trainable_weights": self.unfrozen.trainable_weights},
                "n": self.n, "validation_source": self.validation_source.value, "epochs_trained": self.epochs_trained,
                "best_epoch": self.best_epoch, "fit_seconds": round(self.fit_seconds, 3),
                "before": {s: brief(m) for s, m in self.before.items()},
                "after": {s: brief(m) for s, m in self.after.items()}}


def carried_head(head: Head, network: Network, options: FineTuneOptions) -> Head:
    """The head the new run holds: a Keras head was trained in place and stays what it is; any
    other head trained as its Keras form (logreg: one softmax layer), which a linear head carries."""
    if isinstance(head, KerasHead):
        return head
    linear = LinearHead(dropout=0.0, lr=options.lr, optimizer=options.optimizer, momentum=options.momentum,
                        epochs=options.epochs, batch_size=options.batch_size, patience=options.patience,
                        seed=options.seed)
    linear.model_ = network.head
    linear._set_classes(int(network.head.output_shape[-1]))
    return linear


def write_fine_tuned_run(out: Path, source: TrainedRun, network: Network, images: ImageSet, training: Training,
                         options: FineTuneOptions) -> FineTuneResult:
    weights = out / FINE_TUNED_FILE  # ``out`` is the folder begin_run gave: commit_run puts it in place
    final = final_path(out)
    network.trunk.save_weights(str(weights))
    old = source.config.features[0]
    b = old.backbone
    # the record names the file where it will be once the folder is in place (its digest is the same)
    resolved = replace(resolve_config(b.name, b.input_size, b.pooling, str(weights)), weights=str(final / FINE_TUNED_FILE))
    feature = FeatureConfig(resolved, old.augment, old.dtype)
    head = carried_head(source.head, network, options)
    head.save(out)
    labels = {"validation": images.validation.labels, "test": images.test.labels}
    metrics = {when: {s: evaluate(labels[s], p, images.classes) for s, p in training.probabilities[when].items()}
               for when in ("before", "after")}
    result = FineTuneResult(
        run_dir=str(final), source_run=str(source.path), backbone=b.name, key=feature.key,
        weights=str(final / FINE_TUNED_FILE),
        unfrozen=network.unfrozen, n=images.n, validation_source=images.validation_source,
        before=metrics["before"], after=metrics["after"], best_epoch=training.best_epoch,
        epochs_trained=training.epochs_trained, fit_seconds=training.seconds, history=training.history,
        probabilities=training.probabilities["after"])
    pngs = _write_reports(out, result, images.classes, options)
    files = {"head": list(type(head).files), "metrics": METRICS_FILE, "confusion": pngs, "history": HISTORY_FILE,
             "backbone": FINE_TUNED_FILE}
    config = RunConfig(
        featcache_version=__version__, head_type=head.name, head_params=head.params_record(), features=[feature],
        keys=[feature.key], classes=images.classes, store_path=source.config.store_path, data_root=str(images.root),
        input_dim=source.config.input_dim, seed=options.seed, validation=images.validation_source, files=files,
        created=datetime.now(UTC).isoformat(timespec="seconds"))
    # a section RunConfig does not read: where this run came from, for people and reports
    config.write(out, extra={"fine_tune": {"from_run": str(source.path), "from_key": source.config.keys[0],
                                           "unfrozen_blocks": list(network.unfrozen.blocks),
                                           "options": options.to_dict()}})
    commit_run(out)
    return result


def _write_reports(out: Path, result: FineTuneResult, classes: list[str], options: FineTuneOptions) -> list[str]:
    """metrics.json (fit-head's keys, the fine-tuned network's numbers; before/after under
    "fine_tune"), history.csv and a confusion-matrix PNG per evaluated split."""
    with (out / HISTORY_FILE).open("w", newline="") as f:
        writer = csv.DictWriter(f, ["epoch", "loss", "val_loss", "val_accuracy"])
        writer.writeheader()
        writer.writerows(result.history)
    pngs = []
    for split, m in result.after.items():
        png = out / f"confusion_{split}.png"
        plot_confusion(m, classes, png, f"fine-tuned on {split}: accuracy {m.accuracy:.3f} (n={m.n})")
        pngs.append(png.name)
    val_acc = [r["val_accuracy"] for r in result.history if "val_accuracy" in r]
    metrics = {
        **{s: (m.to_dict() if (m := result.after.get(s)) else None) for s in SPLIT_NAMES},
        "fit_seconds": round(result.fit_seconds, 4), "n": result.n,
        "validation_source": result.validation_source.value,
        "training": {"epochs_trained": result.epochs_trained, "best_epoch": result.best_epoch,
                     "best_val_accuracy": max(val_acc) if val_acc else None, "early_stopping": bool(val_acc)},
        "fine_tune": {"before": {s: m.to_dict() for s, m in result.before.items()},
                      "unfrozen": result.to_dict()["unfrozen"], "options": options.to_dict()},
    }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    return pngs

"""The fine-tuning loop: epochs of freshly augmented training images, early stopping on validation
(the starting network counts as epoch 0, so fine-tuning never ends worse on validation than the
head it started from), the best epoch's weights restored; test is read once, at the end, for the
before/after report.

Epoch e trains on view e of every training image: the store's augmentation parameters, a new
variant each epoch (views 1..K are the ones the store holds), keyed by (seed, image, view) so a
run replays exactly. Validation and test see view 0, the image itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..heads.keras_heads import make_optimizer
from ..progress import progress_bar
from .data import BatchReader, ImageSet, ImageSplit
from .network import Network
from .options import FineTuneOptions

EPSILON = 1e-7  # Keras' clip of probabilities in the cross-entropy


@dataclass
class Training:
    history: list[dict]  # one row per epoch; epoch 0 is the starting network
    best_epoch: int  # 0: no epoch beat the starting network, whose weights are kept
    seconds: float
    # "before"/"after" -> split -> (n, C) probabilities
    probabilities: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def epochs_trained(self) -> int:
        return len(self.history) - 1


def predict(network: Network, reader: BatchReader, split: ImageSplit, batch_size: int) -> np.ndarray:
    """View-0 probabilities, in fixed-size batches (the last one padded) so one traced graph serves."""
    out = []
    for x, _ in reader.batches(split, np.arange(len(split)), batch_size, view=0):
        pad = batch_size - len(x)
        padded = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
        out.append(np.asarray(network.model.predict_on_batch(padded))[:len(x)])
    return np.concatenate(out) if out else np.zeros((0, network.model.output_shape[-1]), np.float32)


def scores(proba: np.ndarray, y: np.ndarray) -> dict[str, float]:
    picked = np.clip(proba[np.arange(len(y)), y], EPSILON, 1.0)
    return {"val_loss": float(-np.mean(np.log(picked))), "val_accuracy": float(np.mean(proba.argmax(1) == y))}


def _epoch_order(n: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """A fresh shuffle, filled up to whole batches from its own start: every image once at least,
    and one batch shape, so the training step is traced once."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    fill = -n % min(batch_size, n)
    return np.concatenate([order, order[:fill]])


class _Weights:
    """The trainable weights at some epoch (everything else is frozen, BatchNorm statistics included)."""

    def __init__(self, model):
        self.variables = model.trainable_variables
        self.values = [v.numpy() for v in self.variables]

    def restore(self) -> None:
        for v, value in zip(self.variables, self.values, strict=True):
            v.assign(value)


def train(network: Network, images: ImageSet, reader: BatchReader, options: FineTuneOptions) -> Training:
    model = network.model
    # no XLA: on a CPU, compiling the backward pass costs more than a short fine-tuning saves
    model.compile(optimizer=make_optimizer(options.optimizer, options.lr, options.momentum),
                  loss="sparse_categorical_crossentropy", jit_compile=False)
    val, test = images.validation, images.test
    has_val = len(val) > 0
    batch = min(options.batch_size, len(images.train))
    steps = -(-len(images.train) // batch)
    start_time = time.perf_counter()
    start = _Weights(model)
    probabilities = {"before": {"validation": predict(network, reader, val, batch)}} if has_val else {"before": {}}
    history = [{"epoch": 0, **(scores(probabilities["before"]["validation"], val.labels) if has_val else {})}]
    best, best_key, best_epoch, wait = start, _key(history[0]), 0, 0
    bar = progress_bar(options.epochs * steps, "fine-tune", unit="batch", enabled=options.progress)
    for epoch in range(1, options.epochs + 1):
        order = _epoch_order(len(images.train), batch, options.seed, epoch)
        row = {"epoch": epoch, "loss": _train_epoch(model, reader.batches(images.train, order, batch, epoch), bar)}
        if has_val:
            row.update(scores(predict(network, reader, val, batch), val.labels))
        history.append(row)
        bar.set_postfix({k: f"{row[k]:.3f}" for k in ("loss", "val_accuracy") if k in row}, refresh=False)
        if not has_val or _key(row) > best_key:  # without validation the last epoch is kept
            best, best_key, best_epoch, wait = _Weights(model), _key(row), epoch, 0
        else:
            wait += 1
            if wait >= options.patience:
                break
    bar.close()
    best.restore()
    probabilities["after"] = {"validation": predict(network, reader, val, batch)} if has_val else {}
    if len(test):  # read once, now: after, then before (the starting weights put back for it)
        probabilities["after"]["test"] = predict(network, reader, test, batch)
        start.restore()
        probabilities["before"]["test"] = predict(network, reader, test, batch)
        best.restore()
    return Training(history, best_epoch, time.perf_counter() - start_time, probabilities)


def _key(row: dict) -> tuple[float, float]:
    """Validation accuracy, ties broken by the lower loss (as the Keras heads do)."""
    return (row.get("val_accuracy", 0.0), -row.get("val_loss", 0.0))


def _train_epoch(model, batches, bar) -> float:
    """One pass; the mean loss of its batches."""
    losses = []
    for x, y in batches:
        losses.append(float(model.train_on_batch(x, y)))
        bar.update(1)
    return float(np.mean(losses))

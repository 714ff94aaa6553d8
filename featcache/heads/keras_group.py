"""Several Keras heads trained together: every batch read once, fed to all of them in one graph.

A sweep of N configurations of one Keras head shares its input batches (the same views drawn,
the same order: ``batch_size`` and ``seed`` are common to the group). Each head keeps everything
else its own: its layers (hidden size, dropout), its optimizer (type, learning rate, momentum),
its early stopping (patience, epochs) and its best weights. One compiled step runs the forward
and backward pass of every head still training, so N heads cost one Python round trip per batch
instead of N; a head that stops leaves the step (it is traced again for the others).

Each head is built after ``keras.utils.set_random_seed(seed)``, as it is when fitted alone, so its
initial weights and dropout seeds are the ones it would have alone: trained together or alone, a
head sees the same batches and the same masks, and lands on the same result up to float rounding.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .data import EpochSampler, as_rows
from .keras_heads import HISTORY_FILE, KerasHead, make_optimizer


def fit_together(heads: Sequence[KerasHead], X_train, y_train, X_val, y_val, n_classes: int,
                 progress: bool = False) -> None:
    """Fit ``heads`` (unfitted, one type and ``group_key``) as each one's ``fit`` would; validation
    is required. KerasHead.fit_group is the way in."""
    import keras

    if len({(type(h), h.group_key()) for h in heads}) != 1:
        raise ValueError("heads trained together need one head type, batch size and seed")
    if X_val is None or not len(X_val):
        raise ValueError("heads trained together stop early on validation: give validation rows")
    first = heads[0]
    X_train, X_val = as_rows(X_train, y_train), as_rows(X_val)  # arrays or a store's view: one code path
    models, optimizers = [], []
    for h in heads:
        keras.utils.set_random_seed(int(h.seed))  # the weights and dropout seeds it gets alone
        model = h._build(tuple(X_train.shape[2:]), n_classes)
        optimizer = make_optimizer(h.optimizer, h.lr, h.momentum)
        optimizer.build(model.trainable_variables)
        models.append(model)
        optimizers.append(optimizer)
        h.model_ = model
        h._set_classes(n_classes)
    sampler = EpochSampler(X_train, n_classes, first.batch_size, first.seed)
    _Training(heads, models, optimizers, sampler, X_val, np.asarray(y_val), progress).run()


class _Training:
    def __init__(self, heads, models, optimizers, sampler, X_val, y_val, progress: bool):
        self.heads, self.models, self.optimizers = heads, models, optimizers
        self.sampler, self.X_val, self.y_val = sampler, X_val, y_val
        self.progress = progress
        n = len(heads)
        self.history = [{"accuracy": [], "loss": [], "val_accuracy": [], "val_loss": []} for _ in range(n)]
        self.best = [None] * n
        self.best_weights = [None] * n
        self.wait = [0] * n

    def run(self) -> None:
        from ..progress import progress_bar

        active = list(range(len(self.heads)))
        step = self._step(active)
        max_epochs = max(int(h.epochs) for h in self.heads)
        bar = progress_bar(total=max_epochs, desc=f"{len(self.heads)} {self.heads[0].name} heads", unit="epoch",
                           enabled=self.progress)
        try:
            for epoch in range(max_epochs):
                self.sampler.on_epoch_begin()
                sums, seen = np.zeros((len(active), 2)), 0
                for xb, yb in self.sampler:
                    losses, accs = step(xb, yb)
                    sums += np.stack([np.asarray(losses), np.asarray(accs)], axis=1) * len(xb)
                    seen += len(xb)
                still = self._end_epoch(epoch, active, sums / max(seen, 1))
                bar.update(1)
                if not still:
                    break
                if still != active:
                    active, step = still, self._step(still)
        finally:
            bar.close()
        for i, h in enumerate(self.heads):
            self.models[i].set_weights(self.best_weights[i])
            h.history_ = self.history[i]
            h.epochs_trained_ = len(self.history[i]["loss"])
            h.views_drawn_ = np.stack(self.sampler.drawn[:h.epochs_trained_])
            keys = list(zip(h.history_["val_accuracy"], (-v for v in h.history_["val_loss"]), strict=True))
            h.best_epoch_ = 1 + max(range(len(keys)), key=keys.__getitem__)

    def _end_epoch(self, epoch: int, active: list[int], train: np.ndarray) -> list[int]:
        """Record the epoch of each active head; return the heads that go on training."""
        probas = self._predict([self.models[i] for i in active])
        still = []
        for j, i in enumerate(active):
            proba = probas[j]
            picked = np.clip(proba[np.arange(len(self.y_val)), self.y_val], 1e-7, 1.0)  # Keras' epsilon
            val_loss = float(-np.mean(np.log(picked)))
            val_acc = float(np.mean(np.argmax(proba, 1) == self.y_val))
            hist = self.history[i]
            hist["loss"].append(float(train[j, 0]))
            hist["accuracy"].append(float(train[j, 1]))
            hist["val_loss"].append(val_loss)
            hist["val_accuracy"].append(val_acc)
            key = (val_acc, -val_loss)  # BestEpoch's order: accuracy, then the lower loss
            if self.best[i] is None or key > self.best[i]:
                self.best[i], self.best_weights[i], self.wait[i] = key, self.models[i].get_weights(), 0
            else:
                self.wait[i] += 1
            if self.wait[i] < int(self.heads[i].patience) and epoch + 1 < int(self.heads[i].epochs):
                still.append(i)
        return still

    def _predict(self, models) -> list[np.ndarray]:
        """Every model's probabilities on validation, reading its rows once."""
        out = [None] * len(models)
        for xb, at in self.X_val.indexed_blocks():  # a store's blocks come in store order
            for j, m in enumerate(models):
                p = np.asarray(m(np.asarray(xb, np.float32), training=False))
                if out[j] is None:
                    out[j] = np.zeros((len(self.y_val), p.shape[1]), p.dtype)
                out[j][at] = p
        return out

    def _step(self, active: list[int]):
        """One compiled training step of the active heads on a shared batch."""
        import keras
        import tensorflow as tf

        models = [self.models[i] for i in active]
        optimizers = [self.optimizers[i] for i in active]

        @tf.function(reduce_retracing=True)
        def step(x, y):
            losses, accs = [], []
            for model, optimizer in zip(models, optimizers, strict=True):
                with tf.GradientTape() as tape:
                    p = model(x, training=True)
                    loss = tf.reduce_mean(keras.losses.categorical_crossentropy(y, p))
                variables = model.trainable_variables
                optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
                losses.append(loss)
                accs.append(tf.reduce_mean(tf.cast(tf.equal(tf.argmax(p, 1), tf.argmax(y, 1)), tf.float32)))
            return tf.stack(losses), tf.stack(accs)

        return step


def write_history(head: KerasHead, folder: Path) -> None:
    """history.csv as Keras' CSVLogger writes it for a head fitted alone."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    columns = ["epoch", *sorted(head.history_)]
    with (folder / HISTORY_FILE).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for e in range(head.epochs_trained_):
            w.writerow([e, *(head.history_[k][e] for k in columns[1:])])

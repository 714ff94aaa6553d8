"""Keras heads trained on cached features: `mlp` (the Innolitics head) and `linear` (a softmax layer).

Augmentation without a backbone in the loop: every epoch draws one of the V cached views of each
training image (seeded by (seed, epoch)), so the head sees a different augmented variant of each
image from epoch to epoch, exactly as on-the-fly augmentation would show it. Validation (and test,
in featcache.train.fit) only ever see view 0, the un-augmented image.

Early stopping monitors validation accuracy and restores the best epoch's weights. Without
validation rows the head trains for ``epochs`` epochs and keeps the last weights.

Multi-label (y a multi-hot (n, classes) 0/1 matrix): sigmoid outputs, one independent probability
per class, trained with binary cross-entropy; early stopping then monitors the validation mean
average precision (``val_map``), ties broken by the lower validation loss.

The classic recipes, as parameters:
- Innolitics: ``mlp`` with its defaults (Adam lr 1e-3, batch 64, dropout 0.5, 128 hidden units).
- InceptionV3 cats vs dogs: ``linear`` with its defaults (Dropout 0.4, RMSprop lr 1e-3, batch 32).
- ResNet50 two-class: ``linear`` with ``dropout=0, optimizer="sgd"`` (Keras' SGD, lr 0.01).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import ParameterError
from .base import FitContext, Head, fit_inputs, register_head
from .data import EpochSampler, ViewSampler, as_rows, map_blocks
from .params import Param
from .tensorboard import epoch_logs_callback

MODEL_FILE = "head.keras"
CHECKPOINT_FILE = "checkpoint.weights.h5"  # best epoch so far, rewritten while training
EPOCH_WEIGHTS = "weights.{epoch:02d}.weights.h5"  # with checkpoint_every_epoch (Keras 3 wants .weights.h5)
HISTORY_FILE = "history.csv"


OPTIMIZERS = {
    "adam": lambda keras, momentum, kw: keras.optimizers.Adam(**kw),
    "rmsprop": lambda keras, momentum, kw: keras.optimizers.RMSprop(**kw),
    "sgd": lambda keras, momentum, kw: keras.optimizers.SGD(momentum=momentum, **kw),
}


def make_optimizer(name: str, lr: float | None, momentum: float):
    """An optimizer by name; lr None means the optimizer's own Keras default."""
    import keras

    if name not in OPTIMIZERS:
        raise ParameterError("optimizer", f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](keras, momentum, {} if lr is None else {"learning_rate": float(lr)})


def keras_head_params(dropout: float, optimizer: str, batch_size: int) -> tuple[Param, ...]:
    """The training parameters every Keras head shares, with that head's defaults."""
    return (
        Param("dropout", float, dropout, "Dropout rate.", low=0, high=1, high_open=True),
        Param("lr", float, None, "Learning rate (default: the optimizer's Keras default).", low=0, low_open=True,
              optional=True),
        Param("optimizer", str, optimizer, "Optimizer.", choices=tuple(OPTIMIZERS)),
        Param("momentum", float, 0.0, "SGD momentum.", low=0, high=1, high_open=True),
        Param("epochs", int, 100, "Maximum epochs.", low=1),
        Param("batch_size", int, batch_size, "Images per training step.", low=1),
        Param("patience", int, 10, "Early-stopping patience in epochs.", low=1),
        Param("seed", int, 0, "Seed of the weights, dropout masks and view draws.", sweep=False),
    )


def _progress_callback(total_epochs: int, desc: str):
    """One tqdm bar on stderr over epochs (Keras' own verbose output would go to stdout)."""
    import keras

    from ..progress import progress_bar

    class EpochBar(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = progress_bar(total=total_epochs, desc=desc, unit="epoch")

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            shown = {k: f"{logs[k]:.3f}" for k in ("accuracy", "val_accuracy") if k in logs}
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)

        def on_train_end(self, logs=None):
            self.bar.close()

    return EpochBar()


def _best_epoch_callback(patience: int | None, checkpoint: Path | None):
    """Early stopping on validation accuracy, ties broken by the lower validation loss (with a
    small validation set many epochs tie on accuracy; Keras' EarlyStopping would keep the first).
    Restores the best epoch's weights at the end and keeps them in ``checkpoint``. With
    patience None (no validation), it only checkpoints the last epoch."""
    import keras

    class BestEpoch(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.best, self.best_weights, self.wait = None, None, 0

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            if patience is None:
                if checkpoint is not None:
                    self.model.save_weights(checkpoint)
                return
            key = (logs.get("val_map", logs["val_accuracy"]), -logs["val_loss"])
            if self.best is None or key > self.best:
                self.best, self.best_weights, self.wait = key, self.model.get_weights(), 0
                if checkpoint is not None:
                    self.model.save_weights(checkpoint)
            else:
                self.wait += 1
                if self.wait >= patience:
                    self.model.stop_training = True

        def on_train_end(self, logs=None):
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return BestEpoch()


class KerasHead(Head):
    """Shared training loop of the Keras heads; subclasses only describe their layers."""

    files: ClassVar[tuple[str, ...]] = (MODEL_FILE,)
    multilabel_capable: ClassVar[bool] = True
    multilabel_ = False

    def _hidden_layers(self, x):
        """Layers between the (flattened) input and the softmax."""
        raise NotImplementedError

    def _build(self, input_shape: tuple[int, ...], n_classes: int, multilabel: bool = False):
        import keras

        inputs = keras.Input(input_shape, name="features")
        x = keras.layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
        x = self._hidden_layers(x)
        outputs = keras.layers.Dense(n_classes, activation="sigmoid" if multilabel else "softmax",
                                     name="probabilities")(x)
        return keras.Model(inputs, outputs, name=f"{self.name}_head")

    def fit(self, X, y, *, validation=None, context: FitContext | None = None) -> KerasHead:
        import keras

        X_train, y_train, X_val, y_val, context = fit_inputs(X, y, validation, context)
        X_train = as_rows(X_train, y_train)  # arrays or a store's view: one code path below
        if len(X_train.shape) < 3:
            raise ValueError("X_train must be (n, V, D): the cached views of each training image")
        has_val = X_val is not None
        n_classes = context.n_classes
        self.multilabel_ = np.ndim(y_train) == 2
        keras.utils.set_random_seed(int(self.seed))  # weights and dropout masks; views use their own rng
        model = self._build(tuple(X_train.shape[2:]), n_classes, self.multilabel_)
        model.compile(optimizer=make_optimizer(self.optimizer, self.lr, self.momentum),
                      loss="binary_crossentropy" if self.multilabel_ else "categorical_crossentropy",
                      metrics=["binary_accuracy" if self.multilabel_ else "accuracy"])
        self.model_ = model
        self._set_classes(n_classes)
        sampler = EpochSampler(X_train, n_classes, self.batch_size, self.seed)
        cbs = keras.callbacks.CallbackList(
            self._callbacks(list(context.callbacks), has_val, context.workdir, context.tensorboard_dir,
                            context.progress, context.checkpoint_every_epoch),
            add_history=True,
            model=model, epochs=int(self.epochs), steps=len(sampler), verbose=0)
        self._train_loop(model, sampler, cbs, X_val if has_val else None, np.asarray(y_val) if has_val else None)
        self.history_ = {k: [float(v) for v in vals] for k, vals in model.history.history.items()}
        self.views_drawn_ = np.stack(sampler.drawn)
        self.epochs_trained_ = len(self.views_drawn_)
        if "val_accuracy" in self.history_:  # the same (accuracy, -loss) order as BestEpoch
            score = self.history_.get("val_map", self.history_["val_accuracy"])
            keys = list(zip(score, (-v for v in self.history_["val_loss"]), strict=True))
            self.best_epoch_ = 1 + max(range(len(keys)), key=keys.__getitem__)
        else:
            self.best_epoch_ = self.epochs_trained_
        return self

    def _callbacks(self, extra: list, has_val: bool, workdir, tensorboard_dir, progress: bool,
                   every_epoch: bool = False) -> list:
        import keras

        cbs = extra
        if workdir is not None:
            workdir = Path(workdir)
            workdir.mkdir(parents=True, exist_ok=True)
            cbs.append(keras.callbacks.CSVLogger(str(workdir / HISTORY_FILE)))
        checkpoint = None if workdir is None else workdir / CHECKPOINT_FILE
        if every_epoch and workdir is not None:  # the Innolitics recipe's weights.{epoch:02d}.h5
            cbs.append(keras.callbacks.ModelCheckpoint(str(workdir / EPOCH_WEIGHTS), save_weights_only=True))
        cbs.append(_best_epoch_callback(int(self.patience) if has_val else None, checkpoint))
        if tensorboard_dir is not None:
            cbs.append(epoch_logs_callback(tensorboard_dir))
        if progress:
            cbs.append(_progress_callback(int(self.epochs), f"{self.name} head"))
        return cbs

    def _train_loop(self, model, sampler: EpochSampler, cbs, X_val, y_val) -> None:
        """What model.fit does, minus its per-epoch tf.data set-up (which costs more than the
        epoch itself on cached features): train_on_batch over the sampler, then validation
        through the same predict_proba used for the final metrics."""
        model.stop_training = False
        cbs.on_train_begin()
        logs: dict = {}
        for epoch in range(int(self.epochs)):
            sampler.on_epoch_begin()
            cbs.on_epoch_begin(epoch)
            sums, seen = {}, 0
            for step, (xb, yb) in enumerate(sampler):
                cbs.on_train_batch_begin(step)
                batch_logs = model.train_on_batch(xb, yb, return_dict=True)  # metrics of this batch only
                cbs.on_train_batch_end(step, batch_logs)
                for k, v in batch_logs.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(xb)
                seen += len(xb)
            logs = {k: v / seen for k, v in sums.items()}
            if X_val is not None and self.multilabel_:
                logs.update(multilabel_scores(self.predict_proba(X_val), y_val))
            elif X_val is not None:
                proba = self.predict_proba(X_val)
                picked = np.clip(proba[np.arange(len(y_val)), y_val], 1e-7, 1.0)  # Keras' epsilon
                logs["val_loss"] = float(-np.mean(np.log(picked)))
                logs["val_accuracy"] = float(np.mean(np.argmax(proba, 1) == y_val))
            cbs.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        cbs.on_train_end(logs)

    def predict_proba(self, X) -> np.ndarray:
        return map_blocks(X, lambda xb: np.asarray(self.model_(xb, training=False)), self.n_classes_)

    def to_keras(self):
        return self.model_

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model_.save(folder / MODEL_FILE)

    @classmethod
    def load(cls, folder: Path, params: dict) -> KerasHead:
        import keras

        head = cls(**params)
        head.model_ = keras.saving.load_model(Path(folder) / MODEL_FILE, compile=False)
        head._set_classes(int(head.model_.output_shape[-1]))
        head.multilabel_ = head.model_.layers[-1].get_config().get("activation") == "sigmoid"
        return head

    def refit_params(self) -> dict:
        return {"epochs": int(self.best_epoch_)}

    # -- grouped training: heads that draw the same batches share one graph (keras_group.py) ------
    group_limit: ClassVar[int | None] = 16  # beyond this a step's memory and trace time grow for little gain

    def group_key(self) -> tuple:
        """The same batches (views drawn, order): one batch size and one seed."""
        return (int(self.batch_size), int(self.seed))

    @classmethod
    def fit_group(cls, heads, X, y, *, validation=None, contexts=None) -> list:
        """One graph, every batch read once (keras_group.fit_together), each head's history in its
        workdir. It stops early on validation and writes no checkpoints or TensorBoard logs:
        without validation, or asked for those, or for one head, each fits alone."""
        from .keras_group import fit_together, write_history

        contexts = [c or FitContext() for c in (contexts if contexts is not None else [None] * len(heads))]
        X_train, y_train, X_val, y_val, first = fit_inputs(X, y, validation, contexts[0])
        alone = len(heads) < 2 or X_val is None or np.ndim(y_train) == 2 or any(
            c.tensorboard_dir is not None or c.checkpoint_every_epoch or c.callbacks for c in contexts)
        if alone:
            return super().fit_group(heads, X, y, validation=validation, contexts=contexts)
        fit_together(heads, X_train, y_train, X_val, y_val, first.n_classes, any(c.progress for c in contexts))
        for h, c in zip(heads, contexts, strict=True):
            if c.workdir is not None:
                write_history(h, c.workdir)
        return list(heads)

    def summary(self) -> dict:
        if not hasattr(self, "history_"):
            return {}
        val_acc = self.history_.get("val_accuracy")
        return {"epochs_trained": self.epochs_trained_, "best_epoch": self.best_epoch_,
                "best_val_accuracy": max(val_acc) if val_acc else None,
                **({"best_val_map": max(self.history_["val_map"])} if self.history_.get("val_map") else {}),
                "early_stopping": bool(val_acc)}


def multilabel_scores(proba: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Validation scores of per-class probabilities against multi-hot ``y``: binary cross-entropy
    (``val_loss``), per-label accuracy at 0.5 (``val_accuracy``) and the macro mean average
    precision over the classes present (``val_map``)."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y, np.float64)
    p = np.clip(np.asarray(proba, np.float64), 1e-7, 1 - 1e-7)  # Keras' epsilon
    present = y.any(axis=0)
    return {"val_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
            "val_accuracy": float(np.mean((p >= 0.5) == (y > 0))),
            "val_map": float(average_precision_score(y[:, present], p[:, present], average="macro"))
            if present.any() else 0.0}


@register_head
class MLPHead(KerasHead):
    """The Innolitics head: BatchNorm -> Dropout -> Dense(hidden, relu) -> BatchNorm -> Dropout -> softmax."""

    name = "mlp"
    parameters = (Param("hidden", int, 128, "Hidden units.", low=1), *keras_head_params(0.5, "adam", 64))

    def _hidden_layers(self, x):
        import keras

        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Dropout(float(self.dropout))(x)
        x = keras.layers.Dense(int(self.hidden), activation="relu")(x)
        x = keras.layers.BatchNormalization()(x)
        return keras.layers.Dropout(float(self.dropout))(x)


@register_head
class LinearHead(KerasHead):
    """Dropout -> softmax: the InceptionV3 recipe's head (after its global average pooling)."""

    name = "linear"
    parameters = keras_head_params(0.4, "rmsprop", 32)

    def _hidden_layers(self, x):
        import keras

        return keras.layers.Dropout(float(self.dropout))(x) if self.dropout else x


__all__ = ["OPTIMIZERS", "KerasHead", "LinearHead", "MLPHead", "ViewSampler", "keras_head_params", "make_optimizer"]

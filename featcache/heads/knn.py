"""`knn`: weighted k-nearest neighbours by cosine similarity (DINO's k-NN evaluation protocol).

Fitting only keeps a bank: the L2-normalised training rows (every cached view, or view 0 only)
and their labels. A query's k most similar bank rows vote for their classes, each with weight
exp(cosine / vote_temperature) (``weighting="softmax"``) or 1 (``"uniform"``, a plain majority vote);
its probabilities are each class's share of the votes (multi-label: each class's share of the
votes of the neighbours holding it, an independent probability per class). Validation chooses
nothing (k and the temperature are parameters: a sweep picks them), so it is accepted and ignored.

A training stream is read block by block into the bank, which is the model: it has to fit in
memory (float32, rows x dim x 4 bytes), even when the raw features did not. Prediction walks the
queries in blocks sized so that the (block x bank) similarities stay under ``SIMILARITY_BYTES``.

The bank is saved as plain arrays (``knn_bank.npz``), never pickle. The Keras form holds it in a
frozen Dense layer (similarities) and a frozen Embedding (labels): Keras' own layers and ops, so it
loads without featcache and converts to TFLite (TopK, Gather, OneHot are TFLite builtins). Its size
grows with the bank: a TFLite file is limited to 2 GB.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import FeatcacheError
from .base import FitContext, Head, fit_inputs, register_head
from .data import as_rows, map_blocks
from .params import Param

BANK_FILE = "knn_bank.npz"
SIMILARITY_BYTES = 256 << 20
# per similarity: its float32 and the int64 index np.argpartition returns for it
BYTES_PER_SIMILARITY = 4 + 8
EPSILON = 1e-12  # what keras.layers.UnitNormalization divides by at most: zero rows stay zero


def l2_normalise(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=-1, keepdims=True), EPSILON)


def _flat_rows(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(r, V, D) views or (r, D) rows and their r labels -> normalised (r * V, D) rows, labels."""
    X = np.asarray(X)
    if X.ndim == 3:  # row-major: image i's views are rows i*V .. i*V+V-1
        X, y = X.reshape(-1, X.shape[-1]), np.repeat(y, X.shape[1], axis=0)
    return l2_normalise(X), np.asarray(y, np.int64)


@register_head
class KNNHead(Head):
    name = "knn"
    files: ClassVar[tuple[str, ...]] = (BANK_FILE,)
    multilabel_capable: ClassVar[bool] = True  # multi-hot labels: each class's share of the votes

    @property
    def multilabel_(self) -> bool:
        return getattr(self, "labels_", np.zeros(0)).ndim == 2

    parameters = (
        Param("k", int, 20, "Neighbours that vote (the whole bank when it holds fewer rows).", low=1),
        Param("vote_temperature", float, 0.07, "Softmax temperature of the votes (softmax weighting): a "
              "neighbour's vote weighs exp(cosine / vote_temperature).", low=0, low_open=True),
        Param("weighting", str, "softmax", "softmax: votes weighted by similarity; uniform: a plain majority vote.",
              choices=("softmax", "uniform")),
        Param("bank_views", str, "all", "Training rows in the neighbour bank: every cached view of each image, "
              "or the first (un-augmented) one.", choices=("all", "first")),
    )
    # featcache 0.1's names, which collided with calibration's temperature and with views = 1 + K:
    # run folders and code that use them keep working
    RENAMED: ClassVar[dict[str, str]] = {"temperature": "vote_temperature", "views": "bank_views"}

    def set_params(self, **params) -> KNNHead:
        return super().set_params(**{self.RENAMED.get(k, k): v for k, v in params.items()})

    # -- training ----------------------------------------------------------------------------------
    def fit(self, X, y, *, validation=None, context: FitContext | None = None) -> KNNHead:
        X_train, y_train, _, _, context = fit_inputs(X, y, validation, context)  # validation chooses nothing
        X_train = as_rows(X_train, y_train)  # arrays or a store's view, read a block at a time
        if len(X_train.shape) != 3:
            raise ValueError("X_train must be (n, V, D): the cached views of each training image")
        view = 0 if self.bank_views == "first" else None
        parts = [_flat_rows(X, y) for X, y in X_train.blocks(view=view)]  # each block with its labels
        if sum(len(y) for _, y in parts) == 0:
            raise FeatcacheError("knn needs at least one training image")
        self.bank_ = np.concatenate([X for X, _ in parts])
        self.labels_ = np.concatenate([y for _, y in parts])
        self._set_classes(int(context.n_classes or (self.labels_.shape[1] if self.multilabel_
                                                    else 1 + self.labels_.max())))
        return self

    def k_used(self) -> int:
        return min(int(self.k), len(self.bank_))

    def summary(self) -> dict:
        if not hasattr(self, "bank_"):
            return {}
        return {"bank_rows": len(self.bank_), "k": self.k_used()}

    # -- grouped training: one bank for every head that keeps the same rows ------------------------
    def group_key(self) -> tuple:
        """k, the temperature and the weighting only change how the bank votes; ``bank_views`` changes
        the bank."""
        return (self.bank_views,)

    @classmethod
    def fit_group(cls, heads, X, y, *, validation=None, contexts=None) -> list[KNNHead]:
        """The bank built once (one pass over a store's rows) and shared by every head: the same
        arrays, so a sweep of N heads holds one bank in memory, not N."""
        contexts = list(contexts) if contexts is not None else [None] * len(heads)
        first = heads[0].fit(X, y, validation=validation, context=contexts[0])
        for h, c in zip(heads[1:], contexts[1:], strict=True):
            h.bank_, h.labels_ = first.bank_, first.labels_
            h._set_classes((c and c.n_classes) or first.n_classes_)
        return list(heads)

    # -- prediction (numpy) ------------------------------------------------------------------------
    def predict_proba(self, X) -> np.ndarray:
        rows = max(1, SIMILARITY_BYTES // (BYTES_PER_SIMILARITY * len(self.bank_)))
        return map_blocks(X, lambda xb: np.concatenate([self._block_proba(xb[i:i + rows])
                                                        for i in range(0, len(xb), rows)]), self.n_classes_)

    def _block_proba(self, X: np.ndarray) -> np.ndarray:
        sims = l2_normalise(X) @ self.bank_.T
        k = self.k_used()
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] \
            else np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
        s = np.take_along_axis(sims, top, axis=1).astype(np.float64)
        # minus the row's best similarity: exp never overflows, and it cancels in the normalisation
        w = np.exp((s - s.max(axis=1, keepdims=True)) / self.vote_temperature) if self.weighting == "softmax" \
            else np.ones_like(s)
        C = self.n_classes_
        if self.multilabel_:  # each class: the weighted share of the neighbours holding it
            mass = np.einsum("qk,qkc->qc", w, self.labels_[top].astype(np.float64))
            return (mass / w.sum(axis=1, keepdims=True)).astype(np.float32)
        cells = np.arange(len(X))[:, None] * C + self.labels_[top]  # (query, class) of each vote
        mass = np.bincount(cells.ravel(), weights=w.ravel(), minlength=len(X) * C).reshape(len(X), C)
        return (mass / mass.sum(axis=1, keepdims=True)).astype(np.float32)

    # -- persistence (no pickle) -------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / BANK_FILE, bank=self.bank_, labels=self.labels_, n_classes=self.n_classes_)

    @classmethod
    def load(cls, folder: Path, params: dict) -> KNNHead:
        head = cls(**params)
        with np.load(Path(folder) / BANK_FILE, allow_pickle=False) as z:
            head.bank_, head.labels_ = z["bank"].astype(np.float32), z["labels"].astype(np.int64)
            head._set_classes(int(z["n_classes"]))
        return head

    # -- Keras -------------------------------------------------------------------------------------
    def to_keras(self):
        import keras
        from keras import ops

        n, dim = self.bank_.shape
        features = keras.Input((dim,), name="features")
        x = keras.layers.UnitNormalization(name="normalise")(features)
        similarity = keras.layers.Dense(n, use_bias=False, trainable=False, name="bank")
        sims, top = ops.top_k(similarity(x), self.k_used())  # sorted: column 0 is the best
        if self.weighting == "softmax":
            w = ops.exp((sims - sims[:, :1]) / self.vote_temperature)
        else:
            w = ops.ones_like(sims)
        if self.multilabel_:  # each bank row's multi-hot labels as a frozen Embedding
            label_of = keras.layers.Embedding(n, self.n_classes_, trainable=False, name="bank_labels")
            mass = ops.sum(ops.expand_dims(w, -1) * label_of(top), axis=1)
            model = keras.Model(features, mass / ops.sum(w, axis=1, keepdims=True), name="knn_head")
            similarity.set_weights([self.bank_.T])
            label_of.set_weights([self.labels_.astype(np.float32)])
            return model
        # labels as a frozen float Embedding (exact below 2**24 classes): a Keras layer, so it is saved
        label_of = keras.layers.Embedding(n, 1, trainable=False, name="bank_labels")
        votes = ops.one_hot(ops.cast(ops.squeeze(label_of(top), -1), "int32"), self.n_classes_)
        mass = ops.sum(ops.expand_dims(w, -1) * votes, axis=1)
        model = keras.Model(features, mass / ops.sum(mass, axis=1, keepdims=True), name="knn_head")
        similarity.set_weights([self.bank_.T])
        label_of.set_weights([self.labels_[:, None].astype(np.float32)])
        return model

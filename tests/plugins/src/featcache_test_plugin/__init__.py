"""A third-party featcache plugin, as a package would ship one: a backbone with preprocessing
numbers unlike any built-in, and a head type. Found through the entry points declared in
../../dist/featcache_test_plugin-0.1.dist-info/entry_points.txt (no `pip install` needed: a
folder holding a .dist-info on sys.path is an installed distribution to importlib.metadata)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from featcache.backbones import BackboneSpec, Preprocess
from featcache.heads import FitContext, Head, Param, fit_inputs

# Scale, offset and channel order that no built-in preprocessing has.
ODD_PREPROCESS = Preprocess("odd", scale=(1 / 100.0, 1 / 90.0, 1 / 80.0), offset=(-1.3, -1.1, -0.9),
                            channel_order="bgr")


def _build_odd_net(size: int, weights: str):
    """Two seeded convolutions: deterministic in every process, cheap."""
    import keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu",
                            kernel_initializer=keras.initializers.GlorotUniform(seed=11))(inputs)
    x = keras.layers.Conv2D(12, 3, strides=2, padding="same", activation="relu",
                            kernel_initializer=keras.initializers.GlorotUniform(seed=12))(x)
    return keras.Model(inputs, x, name="odd_net")


ODD_NET = BackboneSpec(name="odd_net", input_size=32, feature_dim=12, preprocess=ODD_PREPROCESS,
                       build_features=_build_odd_net, weights_source="seeded init (plugin test)",
                       weights_available=lambda: True, weights_identity=lambda size: "odd-seeded-v1")


class CentroidHead(Head):
    """Softmax over negative squared distances to the class centroids (of all cached views).

    It trains in a sweep's groups through the head interface: every centroid head has one
    ``group_key``, and ``fit_group`` computes the class means once for all of them (temperature
    and shrink only change what is made of them). Each head records which ``fit_group`` call
    fitted it (``summary``), so a test can see the group happened."""

    name = "centroid"
    parameters = (
        Param("temperature", float, 1.0, "Softmax temperature.", low=0, low_open=True),
        Param("shrink", float, 0.0, "Pull each centroid towards the global mean by this fraction.", low=0, high=1),
    )
    files = ("centroids.npy", "centroid.json")
    group_calls = 0  # fit_group calls in this process

    @staticmethod
    def _means(X, y, validation, context):
        """(class means, global mean, number of classes) of every cached view."""
        X, y, _, _, context = fit_inputs(X, y, validation, context)
        n, v = X.shape[:2]
        X = np.asarray(X, np.float64).reshape(n * v, -1)
        y = np.repeat(y, v)
        return np.stack([X[y == c].mean(0) for c in range(context.n_classes)]), X.mean(0), context.n_classes

    def _set_centroids(self, means, mean, n_classes):
        self._set_classes(n_classes)
        self.centroids_ = (1 - self.shrink) * means + self.shrink * mean

    def fit(self, X, y, *, validation=None, context: FitContext | None = None):
        self._set_centroids(*self._means(X, y, validation, context))
        return self

    def group_key(self):
        return ()  # any two centroid heads share their class means

    @classmethod
    def fit_group(cls, heads, X, y, *, validation=None, contexts=None):
        CentroidHead.group_calls += 1
        stats = cls._means(X, y, validation, (contexts or [None])[0])
        for h in heads:
            h._set_centroids(*stats)
            h.fitted_in_group_ = {"call": CentroidHead.group_calls, "size": len(heads)}
        return list(heads)

    def summary(self):
        return {"group": self.fitted_in_group_} if hasattr(self, "fitted_in_group_") else {}

    def _logits(self, X):
        X = np.asarray(X, np.float64)
        c = self.centroids_
        # -|x - c|^2 / T, up to a per-row constant: (2 x.c - |c|^2) / T
        return (2 * X @ c.T - (c * c).sum(1)) / self.temperature

    def predict_proba(self, X):
        z = self._logits(X)
        z -= z.max(1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(1, keepdims=True)).astype(np.float32)

    def save(self, folder):
        np.save(Path(folder) / "centroids.npy", self.centroids_)
        (Path(folder) / "centroid.json").write_text(json.dumps({"n_classes": self.n_classes_}))

    @classmethod
    def load(cls, folder, params):
        head = cls(**params)
        head.centroids_ = np.load(Path(folder) / "centroids.npy")
        head._set_classes(json.loads((Path(folder) / "centroid.json").read_text())["n_classes"])
        return head

    def to_keras(self):
        import keras

        c = self.centroids_
        inputs = keras.Input((c.shape[1],))
        dense = keras.layers.Dense(c.shape[0], activation="softmax")
        model = keras.Model(inputs, dense(inputs))
        dense.set_weights([(2 * c.T / self.temperature).astype(np.float32),
                           (-(c * c).sum(1) / self.temperature).astype(np.float32)])
        return model

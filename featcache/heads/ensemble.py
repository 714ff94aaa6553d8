"""A per-backbone ensemble: one head per backbone's slice of the concatenated features, their
probabilities averaged (the alternative to one head on the concatenation).

Made by ``EnsembleHead.of(template, dims)`` (``fit-head --combine ensemble``): every member is a
clone of ``template`` and fits (choosing its own epochs or C on validation) on its own columns.
What it is made of is learned state, written to ``ensemble.json`` with each member's files in
``member_<i>/``; it has no parameters of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import FeatcacheError
from .base import Head, clone, get_head_class, register_head

ENSEMBLE_FILE = "ensemble.json"


@register_head
class EnsembleHead(Head):
    """Per-backbone heads, probabilities averaged (made by fit-head --combine ensemble)."""

    name = "ensemble"
    files = (ENSEMBLE_FILE,)

    @classmethod
    def of(cls, template: Head, dims: list[int]) -> EnsembleHead:
        head = cls()
        head.template_, head.dims_ = template, [int(d) for d in dims]
        return head

    def _slices(self) -> list[slice]:
        ends = np.cumsum([0, *self.dims_])
        return [slice(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:], strict=True)]

    def fit(self, X_train, y_train, X_val=None, y_val=None, *, n_classes=None, workdir=None,
            tensorboard_dir=None, progress=False, checkpoint_every_epoch=False) -> EnsembleHead:
        if not hasattr(self, "template_"):
            raise FeatcacheError("an ensemble is made from a head and the backbones' feature sizes: use "
                                 "fit-head --combine ensemble with the head to ensemble")
        if sum(self.dims_) != X_train.shape[-1]:
            raise FeatcacheError(f"the ensemble's feature sizes {self.dims_} do not add up to {X_train.shape[-1]}")
        self.members_ = [clone(self.template_).fit(
            np.asarray(X_train)[..., s], y_train, None if X_val is None else np.asarray(X_val)[..., s], y_val,
            n_classes=n_classes, progress=progress) for s in self._slices()]
        self._set_classes(self.members_[0].n_classes_)
        return self

    def refitted(self, X, y, n_classes: int) -> EnsembleHead:
        head = EnsembleHead.of(self.template_, self.dims_)
        head.members_ = [m.refitted(X[..., s], y, n_classes) for m, s in zip(self.members_, self._slices(), strict=True)]
        head._set_classes(n_classes)
        return head

    def predict_proba(self, X) -> np.ndarray:
        X = np.asarray(X)
        return np.mean([m.predict_proba(X[..., s]) for m, s in zip(self.members_, self._slices(), strict=True)], axis=0)

    def summary(self) -> dict:
        return {"members": [{"head": m.name, "params": m.get_params(), "features": d, **m.summary()}
                            for m, d in zip(self.members_, self.dims_, strict=True)]}

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        for i, m in enumerate(self.members_):
            m.save(folder / f"member_{i}")
        record = {"dims": self.dims_, "n_classes": self.n_classes_,
                  "members": [{"head": m.name, "params": m.get_params()} for m in self.members_]}
        (folder / ENSEMBLE_FILE).write_text(json.dumps(record, indent=2, default=list))

    @classmethod
    def load(cls, folder: Path, params: dict) -> EnsembleHead:
        folder = Path(folder)
        record = json.loads((folder / ENSEMBLE_FILE).read_text())
        head = cls()
        head.dims_ = [int(d) for d in record["dims"]]
        head.members_ = [get_head_class(m["head"]).load(folder / f"member_{i}", m["params"])
                         for i, m in enumerate(record["members"])]
        head.template_ = clone(head.members_[0])
        head._set_classes(record["n_classes"])
        return head

    def to_keras(self):
        import keras

        inputs = keras.Input((sum(self.dims_),), name="features")
        parts = []
        for i, (m, s) in enumerate(zip(self.members_, self._slices(), strict=True)):
            member = m.to_keras()
            member.name = f"member_{i}_{member.name}"  # two heads of one type would share a name
            parts.append(member(inputs[:, s.start:s.stop]))
        return keras.Model(inputs, keras.layers.Average(name="probabilities")(parts), name="ensemble_head")

"""A per-backbone ensemble: one head per backbone's slice of the concatenated features, their
probabilities averaged (the alternative to one head on the concatenation).

A scikit-learn meta-estimator: its parameters are ``head`` (the template every member is a clone
of) and ``dims`` (the feature size of each backbone, in concatenation order), and the template's
own parameters are reachable as ``head__<name>`` (``get_params(deep=True)``, ``set_params``), so
``clone`` and ``GridSearchCV`` take it like any head. ``fit-head --combine ensemble`` makes one.
Each member fits (choosing its own epochs or C on validation) on its own columns; the members
(``members_``) and the sizes they were fitted on (``dims_``) are learned state, written to
``ensemble.json`` with each member's files in ``member_<i>/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError
from .base import FitContext, Head, clone, fit_inputs, get_head_class, register_head
from .data import as_rows

ENSEMBLE_FILE = "ensemble.json"


@register_head
class EnsembleHead(Head):
    """Per-backbone heads, probabilities averaged (made by fit-head --combine ensemble)."""

    name = "ensemble"
    files = (ENSEMBLE_FILE,)
    # no declared Params: its parameters are a head and a list of sizes, which no CLI option spells

    def __init__(self, head: Head | None = None, dims: list[int] | None = None):
        # stored as given (scikit-learn's rule, which sklearn.base.clone checks); fit validates them
        self.head = head
        self.dims = dims

    @classmethod
    def of(cls, template: Head, dims: list[int]) -> EnsembleHead:
        return cls(head=template, dims=[int(d) for d in dims])

    # -- parameters (a meta-estimator's: the template and its own, nested) ----------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        params: dict[str, Any] = {"head": self.head, "dims": self.dims}
        if deep and self.head is not None:
            params.update({f"head__{k}": v for k, v in self.head.get_params(deep=True).items()})
        return params

    def set_params(self, **params: Any) -> EnsembleHead:
        own = {k: v for k, v in params.items() if k in ("head", "dims")}
        nested = {k.removeprefix("head__"): v for k, v in params.items() if k.startswith("head__")}
        unknown = sorted(k for k in params if k not in own and not k.startswith("head__"))
        if unknown:
            raise ParameterError(unknown[0], f"head 'ensemble' has no parameter {unknown[0]!r}; its parameters: "
                                             "head, dims, and the head's own as head__<name>")
        if "head" in own and own["head"] is not None and not isinstance(own["head"], Head):
            raise ParameterError("head", f"expected a featcache head, got {own['head']!r}")
        template = own.get("head", self.head)
        if nested:
            if template is None:
                raise ParameterError(next(iter(nested)), "the ensemble has no head to set it on")
            template.set_params(**nested)  # validated there; refused: nothing below changes
        for k, v in own.items():
            setattr(self, k, v)
        return self

    def params_record(self) -> dict[str, Any]:
        return {"head": None if self.head is None else {"type": self.head.name, "params": self.head.params_record()},
                "dims": None if self.dims is None else [int(d) for d in self.dims]}

    # -- training --------------------------------------------------------------------------------------
    def _slices(self) -> list[slice]:
        ends = np.cumsum([0, *self.dims_])
        return [slice(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:], strict=True)]

    def fit(self, X, y, *, validation=None, context: FitContext | None = None) -> EnsembleHead:
        if self.head is None:
            raise ParameterError("head", "an ensemble is made from a head and the backbones' feature sizes",
                                 remedy="fit the head to ensemble with combine ensemble", mentions=("combine",))
        X_train, y_train, X_val, y_val, context = fit_inputs(X, y, validation, context)
        dims = [int(d) for d in (self.dims if self.dims is not None else [X_train.shape[-1]])]
        if sum(dims) != X_train.shape[-1]:
            raise ParameterError("dims", f"the ensemble's feature sizes {dims} do not add up to {X_train.shape[-1]}")
        self.dims_ = dims
        # members keep only what is theirs from the context: a member's history would overwrite another's
        member = FitContext(n_classes=context.n_classes, progress=context.progress)
        X_train, X_val = as_rows(X_train), None if X_val is None else as_rows(X_val)  # arrays or a store's view
        self.members_ = [clone(self.head).fit(
            X_train.columns(s), y_train, validation=None if X_val is None else (X_val.columns(s), y_val),
            context=member) for s in self._slices()]
        self._set_classes(self.members_[0].n_classes_)
        return self

    def refitted(self, X, y, n_classes: int) -> EnsembleHead:
        head = clone(self)
        head.dims_ = list(self.dims_)
        X = as_rows(X)
        head.members_ = [m.refitted(X.columns(s), y, n_classes) for m, s in zip(self.members_, self._slices(), strict=True)]
        head._set_classes(n_classes)
        return head

    def predict_proba(self, X) -> np.ndarray:
        X = as_rows(X)
        return np.mean([m.predict_proba(X.columns(s)) for m, s in zip(self.members_, self._slices(), strict=True)], axis=0)

    def summary(self) -> dict:
        return {"members": [{"head": m.name, "params": m.params_record(), "features": d, **m.summary()}
                            for m, d in zip(self.members_, self.dims_, strict=True)]}

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder = Path(folder)
        for i, m in enumerate(self.members_):
            m.save(folder / f"member_{i}")
        record = {"dims": self.dims_, "n_classes": self.n_classes_,
                  "members": [{"head": m.name, "params": m.params_record()} for m in self.members_]}
        if self.head is not None:
            record["template"] = {"head": self.head.name, "params": self.head.params_record()}
        (folder / ENSEMBLE_FILE).write_text(json.dumps(record, indent=2, default=list))

    @classmethod
    def load(cls, folder: Path, params: dict) -> EnsembleHead:
        """``params`` is what config.json recorded; a folder written before the ensemble had
        parameters recorded none, and its template is then its first member's parameters."""
        folder = Path(folder)
        record = json.loads((folder / ENSEMBLE_FILE).read_text())
        members = [get_head_class(m["head"]).load(folder / f"member_{i}", m["params"])
                   for i, m in enumerate(record["members"])]
        template = record.get("template") or (params or {}).get("head")
        if template:
            kind = template.get("head", template.get("type"))
            head = get_head_class(kind)(**template["params"])
        else:
            head = clone(members[0])
        ensemble = cls(head=head, dims=[int(d) for d in record["dims"]])
        ensemble.dims_, ensemble.members_ = list(ensemble.dims), members
        ensemble._set_classes(record["n_classes"])
        return ensemble

    def to_keras(self):
        import keras

        inputs = keras.Input((sum(self.dims_),), name="features")
        parts = []
        for i, (m, s) in enumerate(zip(self.members_, self._slices(), strict=True)):
            member = m.to_keras()
            member.name = f"member_{i}_{member.name}"  # two heads of one type would share a name
            parts.append(member(inputs[:, s.start:s.stop]))
        return keras.Model(inputs, keras.layers.Average(name="probabilities")(parts), name="ensemble_head")


__all__ = ["ENSEMBLE_FILE", "EnsembleHead"]

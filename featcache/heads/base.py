"""The Head interface and the registry of head types.

scikit-learn's estimator rules: parameters in the constructor (declared once, as ``Param``s),
learned state set by ``fit`` with a trailing underscore (``classes_``, ``model_``, ...), ``fit``
returns self, ``get_params``/``set_params`` validate names and values, ``clone`` copies the
parameters without the learned state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import ParameterError
from ..registry import Registry
from .params import Param


class Head(ABC):
    name: ClassVar[str]
    parameters: ClassVar[tuple[Param, ...]] = ()
    files: ClassVar[tuple[str, ...]] = ()  # what save() writes into the run folder

    def __init__(self, **params: Any):
        for p in self.parameters:
            setattr(self, p.name, p.default)
        self.set_params(**params)

    @classmethod
    def param(cls, name: str) -> Param:
        for p in cls.parameters:
            if p.name == name:
                return p
        raise ParameterError(name, f"head {cls.name!r} has no parameter {name!r}; its parameters: "
                                   f"{', '.join(cls.param_names())}")

    @classmethod
    def param_names(cls) -> list[str]:
        return [p.name for p in cls.parameters]

    def get_params(self) -> dict[str, Any]:
        return {p.name: getattr(self, p.name) for p in self.parameters}

    def set_params(self, **params: Any) -> Head:
        checked = {name: self.param(name).validate(value) for name, value in params.items()}
        for name, value in checked.items():  # all or nothing
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.get_params().items() if v != self.param(k).default}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    @abstractmethod
    def fit(self, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None, *, n_classes: int | None = None, workdir: str | Path | None = None,
            tensorboard_dir: str | Path | None = None, progress: bool = False,
            checkpoint_every_epoch: bool = False) -> Head:
        """X_train: (n, V, D) cached views (view 0 un-augmented); X_val: (m, D) view-0 features.
        y: int labels in [0, n_classes). ``workdir`` receives the training history (and a
        checkpoint), ``tensorboard_dir`` TensorBoard logs; a head ignores what it has no use for.
        Sets ``classes_`` (the label indices) and ``n_classes_``."""

    @abstractmethod
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, D) features -> (n, C) class probabilities."""

    @abstractmethod
    def save(self, folder: Path) -> None:
        """Write learned state into folder (no pickle)."""

    @classmethod
    @abstractmethod
    def load(cls, folder: Path, params: dict) -> Head: ...

    @abstractmethod
    def to_keras(self):
        """A Keras model (D,) features -> (C,) probabilities giving the same numbers as predict_proba."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self.predict_proba(X), axis=1)

    def summary(self) -> dict:
        """What fit learned beyond the weights (epochs run, chosen C, ...), for metrics.json."""
        return {}

    def refit_params(self) -> dict[str, Any]:
        """After a fit with validation: the parameters that fix what validation chose (the best
        epoch, C), so a clone fitted on train + validation without validation follows the same
        choice. {} for a head whose fit chooses nothing on validation."""
        return {}

    def refitted(self, X: np.ndarray, y: np.ndarray, n_classes: int) -> Head:
        """A new head fitted on (X, y) without validation, with what validation chose here fixed."""
        return clone(self).set_params(**self.refit_params()).fit(X, y, n_classes=n_classes)

    def _set_classes(self, n_classes: int) -> None:
        self.n_classes_ = int(n_classes)
        self.classes_ = np.arange(self.n_classes_)


def clone(head: Head) -> Head:
    """A new, unfitted head with the same parameters."""
    return type(head)(**head.get_params())


HEADS: Registry[type[Head]] = Registry("head", "featcache.heads", lambda o: isinstance(o, type) and issubclass(o, Head))


def register_head(cls: type[Head], *, replace: bool = False) -> type[Head]:
    names = [p.name for p in cls.parameters]
    if len(set(names)) != len(names):
        raise ParameterError("parameters", f"head {cls.name!r} declares a parameter twice")
    return HEADS.register(cls, replace=replace)


def get_head_class(name: str) -> type[Head]:
    return HEADS.get(name)


def make_head(name: str, params: dict | None = None, seed: int | None = None) -> Head:
    """A head of type ``name``; an unknown or bad parameter is a ParameterError naming it. ``seed``
    goes to the head's own ``seed`` parameter when it declares one."""
    cls = get_head_class(name)
    params = dict(params or {})
    if seed is not None and "seed" in cls.param_names():
        params.setdefault("seed", seed)
    return cls(**params)

"""The Head interface (scikit-learn style: parameters in __init__, learned state in fit with a
trailing underscore, fit returns self) and the registry of head types."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import FeatcacheError


class Head(ABC):
    name: ClassVar[str]
    files: ClassVar[tuple[str, ...]] = ()  # what save() writes into the run folder

    @abstractmethod
    def fit(self, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None, **fit_options) -> Head:
        """X_train: (n, V, D) cached views (view 0 un-augmented); X_val: (m, D) view-0 features.
        y: int labels in [0, n_classes). Keyword fit_options are head-specific (callbacks, logs);
        every head accepts ``n_classes``, ``workdir`` (history CSV, checkpoint), ``tensorboard_dir``
        and ``progress`` and ignores what it has no use for."""

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

    # -- scikit-learn conventions, shared ---------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self) -> dict:
        return {p: getattr(self, p) for p in self.param_names()}

    def set_params(self, **params) -> Head:
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self.predict_proba(X), axis=1)

    def summary(self) -> dict:
        """What fit learned beyond the weights (epochs run, chosen C, ...), for metrics.json."""
        return {}


HEADS: dict[str, type[Head]] = {}


def register_head(cls: type[Head]) -> type[Head]:
    HEADS[cls.name] = cls
    return cls


def get_head_class(name: str) -> type[Head]:
    try:
        return HEADS[name]
    except KeyError:
        raise FeatcacheError(f"unknown head {name!r}; known heads: {', '.join(sorted(HEADS))}") from None


def make_head(name: str, params: dict | None = None) -> Head:
    """A head of type ``name``; unknown parameters are a user error naming the valid ones."""
    cls = get_head_class(name)
    params = dict(params or {})
    unknown = sorted(set(params) - set(cls.param_names()))
    if unknown:
        raise FeatcacheError(f"head {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                             f"its parameters: {', '.join(cls.param_names())}")
    return cls(**params)

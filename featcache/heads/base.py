"""The Head interface (scikit-learn style: parameters in __init__, learned state in fit with a
trailing underscore, fit returns self) and the registry of head types."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np


class Head(ABC):
    name: ClassVar[str]

    @abstractmethod
    def fit(self, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None, **fit_options) -> Head:
        """X_train: (n, V, D) cached views (view 0 un-augmented); X_val: (m, D) view-0 features.
        y: int labels in [0, n_classes). Keyword fit_options are head-specific (callbacks, logs)."""

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

    @abstractmethod
    def get_params(self) -> dict: ...


HEADS: dict[str, type[Head]] = {}


def register_head(cls: type[Head]) -> type[Head]:
    HEADS[cls.name] = cls
    return cls

"""Heads trained on cached features: the Head interface, its parameter declarations, the registry.

Importing this package registers the built-in heads (``mlp``, ``linear``, ``logreg``, ``knn``,
``zeroshot``);
Keras and scikit-learn are imported only when a head is fitted, loaded or exported. Plugins add
heads through the ``featcache.heads`` entry-point group (a Head subclass, or a list of them).
"""

from __future__ import annotations

from . import ensemble, keras_heads, knn, logreg, zeroshot  # noqa: F401  (registers the built-in heads)
from .base import HEADS, FitContext, Head, clone, fit_inputs, get_head_class, make_head, register_head
from .ensemble import EnsembleHead
from .keras_heads import KerasHead, LinearHead, MLPHead
from .knn import KNNHead
from .logreg import LogRegHead
from .params import Param
from .zeroshot import ZeroShotHead

__all__ = [
    "HEADS", "EnsembleHead", "FitContext", "Head", "KerasHead", "KNNHead", "LinearHead", "LogRegHead", "MLPHead", "Param", "ZeroShotHead",
    "clone", "fit_inputs", "get_head_class", "make_head", "register_head",
]

"""Heads trained on cached features, and the run folders they are saved in.

Importing this package registers the built-in heads (``mlp``, ``linear``, ``logreg``); Keras and
scikit-learn are imported only when a head is fitted, loaded or exported.
"""

from __future__ import annotations

from . import keras_heads, logreg  # noqa: F401  (registers the built-in heads)
from .base import HEADS, Head, get_head_class, make_head, register_head
from .keras_heads import KerasHead, LinearHead, MLPHead
from .logreg import LogRegHead
from .run import CONFIG_FILE, RunConfig, TrainedRun, load_run

__all__ = [
    "CONFIG_FILE", "HEADS", "Head", "KerasHead", "LinearHead", "LogRegHead", "MLPHead", "RunConfig", "TrainedRun",
    "get_head_class", "load_run", "make_head", "register_head",
]

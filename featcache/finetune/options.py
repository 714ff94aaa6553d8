"""FineTuneOptions: what `fine-tune` is asked to do, validated once."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ParameterError
from ..extraction.reader import decode_threads
from ..heads.keras_heads import OPTIMIZERS
from .blocks import parse_unfreeze

MAX_BATCH_SIZE = 4096


@dataclass(frozen=True)
class FineTuneOptions:
    """The Keras guide's second step: the top ``unfreeze`` blocks (or "all") train end to end at a
    low learning rate, BatchNorm frozen, early-stopped on validation accuracy."""

    unfreeze: int | str = 1
    epochs: int = 10
    lr: float = 1e-5
    optimizer: str = "adam"
    momentum: float = 0.9  # SGD only (the InceptionV3 recipe's SGD(1e-4, momentum=0.9))
    batch_size: int = 32
    patience: int = 3  # epochs without a better validation score before stopping
    seed: int = 0  # of the batch order and dropout masks; the views are the store's augmentation
    workers: int | None = None  # image decoding threads; None: up to 4
    progress: bool = True

    def __post_init__(self):
        object.__setattr__(self, "unfreeze", parse_unfreeze(self.unfreeze))
        for name, low in (("epochs", 1), ("patience", 1), ("workers", 1)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < low):
                raise ParameterError(name, f"must be a whole number, {low} or more, got {value!r}")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ParameterError("batch_size", f"must be from 1 to {MAX_BATCH_SIZE}, got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ParameterError("lr", f"must be a positive number, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ParameterError("momentum", f"must be from 0 to below 1, got {self.momentum}")
        if self.optimizer not in OPTIMIZERS:
            raise ParameterError("optimizer", f"unknown optimizer {self.optimizer!r}; choose one of "
                                              f"{', '.join(OPTIMIZERS)}")

    @property
    def threads(self) -> int:
        return decode_threads(self.workers)

    def to_dict(self) -> dict:
        return {"unfreeze": self.unfreeze, "epochs": self.epochs, "lr": self.lr, "optimizer": self.optimizer,
                "momentum": self.momentum, "batch_size": self.batch_size, "patience": self.patience, "seed": self.seed}

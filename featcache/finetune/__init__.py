"""Fine-tuning (the Keras transfer-learning guide's second step, LP-FT): a fit-head run's head
trained end to end with the top blocks of its backbone, BatchNorm frozen, early-stopped on
validation. ``blocks`` (which layers train), ``data`` (the store's images, read as extraction
reads them), ``network`` (backbone + head), ``trainer`` (the loop), ``output`` (the run folder),
``pipeline`` (``fine_tune()``)."""

from __future__ import annotations

from .options import FineTuneOptions
from .output import FineTuneResult
from .pipeline import fine_tune

__all__ = ["FineTuneOptions", "FineTuneResult", "fine_tune"]

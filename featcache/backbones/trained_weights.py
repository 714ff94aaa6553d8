"""Backbone weights Keras writes itself (``.weights.h5``): how `featcache fine-tune` saves a trained
backbone, and how a builder loads such a file given as a local weights file.

A fine-tune run folder carries its backbone as ``backbone.weights.h5``; given as ``--weights`` (a
folder), it stands for that file, so `extract --weights RUN` computes features with the network
the run trained.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ..errors import FeatcacheError, ParameterError, describe_error

SUFFIX = ".weights.h5"  # the ending Keras 3 requires of a weights-only file
FINE_TUNED_FILE = "backbone" + SUFFIX  # inside a fine-tune run folder


def is_keras_weights(path: str | Path) -> bool:
    return str(path).endswith(SUFFIX)


def load_keras_weights(model, path: str | Path, name: str) -> None:
    """Load ``path`` into ``model`` (built by the same builder as the model that saved it)."""
    try:
        with warnings.catch_warnings():  # a mismatching file also warns once per layer before the error
            warnings.simplefilter("ignore")
            model.load_weights(str(path))
    except Exception as exc:  # Keras raises ValueError on mismatch, h5py OSError on a damaged file
        raise FeatcacheError(f"{name}: cannot load weights file {path} ({describe_error(exc)}); it is not a "
                             f"{name} backbone saved by fine-tuning") from exc


def fine_tuned_weights(folder: Path, name: str, input_size: int | None) -> tuple[str, int | None]:
    """A fine-tune run folder given as weights -> (its backbone file, the input size: the one given,
    else the one the run trained at). The run must have trained ``name``."""
    path = folder / FINE_TUNED_FILE
    if not path.is_file():
        raise ParameterError("weights", f"{folder} is a folder without a fine-tuned backbone ({FINE_TUNED_FILE}); "
                                        "give a run folder written by fine-tuning, or a weights file")
    try:
        backbone = json.loads((folder / "config.json").read_text())["features"][0]["backbone"]
        trained, size = str(backbone["name"]), int(backbone["input_size"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise ParameterError("weights", f"{folder}/config.json cannot be read as a run config "
                                        f"({describe_error(exc)}); restore it or fine-tune again") from exc
    if trained != name:
        raise ParameterError("weights", f"{folder} fine-tuned {trained}, not {name}; extract it as backbone {trained}")
    return str(path), size if input_size is None else input_size

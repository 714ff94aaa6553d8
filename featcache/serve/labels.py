"""The ``.labels.json`` sidecar every exported model gets: its class names (one per output, in
order) and what its inputs take, readable by anyone with a JSON parser."""

from __future__ import annotations

import json
from pathlib import Path

from .. import __version__
from ..errors import FeatcacheError, ParameterError, describe_error

MODEL_SUFFIXES = (".keras", ".tflite")
EXPECTED = '{"classes": ["name of output 0", "name of output 1", ...]}'


def sidecar_path(model: Path) -> Path:
    """clf.keras / clf.tflite -> clf.labels.json; a SavedModel folder clf -> clf.labels.json beside it."""
    model = Path(model)
    return model.with_suffix(".labels.json") if model.suffix in MODEL_SUFFIXES else \
        model.parent / f"{model.name}.labels.json"


def check_sidecar_path(model: Path) -> Path:
    sidecar = sidecar_path(model)
    if sidecar.is_dir():
        raise ParameterError("out", f"{sidecar} is a folder, where the model's class names would be written; "
                                    "choose another model file name")
    return sidecar


def write_sidecar(model: Path, classes: list[str], input_sizes: list[int], input_note: str) -> Path:
    sidecar = sidecar_path(model)
    labels = {"classes": list(classes), "input_sizes": list(input_sizes), "input": input_note,
              "featcache_version": __version__}
    try:
        sidecar.write_text(json.dumps(labels, indent=2))
    except OSError as exc:  # no permission, disk full
        raise ParameterError("out", f"cannot write {sidecar} ({exc.strerror})") from exc
    return sidecar


def read_sidecar(model: Path) -> list[str]:
    """The class names of a model's sidecar: {"classes": ["name of output 0", ...], ...}."""
    sidecar = sidecar_path(model)
    if not sidecar.is_file():
        raise FeatcacheError(f"{model}: no class names inside and no {sidecar.name} beside it; write one "
                             f"holding {EXPECTED}")
    try:
        d = json.loads(sidecar.read_bytes())
    except OSError as exc:
        raise FeatcacheError(f"{sidecar} cannot be read ({exc.strerror})") from exc
    except ValueError as exc:  # UnicodeDecodeError included
        raise FeatcacheError(f"{sidecar} is not valid JSON ({describe_error(exc)}); it must hold {EXPECTED}") from exc
    if not isinstance(d, dict) or "classes" not in d:
        raise FeatcacheError(f'{sidecar} has no "classes"; it must hold {EXPECTED}')
    classes = d["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise FeatcacheError(f'{sidecar}: "classes" must be a list of class names (strings), as in {EXPECTED}')
    return classes

"""The ``.labels.json`` sidecar every exported model gets: its class names (one per output, in
order) and what its inputs take, readable by anyone with a JSON parser.

One sidecar per model name: ``clf.keras`` -> ``clf.keras.labels.json``, ``clf.tflite`` ->
``clf.tflite.labels.json``, a SavedModel folder ``clf`` -> ``clf.labels.json``, so exporting
``clf.keras`` and then ``clf.tflite`` never relabels the first. The sidecar records the SHA-256 of
the model it was written with (``model_sha256``): a sidecar beside another model (a copy, a
killed export) is refused, not believed. ``clf.labels.json`` beside ``clf.keras`` or
``clf.tflite`` (featcache 0.1's name, or one a user wrote for a foreign model) is still read.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .. import __version__, atomic
from ..errors import FeatcacheError, ParameterError, describe_error

MODEL_SUFFIXES = (".keras", ".tflite")
EXPECTED = '{"classes": ["name of output 0", "name of output 1", ...]}'
MAX_SIDECAR_BYTES = 16 << 20  # a few KB; a few MB with thousands of class names
SAVED_MODEL_FILE = "saved_model.pb"  # what a SavedModel folder's digest is taken of


def sidecar_path(model: Path) -> Path:
    """The sidecar a model is read with: its own (clf.keras.labels.json), else the shared name an
    older export or a user wrote (clf.labels.json)."""
    own = own_sidecar_path(model)
    legacy = _legacy_sidecar_path(Path(model))
    return legacy if not own.exists() and legacy is not None and legacy.exists() else own


def own_sidecar_path(model: Path) -> Path:
    """The sidecar export writes: <model name>.labels.json beside the model file or folder."""
    model = Path(model)
    return model.parent / f"{model.name}.labels.json"


def _legacy_sidecar_path(model: Path) -> Path | None:
    return model.with_suffix(".labels.json") if model.suffix in MODEL_SUFFIXES else None


def model_digest(model: Path) -> str:
    """SHA-256 of a model file, or of a SavedModel folder's saved_model.pb."""
    path = Path(model) / SAVED_MODEL_FILE if Path(model).is_dir() else Path(model)
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def check_sidecar_path(model: Path) -> Path:
    sidecar = own_sidecar_path(model)
    if sidecar.is_dir():
        raise ParameterError("out", f"{sidecar} is a folder, where the model's class names would be written; "
                                    "choose another model file name")
    return sidecar


def write_sidecar(model: Path, classes: list[str], input_sizes: list[int], input_note: str,
                  thresholds: list[float] | None = None) -> Path:
    """The model's own sidecar, replaced in one step, bound to the model (in place already) by its
    digest. ``thresholds``: a multi-label model's per-class decision thresholds."""
    sidecar = own_sidecar_path(model)
    labels = {"classes": list(classes), "input_sizes": list(input_sizes), "input": input_note,
              "featcache_version": __version__, "model_sha256": model_digest(model),
              **({"multilabel": True, "thresholds": list(thresholds)} if thresholds is not None else {})}
    try:
        with atomic.replaced(sidecar) as tmp, os.fdopen(atomic.create_exclusive(tmp), "w") as f:
            f.write(json.dumps(labels, indent=2))
    except OSError as exc:  # no permission, disk full
        raise ParameterError("out", f"cannot write {sidecar} ({exc.strerror})") from exc
    return sidecar


def read_sidecar(model: Path) -> list[str]:
    """The class names of a model's sidecar: {"classes": ["name of output 0", ...], ...}."""
    return _read_sidecar(model)["classes"]


def sidecar_thresholds(model: Path) -> list[float] | None:
    """A multi-label model's per-class thresholds from its sidecar (``"multilabel": true``);
    None for a single-label model or one without a sidecar."""
    if not sidecar_path(model).is_file():
        return None
    d = _read_sidecar(model)
    if not d.get("multilabel"):
        return None
    t = d.get("thresholds")
    if (not isinstance(t, list) or len(t) != len(d["classes"])
            or not all(isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1 for v in t)):
        raise FeatcacheError(f'{sidecar_path(model)}: "thresholds" must list one number from 0 to 1 per class')
    return [float(v) for v in t]


def _read_sidecar(model: Path) -> dict:
    sidecar = sidecar_path(model)
    if not sidecar.is_file():
        raise FeatcacheError(f"{model}: no class names inside and no {sidecar.name} beside it; write one "
                             f"holding {EXPECTED}")
    try:
        with sidecar.open("rb") as f:
            text = f.read(MAX_SIDECAR_BYTES + 1)
        if len(text) > MAX_SIDECAR_BYTES:
            raise FeatcacheError(f"{sidecar} is larger than a class-names sidecar can be ({MAX_SIDECAR_BYTES >> 20} "
                                 f"MiB); it must hold {EXPECTED}")
        d = json.loads(text)
    except OSError as exc:
        raise FeatcacheError(f"{sidecar} cannot be read ({exc.strerror})") from exc
    except ValueError as exc:  # UnicodeDecodeError included
        raise FeatcacheError(f"{sidecar} is not valid JSON ({describe_error(exc)}); it must hold {EXPECTED}") from exc
    if not isinstance(d, dict) or "classes" not in d:
        raise FeatcacheError(f'{sidecar} has no "classes"; it must hold {EXPECTED}')
    classes = d["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise FeatcacheError(f'{sidecar}: "classes" must be a list of class names (strings), as in {EXPECTED}')
    recorded = d.get("model_sha256")
    if recorded is not None and recorded != model_digest(model):
        raise FeatcacheError(f"{sidecar} was written for another version of {model} (its model_sha256 does not "
                             "match the model)", remedy="export the model again, or restore the sidecar that came "
                                                        "with it")
    return d

"""``.keras``: the end-to-end model in Keras' own format, built from Keras' own layers only, so
``keras.saving.load_model(path)`` reads it in any Python with Keras, no custom objects. The class
names are in its ``metadata.json`` (``"class_names"``) and in the sidecar."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from ...atomic import temporary_sibling
from ...errors import FeatcacheError, ParameterError, describe_error
from ...train.run import check_archive
from ..labels import read_sidecar, sidecar_path
from .base import INPUT_NOTE, ExportFormat, ExportJob, ExportResult, size_of

METADATA = "metadata.json"  # Keras' own small JSON member of the archive (version, date)


def write(job: ExportJob, out: Path, quantize: str) -> ExportResult:
    try:
        job.model.save(out)
        _add_metadata(out, {"class_names": list(job.classes), "input": INPUT_NOTE})
    except OSError as exc:  # no permission, disk full
        raise ParameterError("out", f"cannot write {out} ({exc.strerror})") from exc
    return ExportResult(out, "keras", quantize, None, size_of(out))


def _add_metadata(path: Path, extra: dict) -> None:
    """Rewrite the archive with ``extra`` merged into its metadata.json (Keras reads only its own
    keys from it, and a zip member cannot be replaced in place)."""
    with zipfile.ZipFile(path) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    tmp = temporary_sibling(path)
    with zipfile.ZipFile(tmp, "x") as zf:  # "x": a new file, nothing at the name followed
        for info, data in members:
            if info.filename == METADATA:
                data = json.dumps({**json.loads(data), **extra}).encode()
            zf.writestr(info, data)
    os.replace(tmp, path)


def metadata_classes(path: Path) -> list[str] | None:
    """The class names a featcache export keeps in its metadata.json, or None."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = json.loads(zf.read(METADATA)).get("class_names")
    except (KeyError, ValueError, AttributeError, zipfile.BadZipFile):
        return None
    return names if isinstance(names, list) and all(isinstance(c, str) for c in names) else None


def holds(path: Path) -> bool:
    return path.suffix == ".keras" and path.is_file()


def load(path: Path):
    import keras

    from .. import layers  # noqa: F401  (registers featcache 0.1's custom layers: older exports load too)
    from ..classifier import Classifier

    check_archive(path, "export it again or copy it over again")
    try:
        # compile=False: only predicted with, so a foreign model's loss or optimizer need not load
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # keras raises many types for a bad file
        raise FeatcacheError(f"{path}: cannot load as a Keras model ({describe_error(exc)})") from exc
    legacy = getattr(next((layer for layer in model.layers if layer.name == "class_names"), None),
                     "class_names", None)
    if legacy is not None:
        return Classifier(model, legacy, str(path), "its 'class_names' layer")
    if (classes := metadata_classes(path)) is not None:
        return Classifier(model, classes, str(path), f"its {METADATA}")
    return Classifier(model, read_sidecar(path), str(path), str(sidecar_path(path)))


FORMAT = ExportFormat("keras", ".keras", "Keras model file, Keras' own layers only", write, holds, load)

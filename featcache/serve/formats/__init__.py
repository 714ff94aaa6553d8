"""The export formats: a registry of ``ExportFormat`` (built in: keras, savedmodel, tflite; more
from the ``featcache.export_formats`` entry-point group). ``featcache export --format`` picks one to
write; ``featcache predict`` asks each whether it holds a given path."""

from __future__ import annotations

from pathlib import Path

from ...registry import Registry
from . import keras_file, savedmodel, tflite
from .base import ExportFormat, ExportJob, ExportResult, TensorInfo

FORMATS = Registry("export format", "featcache.export_formats", lambda o: isinstance(o, ExportFormat))
for _builtin in (keras_file.FORMAT, savedmodel.FORMAT, tflite.FORMAT):
    FORMATS.register(_builtin, origin="featcache")


def register_format(fmt: ExportFormat, *, replace: bool = False) -> ExportFormat:
    return FORMATS.register(fmt, replace=replace)


def format_holding(path: Path) -> ExportFormat | None:
    """The format of the model at ``path``, or None."""
    return next((f for f in FORMATS if f.holds(path)), None)


__all__ = ["FORMATS", "ExportFormat", "ExportJob", "ExportResult", "TensorInfo", "format_holding", "register_format"]

"""Extraction: the reader (decode + augment) -> runner (backbone) -> writer (store) pipeline.

``pipeline.extract`` plans the store's missing rows into chunk-aligned work units and runs them
in this process; the units are independent, so another executor (threads, processes, a cluster)
can run the same reader/runner/writer over them.
"""

from .options import ExtractOptions
from .pipeline import ConfigRun, ExtractResult, extract
from .reader import SkippedImage
from .runner import BackboneRunner

__all__ = ["BackboneRunner", "ConfigRun", "ExtractOptions", "ExtractResult", "SkippedImage", "extract"]

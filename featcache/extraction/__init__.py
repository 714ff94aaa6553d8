"""Extraction: the reader (decode + augment) -> runner (backbone) -> writer (store) pipeline.

``pipeline.extract`` plans the store's missing rows into chunk-aligned work units (plan.py) and
has an executor compute them (executors.py): this process, a Dask cluster (dask_executor.py), or
shards started separately (shards.py), each running the same reader -> runner -> writer loop
(compute.py).
"""

from .options import ExtractOptions
from .pipeline import extract
from .reader import SkippedImage
from .runner import BackboneRunner
from .runs import ConfigRun, ExtractResult

__all__ = ["BackboneRunner", "ConfigRun", "ExtractOptions", "ExtractResult", "SkippedImage", "extract"]

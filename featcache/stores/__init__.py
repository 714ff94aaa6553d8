"""Feature stores: one schema (see store.py), backends chosen by file suffix (.zarr, .h5/.hdf5)."""

from __future__ import annotations

from pathlib import Path

from ..errors import FeatcacheError
from .backend import Backend
from .hdf5_backend import HDF5Backend
from .store import DONE, FAILED, PENDING, ConfigStatus, FeatureSet, FeatureStore, StoredManifest, WorkUnit
from .zarr_backend import ZarrBackend

_BACKENDS: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Make a Backend subclass the handler of the path suffixes it declares."""
    for suffix in cls.suffixes:
        _BACKENDS[suffix] = cls
    return cls


register_backend(ZarrBackend)
register_backend(HDF5Backend)


def open_store(path: str | Path, mode: str = "r") -> FeatureStore:
    """mode "r": an existing store; mode "a": open or create."""
    path = Path(path).expanduser()
    if mode == "r" and not path.exists():
        raise FeatcacheError(f"store {path} does not exist; create it with `featcache extract DATA_DIR --store {path}`")
    if path.suffix == "" and mode == "a":
        path = path.with_suffix(".zarr")
    backend_cls = _BACKENDS.get(path.suffix.lower())
    if backend_cls is None:
        raise FeatcacheError(f"unknown store type {path.suffix!r} for {path}: use a .zarr or .h5/.hdf5 path")
    try:
        backend = backend_cls(path, mode)
    except (OSError, ValueError) as exc:
        raise FeatcacheError(f"cannot open store {path}: {exc}") from exc
    store = FeatureStore(backend)
    try:
        store._check_schema(creating=mode == "a")
    except FeatcacheError:
        store.close()
        raise
    return store


__all__ = ["DONE", "FAILED", "PENDING", "ConfigStatus", "FeatureSet", "FeatureStore", "StoredManifest",
           "WorkUnit", "open_store", "register_backend"]

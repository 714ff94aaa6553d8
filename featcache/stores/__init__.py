"""Feature stores: one schema (see store.py) over interchangeable backends, chosen by file suffix.

Built in: Zarr v3 (``.zarr``, the default) and HDF5 (``.h5``/``.hdf5``). A package adds a backend
(a :class:`Backend` subclass with a ``name`` and its ``suffixes``) through the ``featcache.stores``
entry-point group.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FeatcacheError, Remedy, Step
from ..paths import names_a_url
from ..registry import Registry
from .backend import Backend
from .errors import StoreDamagedError, StoreLockedError, write_errors
from .hdf5_backend import HDF5Backend
from .lock import ShardLock, StoreLock, admit, lock_path
from .store import (
    DONE,
    FAILED,
    PENDING,
    ConfigGroup,
    ConfigStatus,
    ExtractStats,
    FeatureRows,
    FeatureSet,
    FeatureStore,
    StoredManifest,
    WorkUnit,
)
from .zarr_backend import ZarrBackend

STORES: Registry[type[Backend]] = Registry(
    "store backend", "featcache.stores", lambda o: isinstance(o, type) and issubclass(o, Backend))


def register_backend(cls: type[Backend], *, replace: bool = False) -> type[Backend]:
    """Make a Backend subclass the handler of the path suffixes it declares."""
    return STORES.register(cls, replace=replace)


STORES.register(ZarrBackend, origin="featcache")
STORES.register(HDF5Backend, origin="featcache")
DEFAULT_SUFFIX = ZarrBackend.suffixes[0]


def backend_for(path: Path) -> type[Backend]:
    for cls in STORES:
        if path.suffix.lower() in cls.suffixes:
            return cls
    known = ", ".join(f"{s} ({cls.name})" for cls in STORES for s in cls.suffixes)
    if path.is_dir():  # the commonest slip: the image folder where the store was meant
        raise FeatcacheError(f"{path} is a folder, not a feature store (a store's name ends in one of {known})",
                             remedy=Remedy("make one from the images with {}",
                                           Step.of("extract", data_dir=path, store=f"{path.name}{DEFAULT_SUFFIX}")))
    raise FeatcacheError(f"unknown store type {path.suffix!r} for {path}: use one of {known}")


def check_local(path: str | os.PathLike) -> None:
    """Stores live on a local (or mounted) file system: a URL is refused, not made a folder named
    ``s3:``. Object storage has no rename and no flock, which the store's guarantees rest on."""
    text = os.fspath(path)
    if names_a_url(text):
        raise FeatcacheError(f"{text}: a store must be a local path for now (Zarr stores in object storage are "
                             "not supported yet; HDF5 never will be)",
                             remedy="write the store to a local folder; images may still come from a URL")


def open_store(path: str | Path, mode: str = "r", *, token: str | None = None, shard: str | None = None
               ) -> FeatureStore:
    """mode "r": an existing store, never blocked by a writer. mode "a": open or create (created by
    the first write), holding the store's lock: a second writer gets StoreLockedError naming this
    one. ``token``: a worker of the run that holds the lock (its ``FeatureStore.token``) is admitted
    without taking it; it writes units but neither recovers nor commits. ``shard`` ("I-of-N"): one
    shard of a sharded run on a planned store, beside the other shards (see lock.py); it writes its
    units and its own record, nothing shared."""
    check_local(path)
    path = Path(path).expanduser()
    if mode == "r" and not path.exists():
        raise FeatcacheError(f"store {path} does not exist",
                             remedy=Remedy("create it with {}", Step.of("extract", data_dir="DATA_DIR", store=path)))
    if path.suffix == "" and mode == "a":
        path = path.with_suffix(DEFAULT_SUFFIX)
    backend_cls = backend_for(path)
    lock, refuse, role = None, None, "writer"
    if mode == "a":
        if (token is not None or shard is not None) and not backend_cls.concurrent_writes:
            raise FeatcacheError(f"{path}: a {backend_cls.name} store has a single writer; distributed and "
                                 "sharded runs need a Zarr store (.zarr)")
        if token is not None:
            admit(path, token)
            role = "worker"
        elif shard is not None:
            if not path.exists():
                raise FeatcacheError(f"{path} does not exist: plan it first (with the shards' options)",
                                     remedy=Remedy("run {}", Step.of("extract", data_dir="DATA_DIR", store=path,
                                                                 executor="plan-only")))
            lock, role = ShardLock(path, shard), "shard"
        elif (lock := StoreLock.acquire(path)) is None:
            refuse = (f"{path}: cannot create its lock file {lock_path(path)} (the folder is read-only); featcache "
                      "writes a store only while holding it. Make the folder writable, or extract into another store")
    try:
        try:
            backend = backend_cls(path, mode)
        except (OSError, ValueError) as exc:
            raise FeatcacheError(f"cannot open store {path}: {exc}") from exc
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    store = FeatureStore(backend, lock, refuse, role)
    try:
        store._check_schema(creating=mode == "a" and role == "writer")
        if role == "writer" and lock is not None:  # never under running shards' or workers' feet
            with write_errors(path):
                backend.recover()
    except BaseException:
        store.close()
        raise
    return store


def remove_config(path: str | Path, key: str) -> ConfigStatus | None:
    """Remove feature configuration ``key`` (its exact key) from the store at ``path``, under the
    writer's lock (a running extract refuses it); its status before the removal is returned (None
    when it could not be read). The image list and the other configurations stay as they are."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FeatcacheError(f"store {path} does not exist")
    with open_store(path, mode="a") as st:
        return st.remove_config(key)


__all__ = ["STORES", "Backend", "DONE", "FAILED", "PENDING", "ConfigGroup", "ConfigStatus", "ExtractStats",
           "FeatureRows", "FeatureSet", "FeatureStore",
           "StoreDamagedError", "StoreLockedError", "StoredManifest", "WorkUnit", "open_store", "register_backend",
           "remove_config"]

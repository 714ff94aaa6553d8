"""Read a legacy (pre-zip) PyTorch ``.pth`` state dict into numpy arrays, without torch.

The legacy format is a sequence of pickles: magic number, protocol version, system info,
the state dict itself (tensors refer to storages by persistent id), the list of storage keys,
then each storage's raw bytes preceded by an 8-byte little-endian element count.

Only the tensor-rebuild function, storage types and OrderedDict are accepted as pickle globals:
anything else is refused, so a hostile file cannot run code. Nor can it make the reader allocate
more than about twice its own size: a storage may not declare more bytes than the file has left,
a tensor may not have more elements than its storage holds (real state dicts never hold stride-0
or overlapping views), and all distinct tensors together may not take more bytes than the file.
"""

from __future__ import annotations

import collections
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FeatcacheError

_MAGIC = 0x1950A86A20F9469CFC6C
_HOSTILE = "the file is corrupt or hostile"
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: type


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: type


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class _PlainUnpickler(pickle.Unpickler):
    """For the header pickles (magic number, protocol, system info): plain data, no globals at all."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing pickle global {module}.{name} in the file header")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"unexpected persistent id {pid!r} in the file header")


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"refusing pickle global {module}.{name}: not part of a plain state dict")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return _StorageRef(str(pid[2]), pid[1].dtype)


def _check_tensor(path: Path, name: str, t: _TensorRef) -> None:
    """A tensor record made of what a saved tensor holds: a storage, whole numbers for its offset,
    size and stride (a list inside the size, say, is refused here, before anything hashes it)."""
    if not isinstance(t.storage, _StorageRef):
        raise FeatcacheError(f"{path}: tensor {name} refers to no storage: {_HOSTILE}")
    if any(type(n) is not int or n < 0 for n in t.size) or any(type(s) is not int or s < 0 for s in t.stride):
        raise FeatcacheError(f"{path}: tensor {name} has an invalid size {t.size!r:.100} or stride "
                             f"{t.stride!r:.100}: {_HOSTILE}")
    if len(t.size) != len(t.stride):
        raise FeatcacheError(f"{path}: tensor {name} has size {t.size} but stride {t.stride}")


def _view(path: Path, name: str, t: _TensorRef, flat: np.ndarray, budget: int) -> np.ndarray:
    """A copy of the tensor's strided view of its storage (``_check_tensor``-ed), refusing any view
    that reaches outside the storage, repeats its elements (stride 0, overlaps), or would take more
    than ``budget`` bytes."""
    where = f"tensor {name} (size {t.size}, stride {t.stride}, offset {t.offset})"
    numel = math.prod(t.size)
    if numel:
        last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride, strict=True))
        if t.offset < 0 or last >= flat.size:
            raise FeatcacheError(f"{path}: {where} reaches beyond its storage {t.storage.key} of {flat.size} "
                                 f"elements: {_HOSTILE}")
        if numel > flat.size - t.offset:
            raise FeatcacheError(f"{path}: {where} has {numel} elements but its storage {t.storage.key} holds "
                                 f"{flat.size}: it repeats elements (stride 0 or overlapping), as no saved "
                                 f"weights do: {_HOSTILE}")
        if numel * flat.itemsize > budget:
            raise FeatcacheError(f"{path}: {where} would bring the tensors to more bytes than the file holds "
                                 f"(views sharing storages over and over): {_HOSTILE}")
    try:
        if not numel:
            return np.zeros(t.size, flat.dtype)
        arr = np.lib.stride_tricks.as_strided(
            flat[t.offset:], shape=t.size, strides=tuple(s * flat.itemsize for s in t.stride)
        )
        return np.array(arr, order="C")  # own the memory, drop the strided view
    except ValueError as exc:  # numpy's own limits: more than 64 dimensions, a dimension over 2**63
        raise FeatcacheError(f"{path}: {where} has an impossible shape ({exc}): {_HOSTILE}") from exc


def load_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return ``{name: array}`` for a legacy-format PyTorch state dict file."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(4)
            if head.startswith(b"PK"):
                raise FeatcacheError(
                    f"{path}: this is a zip-format PyTorch file (torch >= 1.6), not the legacy format "
                    "featcache reads without torch; re-save it with "
                    "torch.save(state_dict, path, _use_new_zipfile_serialization=False)")
            f.seek(0)
            if _PlainUnpickler(f).load() != _MAGIC:
                raise FeatcacheError(f"{path}: not a legacy PyTorch file (bad magic number)")
            _PlainUnpickler(f).load()  # protocol version
            sys_info = _PlainUnpickler(f).load()
            if not sys_info.get("little_endian", True):
                raise FeatcacheError(f"{path}: big-endian PyTorch files are not supported")
            state = _SafeUnpickler(f).load()
            if not isinstance(state, dict):
                raise FeatcacheError(f"{path}: holds a {type(state).__name__}, not a state dict")
            keys = _SafeUnpickler(f).load()
            storages: dict[str, np.ndarray] = {}
            dtypes = {t.storage.key: t.storage.dtype for t in state.values()
                      if isinstance(t, _TensorRef) and isinstance(t.storage, _StorageRef)}
            file_size = os.fstat(f.fileno()).st_size
            for key in keys:
                header = f.read(8)
                if len(header) != 8:
                    raise FeatcacheError(f"{path}: file is truncated (storage {key} is missing)")
                count = int(np.frombuffer(header, "<i8")[0])
                dtype = np.dtype(dtypes.get(key, np.float32))
                left = file_size - f.tell()
                if not 0 <= count * dtype.itemsize <= left:  # checked before reading: never allocate it
                    raise FeatcacheError(f"{path}: storage {key} declares {count} elements of {dtype.itemsize} "
                                         f"bytes but the file has {left} bytes left: {_HOSTILE} "
                                         "(or truncated)")
                storages[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype.newbyteorder("<"))
    except EOFError as exc:
        raise FeatcacheError(f"{path}: file is truncated ({exc or 'ran out of input'})") from exc
    except (MemoryError, OverflowError) as exc:  # a pickle declaring a gigantic bytes or str object
        raise FeatcacheError(f"{path}: declares an object larger than memory ({type(exc).__name__}): "
                             f"{_HOSTILE}") from exc
    except (pickle.UnpicklingError, ValueError, AttributeError, TypeError, IndexError) as exc:
        kind = "file is truncated" if "truncated" in str(exc) else "cannot read as a legacy PyTorch state dict"
        raise FeatcacheError(f"{path}: {kind} ({exc})") from exc

    out = {}
    views: dict[tuple, np.ndarray] = {}  # tied weights (one view under two names) share one array, as in torch
    budget = file_size  # all distinct tensors together: no more bytes than the file
    for name, t in state.items():
        if not isinstance(t, _TensorRef):
            continue
        _check_tensor(path, name, t)
        if t.storage.key not in storages:
            raise FeatcacheError(f"{path}: tensor {name} refers to storage {t.storage.key}, which the file lacks")
        ref = (t.storage.key, t.offset, t.size, t.stride)
        if ref not in views:
            views[ref] = _view(path, name, t, storages[t.storage.key], budget)
            budget -= views[ref].nbytes
        out[name] = views[ref]
    return out

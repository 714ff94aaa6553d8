"""Read a legacy (pre-zip) PyTorch ``.pth`` state dict into numpy arrays, without torch.

The legacy format is a sequence of pickles: magic number, protocol version, system info,
the state dict itself (tensors refer to storages by persistent id), the list of storage keys,
then each storage's raw bytes preceded by an 8-byte little-endian element count.

Only the tensor-rebuild function, storage types and OrderedDict are accepted as pickle globals:
anything else is refused, so a hostile file cannot run code.
"""

from __future__ import annotations

import collections
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FeatcacheError

_MAGIC = 0x1950A86A20F9469CFC6C
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


def _view(path: Path, name: str, t: _TensorRef, flat: np.ndarray) -> np.ndarray:
    """The tensor's strided view of its storage, refusing any view that reaches outside it."""
    if any(not isinstance(n, int) or n < 0 for n in t.size) or any(not isinstance(s, int) or s < 0
                                                                    for s in t.stride):
        raise FeatcacheError(f"{path}: tensor {name} has an invalid size {t.size} or stride {t.stride}")
    if len(t.size) != len(t.stride):
        raise FeatcacheError(f"{path}: tensor {name} has size {t.size} but stride {t.stride}")
    if 0 in t.size:
        return np.zeros(t.size, flat.dtype)
    last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride, strict=True))
    if t.offset < 0 or last >= flat.size:
        raise FeatcacheError(f"{path}: tensor {name} (size {t.size}, stride {t.stride}, offset {t.offset}) "
                             f"reaches beyond its storage of {flat.size} elements: the file is corrupt")
    itemsize = flat.dtype.itemsize
    arr = np.lib.stride_tricks.as_strided(
        flat[t.offset:], shape=t.size, strides=tuple(s * itemsize for s in t.stride)
    )
    return np.array(arr, order="C")  # own the memory, drop the strided view


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
            dtypes = {t.storage.key: t.storage.dtype for t in state.values() if isinstance(t, _TensorRef)}
            for key in keys:
                header = f.read(8)
                if len(header) != 8:
                    raise FeatcacheError(f"{path}: file is truncated (storage {key} is missing)")
                count = int(np.frombuffer(header, "<i8")[0])
                dtype = np.dtype(dtypes.get(key, np.float32))
                raw = f.read(count * dtype.itemsize) if count >= 0 else b""
                if count < 0 or len(raw) != count * dtype.itemsize:
                    raise FeatcacheError(f"{path}: file is truncated (storage {key})")
                storages[key] = np.frombuffer(raw, dtype.newbyteorder("<"))
    except EOFError as exc:
        raise FeatcacheError(f"{path}: file is truncated ({exc or 'ran out of input'})") from exc
    except (pickle.UnpicklingError, ValueError, AttributeError, TypeError, IndexError) as exc:
        kind = "file is truncated" if "truncated" in str(exc) else "cannot read as a legacy PyTorch state dict"
        raise FeatcacheError(f"{path}: {kind} ({exc})") from exc

    out = {}
    for name, t in state.items():
        if not isinstance(t, _TensorRef):
            continue
        if t.storage.key not in storages:
            raise FeatcacheError(f"{path}: tensor {name} refers to storage {t.storage.key}, which the file lacks")
        out[name] = _view(path, name, t, storages[t.storage.key])
    return out

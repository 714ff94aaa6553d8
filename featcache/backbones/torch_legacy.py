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
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return _StorageRef(str(pid[2]), pid[1].dtype)


def load_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return ``{name: array}`` for a legacy-format PyTorch state dict file."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            if pickle.load(f) != _MAGIC:  # plain ints/dicts only: the safe unpickler guards the rest
                raise FeatcacheError(f"{path}: not a legacy PyTorch file (bad magic number)")
            pickle.load(f)  # protocol version
            sys_info = pickle.load(f)
            if not sys_info.get("little_endian", True):
                raise FeatcacheError(f"{path}: big-endian PyTorch files are not supported")
            state = _SafeUnpickler(f).load()
            keys = _SafeUnpickler(f).load()
            storages: dict[str, np.ndarray] = {}
            dtypes = {t.storage.key: t.storage.dtype for t in state.values() if isinstance(t, _TensorRef)}
            for key in keys:
                count = int(np.frombuffer(f.read(8), "<i8")[0])
                dtype = np.dtype(dtypes.get(key, np.float32))
                raw = f.read(count * dtype.itemsize)
                if len(raw) != count * dtype.itemsize:
                    raise FeatcacheError(f"{path}: file is truncated (storage {key})")
                storages[key] = np.frombuffer(raw, dtype.newbyteorder("<"))
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError) as exc:
        raise FeatcacheError(f"{path}: cannot read as a legacy PyTorch state dict ({exc})") from exc

    out = {}
    for name, t in state.items():
        if not isinstance(t, _TensorRef):
            continue
        flat = storages[t.storage.key]
        itemsize = flat.dtype.itemsize
        arr = np.lib.stride_tricks.as_strided(
            flat[t.offset:], shape=t.size, strides=tuple(s * itemsize for s in t.stride)
        )
        out[name] = np.array(arr)  # own the memory, drop the strided view
    return out

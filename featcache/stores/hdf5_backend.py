"""HDF5 file store (single writer). Attributes are kept as JSON strings so both backends agree."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from .backend import Backend


class HDF5Backend(Backend):
    name = "hdf5"
    suffixes = (".h5", ".hdf5")

    def __init__(self, path: Path, mode: str):
        super().__init__(path, mode)
        self.file = h5py.File(path, "r" if mode == "r" else "a")

    def _node(self, name: str):
        return self.file[name] if name else self.file

    def get_attrs(self, name: str = "") -> dict:
        return {k: json.loads(v) for k, v in self._node(name).attrs.items()}

    def set_attrs(self, name, attrs) -> None:
        node = self._node(name) if not name or name in self.file else self.file.require_group(name)
        for k, v in attrs.items():
            node.attrs[k] = json.dumps(v)

    def create_array(self, name, shape, chunks, dtype, fill_value) -> None:
        if name in self.file:
            del self.file[name]
        maxshape = (None,) + tuple(shape[1:])
        self.file.create_dataset(name, shape=shape, chunks=chunks, dtype=dtype, fillvalue=fill_value,
                                 maxshape=maxshape)

    def write_strings(self, name, values, start=None) -> None:
        if start is None:
            if name in self.file:
                del self.file[name]
            self.file.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(4096,),
                                     dtype=h5py.string_dtype())
            start = 0
        ds = self.file[name]
        ds.resize((start + len(values),))
        if values:
            ds[start:start + len(values)] = np.asarray(values, dtype=object)

    def read(self, name, sel=slice(None)) -> np.ndarray:
        return np.asarray(self.file[name][sel])

    def read_strings(self, name) -> list[str]:
        return list(self.file[name].asstr()[:])

    def write(self, name, sel, data) -> None:
        self.file[name][sel] = data

    def resize(self, name, shape) -> None:
        self.file[name].resize(shape)

    def shape(self, name) -> tuple:
        return tuple(self.file[name].shape)

    def groups(self, name) -> list[str]:
        node = self.file.get(name)
        return sorted(k for k, v in node.items() if isinstance(v, h5py.Group)) if node is not None else []

    def exists(self, name) -> bool:
        return name in self.file

    def is_empty(self) -> bool:
        return len(self.file.keys()) == 0

    def delete(self, name) -> None:
        del self.file[name]

    def nbytes_on_disk(self, name) -> int:
        total = 0

        def visit(_, obj):
            nonlocal total
            if isinstance(obj, h5py.Dataset):
                total += obj.id.get_storage_size()

        self.file[name].visititems(visit)
        return total

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()

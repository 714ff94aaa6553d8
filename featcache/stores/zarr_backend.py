"""Zarr v3 directory store. Arrays are pre-sized and written in chunk-aligned regions."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import zarr

from .backend import Backend


class ZarrBackend(Backend):
    name = "zarr"
    suffixes = (".zarr",)

    def __init__(self, path: Path, mode: str):
        super().__init__(path, mode)
        if mode != "r" and path.is_dir() and not (path / "zarr.json").exists() and any(path.iterdir()):
            # zarr would write its zarr.json into any folder (or beside a Zarr v2 store's .zgroup)
            raise ValueError("the folder exists and is not a Zarr v3 store")
        self.root = zarr.open_group(str(path), mode="r" if mode == "r" else "a", zarr_format=3)

    def _node(self, name: str):
        return self.root[name] if name else self.root

    def get_attrs(self, name: str = "") -> dict:
        return dict(self._node(name).attrs)

    def set_attrs(self, name: str, attrs: dict) -> None:
        node = self._node(name) if not name or name in self.root else self.root.require_group(name)
        node.attrs.update(attrs)

    def _parent(self, name: str):
        parent, _, leaf = name.rpartition("/")
        group = self.root.require_group(parent) if parent else self.root
        if leaf in group:
            del group[leaf]
        return group, leaf

    def create_array(self, name, shape, chunks, dtype, fill_value) -> None:
        group, leaf = self._parent(name)
        group.create_array(leaf, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill_value)

    def write_strings(self, name, values, start=None) -> None:
        if start is None:
            group, leaf = self._parent(name)
            arr = group.create_array(leaf, shape=(len(values),), chunks=(4096,), dtype=str)
            start = 0
        else:
            arr = self.root[name]
            arr.resize((start + len(values),))
        if values:
            arr[start:start + len(values)] = np.asarray(values, dtype=object).astype(str)

    def read(self, name, sel=slice(None)) -> np.ndarray:
        return np.asarray(self.root[name][sel])

    def read_strings(self, name) -> list[str]:
        arr = self.root[name]
        return [str(v) for v in arr[:]] if arr.shape[0] else []

    def write(self, name, sel, data) -> None:
        self.root[name][sel] = data

    def resize(self, name, shape) -> None:
        self.root[name].resize(shape)

    def shape(self, name) -> tuple:
        return tuple(self.root[name].shape)

    def groups(self, name) -> list[str]:
        return sorted(self.root[name].group_keys()) if name in self.root else []

    def exists(self, name) -> bool:
        return name in self.root

    def is_empty(self) -> bool:
        return not any(True for _ in self.root.keys())

    def delete(self, name) -> None:
        parent, _, leaf = name.rpartition("/")
        del (self.root[parent] if parent else self.root)[leaf]

    def nbytes_on_disk(self, name) -> int:
        total = 0
        for dirpath, _, files in os.walk(self.path / name):
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
        return total

"""Zarr v3 directory store. Arrays are pre-sized and written in chunk-aligned regions.

Every file is written atomically (:mod:`.fsio`), and every chunk carries a CRC-32C (zarr's
``crc32c`` codec), so a chunk damaged on disk fails to read instead of decoding to other numbers.
A chunk file that is missing reads as the fill value: the store's row checksums catch that.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from ..errors import describe_error
from .backend import ArrayInfo, Backend
from .fsio import AtomicLocalStore, only_partials, remove_partials, remove_tree


def _codecs():
    return [ZstdCodec(), Crc32cCodec()]


class ZarrBackend(Backend):
    name = "zarr"
    suffixes = (".zarr",)
    concurrent_writes = True  # one file per chunk, each written atomically

    def __init__(self, path: Path, mode: str):
        super().__init__(path, mode)
        self.root = None  # None: nothing on disk yet (created by the first write)
        self._arrays: dict = {}  # opened arrays: each open reads its metadata (a round trip to zarr's thread)
        if path.is_file():
            raise ValueError("it is a file, not a Zarr v3 store folder")
        if (path / "zarr.json").is_file():
            store = AtomicLocalStore(path, read_only=mode == "r")
            try:
                self.root = zarr.open_group(store, mode="r" if mode == "r" else "r+", zarr_format=3)
            except Exception as exc:  # noqa: BLE001  (zarr raises whatever parsing the file raised)
                raise ValueError(f"its root metadata {path / 'zarr.json'} is damaged ({describe_error(exc)}); "
                                 "restore it from a copy, or extract into a new store") from None
        elif path.is_dir() and not only_partials(path):
            # zarr would write its zarr.json into any folder (or beside a Zarr v2 store's .zgroup)
            raise ValueError("the folder exists and is not a Zarr v3 store")
        elif mode == "r":
            raise ValueError("no store was written there yet (an extract was interrupted before its first "
                             "write); run the extract again")

    def _writable(self, attrs: dict | None = None):
        if self.root is None:
            if self.path.is_dir():
                remove_partials(self.path)
            # the root metadata is one file: a store exists, with its attributes, or it does not
            self.root = zarr.open_group(AtomicLocalStore(self.path), mode="w-", zarr_format=3, attributes=attrs or {})
        return self.root

    def _node(self, name: str):
        return self.root[name] if name else self.root

    def _array(self, name: str):
        if name not in self._arrays:
            self._arrays[name] = self.root[name]
        return self._arrays[name]

    def get_attrs(self, name: str = "") -> dict:
        if self.root is None:
            return {}
        return dict(self._node(name).attrs)

    def set_attrs(self, name: str, attrs: dict) -> None:
        if self.root is None and not name:
            self._writable(attrs)
            return
        root = self._writable()
        node = self._node(name) if not name or name in root else root.require_group(name)
        node.update_attributes(attrs)  # one write of the node's metadata (attrs.update writes per key)

    def _parent(self, name: str):
        parent, _, leaf = name.rpartition("/")
        root = self._writable()
        group = root.require_group(parent) if parent else root
        if leaf in group:
            self.delete(name)
        return group, leaf

    def create_array(self, name, shape, chunks, dtype, fill_value) -> None:
        group, leaf = self._parent(name)
        self._arrays[name] = group.create_array(leaf, shape=shape, chunks=chunks, dtype=dtype,
                                                fill_value=fill_value, compressors=_codecs())

    def write_strings(self, name, values, start=None) -> None:
        if start is None:
            group, leaf = self._parent(name)
            arr = self._arrays[name] = group.create_array(leaf, shape=(len(values),), chunks=(4096,), dtype=str,
                                                          compressors=_codecs())
            start = 0
        else:
            self._writable()
            arr = self._array(name)
            arr.resize((start + len(values),))
        if values:
            arr[start:start + len(values)] = np.asarray(values, dtype=object).astype(str)

    def read(self, name, sel=slice(None)) -> np.ndarray:
        return np.asarray(self._array(name)[sel])

    def read_strings(self, name) -> list[str]:
        arr = self._array(name)
        return [str(v) for v in arr[:]] if arr.shape[0] else []

    def write(self, name, sel, data) -> None:
        self._writable()
        self._array(name)[sel] = data

    def resize(self, name, shape) -> None:
        self._writable()
        self._array(name).resize(shape)

    def shape(self, name) -> tuple:
        return tuple(self._array(name).shape)

    def array_info(self, name) -> ArrayInfo:
        arr = self._array(name)
        dtype = "str" if arr.dtype.kind in "OUT" else np.dtype(arr.dtype).name
        return ArrayInfo(tuple(arr.shape), tuple(arr.chunks), dtype)

    def _members(self, name: str, kind: str) -> list[str]:
        if self.root is None or (name and name not in self.root):
            return []
        node = self._node(name)
        with warnings.catch_warnings():  # a killed writer's *.partial files: not members, not news
            warnings.simplefilter("ignore")
            return sorted(node.group_keys() if kind == "groups" else node.array_keys())

    def groups(self, name) -> list[str]:
        return self._members(name, "groups")

    def arrays(self, name) -> list[str]:
        return self._members(name, "arrays")

    def exists(self, name) -> bool:
        if self.root is None:
            return False
        try:
            return name in self.root
        except Exception:  # noqa: BLE001  (damaged metadata: something is there, and delete() removes it)
            return (self.path / name).exists()

    def is_empty(self) -> bool:
        return not (self.groups("") or self.arrays(""))

    def delete(self, name) -> None:
        self._writable()
        self._arrays = {k: v for k, v in self._arrays.items() if k != name and not k.startswith(name + "/")}
        remove_tree(self.path / name)  # renamed away first: never seen half-deleted under its name

    def nbytes_on_disk(self, name) -> int:
        total = 0
        for dirpath, _, files in os.walk(self.path / name):
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
        return total

    def recover(self) -> None:
        if self.path.is_dir():
            remove_partials(self.path)

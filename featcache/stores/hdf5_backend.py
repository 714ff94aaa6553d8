"""HDF5 file store. Attributes are kept as JSON strings so both backends agree.

An HDF5 file is never modified in place: its metadata is not crash-safe, and a process killed while
writing one can leave it unreadable. A writer reads the file until its first write; from then on
the store lives in a Zarr journal beside it (``<file>.journal``, see :mod:`.journal`), and
:meth:`HDF5Backend.commit` writes a new file from the journal and renames it over the old one.
Readers always see the last committed file.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import h5py
import numpy as np

from .backend import ArrayInfo, Backend
from .journal import Journal


class H5File(Backend):
    """One HDF5 file as it is on disk: mode "r" reads it, mode "w" writes a new one (a commit).
    ``path`` None: no file yet, an empty store."""

    name = "hdf5-file"

    def __init__(self, path: Path | None, mode: str):
        super().__init__(path, mode)
        # a new file is written in 64 KiB pages through a page buffer: a few large writes instead of
        # one per metadata object (faster, and fewer points for the crash tests to kill)
        paged = {"fs_strategy": "page", "fs_page_size": 1 << 16, "page_buf_size": 16 << 20} if mode == "w" else {}
        self.file = h5py.File(path, mode, **paged) if path is not None else None

    def _node(self, name: str):
        return self.file[name] if name else self.file

    def get_attrs(self, name: str = "") -> dict:
        if self.file is None:
            return {}
        return {k: json.loads(v) for k, v in self._node(name).attrs.items()}

    def set_attrs(self, name, attrs) -> None:
        node = self._node(name) if not name or name in self.file else self.file.require_group(name)
        for k, v in attrs.items():
            node.attrs[k] = json.dumps(v)

    def create_array(self, name, shape, chunks, dtype, fill_value) -> None:
        if name in self.file:
            del self.file[name]
        maxshape = (None,) + tuple(shape[1:])
        # no fletcher32: it makes writing raw data ~10x slower, and the store's own checksums
        # (checksum.py) already cover every array
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

    def array_info(self, name) -> ArrayInfo:
        ds = self.file[name]
        dtype = "str" if h5py.check_string_dtype(ds.dtype) else ds.dtype.name
        return ArrayInfo(tuple(ds.shape), tuple(ds.chunks or ds.shape), dtype)

    def _members(self, name: str, kind) -> list[str]:
        node = self.file.get(name or "/") if self.file is not None else None
        return sorted(k for k, v in node.items() if isinstance(v, kind)) if node is not None else []

    def groups(self, name) -> list[str]:
        return self._members(name, h5py.Group)

    def arrays(self, name) -> list[str]:
        return self._members(name, h5py.Dataset)

    def exists(self, name) -> bool:
        return self.file is not None and name in self.file

    def is_empty(self) -> bool:
        return self.file is None or len(self.file.keys()) == 0

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
        if self.file is not None:
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class HDF5Backend(Backend):
    name = "hdf5"
    suffixes = (".h5", ".hdf5")

    def __init__(self, path: Path, mode: str):
        super().__init__(path, mode)
        self.file = H5File(path if path.exists() else None, "r")
        self.journal = Journal(path) if mode != "r" else None
        self.store: Backend = self.file  # what reads see: the file, or the journal once writing started
        if self.journal is not None and self.journal.resumable():
            self.store = self.journal.open()

    def _writing(self) -> Backend:
        if self.store is self.file:
            if self.path.exists() and not os.access(self.path, os.W_OK):
                # the commit would replace it (its folder allows that): respect the file's own mode
                raise PermissionError(errno.EACCES, "the file is read-only", str(self.path))
            self.store = self.journal.start(self.file)
        return self.store

    # reads: from the file, or from the journal once this writer started one
    def get_attrs(self, name: str = "") -> dict:
        return self.store.get_attrs(name)

    def read(self, name, sel=slice(None)) -> np.ndarray:
        return self.store.read(name, sel)

    def read_strings(self, name) -> list[str]:
        return self.store.read_strings(name)

    def shape(self, name) -> tuple:
        return self.store.shape(name)

    def array_info(self, name) -> ArrayInfo:
        return self.store.array_info(name)

    def groups(self, name) -> list[str]:
        return self.store.groups(name)

    def arrays(self, name) -> list[str]:
        return self.store.arrays(name)

    def exists(self, name) -> bool:
        return self.store.exists(name)

    def is_empty(self) -> bool:
        return self.store.is_empty()

    def nbytes_on_disk(self, name) -> int:
        return self.store.nbytes_on_disk(name)

    # writes: into the journal
    def set_attrs(self, name, attrs) -> None:
        self._writing().set_attrs(name, attrs)

    def create_array(self, name, shape, chunks, dtype, fill_value) -> None:
        self._writing().create_array(name, shape, chunks, dtype, fill_value)

    def write_strings(self, name, values, start=None) -> None:
        self._writing().write_strings(name, values, start)

    def write(self, name, sel, data) -> None:
        self._writing().write(name, sel, data)

    def resize(self, name, shape) -> None:
        self._writing().resize(name, shape)

    def delete(self, name) -> None:
        self._writing().delete(name)

    def journal_pending(self) -> bool:
        """An interrupted run's uncommitted work waits beside the file."""
        return Journal(self.path).path.exists()

    def recover(self) -> None:
        self.journal.recover()

    def commit(self) -> None:
        if self.store is self.file and self.journal.resumable():  # started by a worker of this run
            self.store = self.journal.open()
        if self.store is not self.file:
            self.journal.commit(self.store, lambda tmp: H5File(tmp, "w"))
            self.file.close()
            self.file = self.store = H5File(self.path, "r")

    def close(self) -> None:
        self.file.close()
        if self.store is not self.file:
            self.store.close()

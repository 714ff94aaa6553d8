"""The few storage primitives the feature-store schema needs; Zarr and HDF5 each implement them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ArrayInfo:
    shape: tuple
    chunks: tuple
    dtype: str  # a numpy dtype name, or "str" for a string array


class Backend(ABC):
    """Hierarchical arrays + JSON attributes. Names are '/'-separated paths from the root.

    A backend opened with mode "a" creates nothing on disk before its first write, so a run that
    fails before writing (a missing data folder) leaves no empty store behind.
    """

    name: str = ""
    suffixes: tuple[str, ...] = ()
    # True: processes may write disjoint chunk-aligned row ranges at once (distributed runs, shards)
    concurrent_writes: bool = False

    def __init__(self, path: Path, mode: str):
        self.path = path
        self.mode = mode

    @abstractmethod
    def get_attrs(self, name: str = "") -> dict: ...

    @abstractmethod
    def set_attrs(self, name: str, attrs: dict) -> None:
        """Merge attrs into the group/array's attributes (values are JSON-serialisable)."""

    @abstractmethod
    def create_array(self, name: str, shape: tuple, chunks: tuple, dtype, fill_value) -> None:
        """Create (replacing any existing) a pre-sized chunked array filled with fill_value."""

    @abstractmethod
    def write_strings(self, name: str, values: list[str], start: int | None = None) -> None:
        """start None: create (replacing any existing) a resizable 1-D string array holding values.
        start given: grow the existing array to start + len(values) and write values there only."""

    @abstractmethod
    def read(self, name: str, sel=slice(None)) -> np.ndarray: ...

    @abstractmethod
    def read_strings(self, name: str) -> list[str]: ...

    @abstractmethod
    def write(self, name: str, sel, data: np.ndarray) -> None: ...

    @abstractmethod
    def resize(self, name: str, shape: tuple) -> None: ...

    @abstractmethod
    def shape(self, name: str) -> tuple: ...

    @abstractmethod
    def array_info(self, name: str) -> ArrayInfo: ...

    @abstractmethod
    def groups(self, name: str) -> list[str]: ...

    @abstractmethod
    def arrays(self, name: str) -> list[str]:
        """The arrays directly inside group ``name``."""

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def is_empty(self) -> bool:
        """True when the root holds no member at all (neither group nor array)."""

    @abstractmethod
    def delete(self, name: str) -> None: ...

    @abstractmethod
    def nbytes_on_disk(self, name: str) -> int: ...

    def recover(self) -> None:  # noqa: B027  (nothing to do for a backend without leftovers)
        """Called by the store's lock holder on opening for writing: remove what a killed writer
        left behind (temporary files) so that the store reads exactly as its last complete write."""

    def flush(self) -> None:  # noqa: B027  (a no-op unless the backend buffers)
        """Make everything written so far durable (a kill -9 after this loses nothing)."""

    def commit(self) -> None:
        """End of a writing session by the lock holder: publish everything written (a no-op for a
        backend whose writes are visible as they happen)."""
        self.flush()

    def close(self) -> None:  # noqa: B027
        pass


def copy_tree(src: Backend, dst: Backend, name: str = "") -> None:
    """Copy group ``name`` (attributes, arrays, sub-groups) from one backend into another, chunk by
    chunk. A chunk that cannot be read is left at the fill value: the checksums report its rows."""
    dst.set_attrs(name, src.get_attrs(name))
    for leaf in src.arrays(name):
        _copy_array(src, dst, f"{name}/{leaf}" if name else leaf)
    for leaf in src.groups(name):
        copy_tree(src, dst, f"{name}/{leaf}" if name else leaf)


def _copy_array(src: Backend, dst: Backend, name: str) -> None:
    info = src.array_info(name)
    if info.dtype == "str":
        try:
            values = src.read_strings(name)
        except Exception:  # noqa: BLE001  (unreadable: empty strings, i.e. rows of no image)
            values = [""] * info.shape[0]
        dst.write_strings(name, values)
        return
    dst.create_array(name, info.shape, info.chunks, info.dtype, 0)
    chunk = info.chunks[0]
    row_bytes = int(np.prod(info.shape[1:], dtype=np.int64)) * np.dtype(info.dtype).itemsize
    block = chunk * max(1, (64 << 20) // max(1, chunk * row_bytes))  # whole chunks, about 64 MB at a time
    for start in range(0, info.shape[0], block):
        _copy_rows(src, dst, name, start, min(start + block, info.shape[0]), chunk)


def _copy_rows(src: Backend, dst: Backend, name: str, start: int, stop: int, chunk: int) -> None:
    try:
        data = src.read(name, slice(start, stop))
    except Exception:  # noqa: BLE001  (a damaged chunk in the block: copy chunk by chunk, skipping it)
        if stop - start > chunk:
            for s in range(start, stop, chunk):
                _copy_rows(src, dst, name, s, min(s + chunk, stop), chunk)
        return  # a damaged chunk: left as fill, its rows fail their checksums
    dst.write(name, slice(start, stop), data)

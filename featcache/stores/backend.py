"""The few storage primitives the feature-store schema needs; Zarr and HDF5 each implement them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


class Backend(ABC):
    """Hierarchical arrays + JSON attributes. Names are '/'-separated paths from the root."""

    name: str = ""
    suffixes: tuple[str, ...] = ()

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
    def groups(self, name: str) -> list[str]: ...

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def is_empty(self) -> bool:
        """True when the root holds no member at all (neither group nor array)."""

    @abstractmethod
    def delete(self, name: str) -> None: ...

    @abstractmethod
    def nbytes_on_disk(self, name: str) -> int: ...

    def flush(self) -> None:  # noqa: B027  (a no-op unless the backend buffers)
        """Make everything written so far durable (a kill -9 after this loses nothing)."""

    def close(self) -> None:  # noqa: B027
        pass

"""The journal of an HDF5 store: a Zarr working copy beside the file while a run writes.

    features.h5                  the committed store: what readers see, never modified in place
    features.h5.journal/         the run's working copy (Zarr, every write atomic)
        featcache-journal.json   {"base": identity of the file it was copied from, "committed": ...}

A run's first write copies the file into ``<journal>.tmp`` and renames that to the journal; its
writes go there; its commit writes a whole new HDF5 file from the journal under a temporary name,
fsyncs it, renames it over the old file, and removes the journal. A kill at any point leaves the
old file intact plus, at most, a journal that the next run resumes (or, once the rename happened,
removes). The cost: a full copy of the store into the journal and a full rewrite of the file per
run that writes anything (a run with nothing to do writes nothing).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from ..errors import FeatcacheError
from .backend import Backend, copy_tree
from .errors import quiet_cleanup_errors
from .fsio import PARTIAL, fsync_path, partial_name, put_small, remove_trash, remove_tree, rename
from .zarr_backend import ZarrBackend

META = "featcache-journal.json"


def identity(path: Path) -> list[int] | None:
    """Which file is at ``path`` (a rename keeps it; a rewrite changes it), or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


class Journal:
    def __init__(self, h5path: Path):
        self.h5path = h5path
        self.path = h5path.with_name(h5path.name + ".journal")
        self.tmp = h5path.with_name(h5path.name + ".journal.tmp")

    def _meta(self) -> dict | None:
        try:
            return json.loads((self.path / META).read_text())
        except (OSError, ValueError):
            return None

    def _state(self) -> str:
        """none | resume (this run goes on from it) | committed (its commit finished) | foreign."""
        if not self.path.exists():
            return "none"
        meta, now = self._meta(), identity(self.h5path)
        if meta is not None and meta.get("committed") is not None and meta["committed"] == now:
            return "committed"
        if meta is not None and meta.get("base") == now:
            return "resume"
        return "foreign"

    def resumable(self) -> bool:
        state = self._state()
        if state == "foreign":
            raise FeatcacheError(
                f"{self.path} holds the work of an interrupted run on another version of {self.h5path} (the file "
                f"was replaced or removed since). Delete {self.path} to discard that work, then run again")
        return state == "resume"

    def open(self) -> ZarrBackend:
        return ZarrBackend(self.path, "a")

    def start(self, committed: Backend) -> ZarrBackend:
        """A new journal holding a copy of the committed store."""
        remove_tree(self.tmp)
        copy_tree(committed, ZarrBackend(self.tmp, "a"))
        put_small(self.tmp / META, json.dumps({"base": identity(self.h5path), "committed": None}).encode())
        try:
            rename(self.tmp, self.path)
        except OSError:  # a worker of the same run started it first: use that one
            remove_tree(self.tmp)
            if not self.path.exists():
                raise
        return self.open()

    def commit(self, journal: Backend, new_file: Callable[[Path], Backend]) -> None:
        """Write a new HDF5 file from the journal and put it in place of the old one."""
        out = partial_name(self.h5path)
        try:
            with quiet_cleanup_errors():
                dst = new_file(out)
                try:
                    copy_tree(journal, dst)
                finally:
                    dst.close()
            if self.h5path.exists():
                shutil.copymode(self.h5path, out)  # the new file keeps the old one's permissions
            fsync_path(out)
            meta = self._meta() or {}
            put_small(self.path / META, json.dumps({**meta, "committed": identity(out)}).encode())
            rename(out, self.h5path)
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        fsync_path(self.h5path.parent)
        remove_tree(self.path)

    def recover(self) -> None:
        """Remove what a killed run left: a half-written file, a half-made or committed journal."""
        for leftover in self.h5path.parent.glob(f"{self.h5path.name}.*{PARTIAL}"):
            leftover.unlink()
        remove_tree(self.tmp)
        remove_trash(self.path)
        state = self._state()
        if state == "committed":
            remove_tree(self.path)
        elif state == "resume":
            self.open().recover()

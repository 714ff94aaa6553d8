"""File-system steps a store takes, each one crash-safe: a killed process leaves every file either as
it was or as it was meant to be, never half-written.

- Every file is written to ``<name>.<random>.partial`` and renamed over its name (rename is atomic).
- Zarr writes go through :class:`AtomicLocalStore`, which does exactly that on zarr's I/O thread
  itself (not on a pool of threads), so the writes of a run happen in one deterministic order: the
  crash tests kill a run at each of them in turn. Metadata (``zarr.json``) is fsynced before its
  rename; chunks are not (a chunk lost to a power cut fails its row checksum and is recomputed).
- featcache's own renames use ``renameat`` and its own small files ``pwrite``: other system calls
  than zarr's, on the caller's thread, so each kind is counted in one thread (strace counts per
  thread and per system call).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from zarr.storage import LocalStore

# FEATCACHE_FSYNC=0 skips every fsync (tests, scratch stores): a killed process still loses nothing,
# a power cut may lose the last writes (which the checksums then report).
SYNC = os.environ.get("FEATCACHE_FSYNC", "1") != "0"
PARTIAL = ".partial"  # suffix of a file being written (zarr's own atomic writes use it too)
TRASH = ".trash"  # suffix of a folder being removed


def partial_name(path: Path) -> Path:
    return path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}{PARTIAL}")


def put(path: Path, data, *, sync: bool = False) -> None:
    """Write ``data`` (bytes or a buffer) to ``path`` atomically, with Python's file writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(path)
    try:
        with open(tmp, "xb") as f:  # exclusive: a link planted at the name is not followed
            f.write(data)
            if sync:
                f.flush()
                fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def put_small(path: Path, data: bytes) -> None:
    """Write a small featcache file (not zarr's) atomically and durably, with pwrite and renameat."""
    tmp = partial_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)  # follows no link
    try:
        os.pwrite(fd, data, 0)
        fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    rename(tmp, path)


def rename(src: Path, dst: Path) -> None:
    """os.replace through renameat (see the module docstring for why not rename)."""
    src_dir = os.open(src.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        dst_dir = os.open(dst.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.replace(src.name, dst.name, src_dir_fd=src_dir, dst_dir_fd=dst_dir)
        finally:
            os.close(dst_dir)
    finally:
        os.close(src_dir)


def fsync(fd: int) -> None:
    if SYNC:
        os.fsync(fd)


def fsync_path(path: Path) -> None:
    """fsync a file, or a folder (which makes the renames inside it durable)."""
    if SYNC:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_tree(path: Path) -> None:
    """Remove a folder so that no one ever sees it half-removed under its own name: rename it to
    ``<name>.trash`` first (atomic), then delete that. A leftover trash folder is removed again."""
    remove_trash(path)
    if path.exists():
        rename(path, _trash(path))
        remove_trash(path)


def remove_trash(path: Path) -> None:
    """Finish a removal of ``path`` that a kill cut short."""
    if _trash(path).exists():
        shutil.rmtree(_trash(path))


def _trash(path: Path) -> Path:
    return path.with_name(path.name + TRASH)


def remove_partials(root: Path) -> None:
    """Delete the ``*.partial`` files and ``*.trash`` folders a killed writer left under ``root``.
    Only while holding the store's lock: no one else is writing."""
    for dirpath, dirnames, files in os.walk(root):
        for name in [d for d in dirnames if d.endswith(TRASH)]:
            shutil.rmtree(os.path.join(dirpath, name))
            dirnames.remove(name)
        for name in files:
            if name.endswith(PARTIAL):
                os.unlink(os.path.join(dirpath, name))


def only_partials(root: Path) -> bool:
    """True when a folder holds nothing but folders and ``*.partial`` files: a store whose first
    write was interrupted before any file got its name."""
    return all(name.endswith(PARTIAL) for _, _, files in os.walk(root) for name in files)


class AtomicLocalStore(LocalStore):
    """zarr's LocalStore, writing every key atomically and synchronously on zarr's I/O thread."""

    async def set(self, key, value) -> None:
        await self._put(key, value)

    async def set_if_not_exists(self, key, value) -> None:
        if not (self.root / key).exists():
            await self._put(key, value)

    async def _put(self, key, value) -> None:
        if not self._is_open:
            await self._open()
        self._check_writable()
        put(self.root / key, value.as_buffer_like(), sync=key.rsplit("/", 1)[-1] == "zarr.json")

"""Replacing what featcache writes beside user data in one step: a run folder, an export.

A new version is written under a temporary sibling name (``.<name>.<random>.partial``, created
exclusively: mkdir, or ``O_EXCL | O_NOFOLLOW``, so nothing planted at that name is followed), then
renamed over the final name. An existing folder is swapped with the new one in one
``renameat2(RENAME_EXCHANGE)`` and the old one deleted afterwards: a process killed at any point
leaves at the final name either the old complete version or the new complete one, never a mix.
A file system without the exchange (EINVAL) gets three renames instead (old aside, new in, old
removed); a kill between the first two leaves the old version at ``.<name>.<random>.old``, which
``recover()`` puts back.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

PARTIAL = ".partial"  # a new version being written
OLD = ".old"  # the previous version moved aside (only without RENAME_EXCHANGE)
# FEATCACHE_FSYNC=0 skips the fsyncs, as for stores (stores/fsio.py): tests, scratch folders
SYNC = os.environ.get("FEATCACHE_FSYNC", "1") != "0"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def temporary_sibling(final: Path, tag: str = PARTIAL) -> Path:
    """A fresh hidden name beside ``final`` that keeps its suffix (Keras wants ``.keras``)."""
    return final.with_name(f".{final.stem}.{secrets.token_hex(6)}{tag}{final.suffix}")


def _siblings(final: Path, tag: str) -> list[Path]:
    """The temporary siblings of ``final``, and theirs (a file rewritten under a second one)."""
    one = f"{final.stem}.????????????{tag}"
    return sorted([*final.parent.glob(f".{one}{final.suffix}"), *final.parent.glob(f"..{one}.????????????{tag}"
                                                                                    f"{final.suffix}")])


def new_folder(final: Path) -> Path:
    """An empty temporary folder beside ``final``, made by this call (mkdir fails on anything there)."""
    staging = temporary_sibling(final)
    staging.mkdir(mode=0o755)
    return staging


def remove_leftovers(final: Path) -> None:
    """The temporary siblings a killed writer of ``final`` left. Only while holding ``final``'s
    lock: no one else is writing them."""
    recover(final)
    for p in _siblings(final, PARTIAL) + _siblings(final, OLD):
        remove_path(p)


def recover(final: Path) -> None:
    """Put back an old version that a kill left moved aside (the three-rename fallback)."""
    if not os.path.lexists(final):
        old = _siblings(final, OLD)
        if old:
            os.rename(old[-1], final)


def replace_folder(staging: Path, final: Path) -> None:
    """Make the complete folder ``staging`` be ``final`` in one step; delete the previous ``final``."""
    sync_tree(staging)
    if not os.path.lexists(final):
        os.rename(staging, final)
    elif _exchange(staging, final):
        remove_path(staging)  # which now holds the old version
    else:
        aside = temporary_sibling(final, OLD)
        os.rename(final, aside)
        os.rename(staging, final)
        remove_path(aside)
    sync_path(final.parent)


@contextlib.contextmanager
def replaced(final: Path) -> Iterator[Path]:
    """``with replaced(path) as tmp:`` write ``tmp`` (a file or a folder); on success it becomes
    ``path`` in one rename, on any failure (or kill) ``path`` is left as it was."""
    tmp = temporary_sibling(final)
    try:
        yield tmp
        if tmp.is_dir() and not tmp.is_symlink():
            replace_folder(tmp, final)
        else:
            sync_path(tmp)
            if final.is_dir() and not final.is_symlink():  # a folder (an old SavedModel) replaced by a file
                aside = temporary_sibling(final, OLD)
                os.rename(final, aside)
                os.replace(tmp, final)
                remove_path(aside)
            else:
                os.replace(tmp, final)  # a symlink at ``final`` is replaced, never followed
            sync_path(final.parent)
    finally:
        if os.path.lexists(tmp):
            remove_path(tmp)


def create_exclusive(path: Path, mode: int = 0o644) -> int:
    """A descriptor of a new file featcache writes: refused if anything (a link) is at ``path``."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two names in one step; False where the kernel or file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:  # a C library without it
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def remove_path(path: Path) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def sync_path(path: Path) -> None:
    """fsync a file or a folder (a folder: the renames inside it), unless FEATCACHE_FSYNC=0."""
    if SYNC:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sync_tree(root: Path) -> None:
    """Every file under ``root`` and ``root`` itself on disk before the rename that publishes them."""
    if not SYNC:
        return
    for dirpath, _, files in os.walk(root):
        for name in files:
            sync_path(Path(dirpath) / name)
        sync_path(Path(dirpath))

"""One writer at a time: an exclusive ``flock`` on ``<store>.lock``, beside the store.

The kernel drops the lock when its holder's process dies, however it dies, so a kill -9 never leaves
a stale lock; the holder deletes the file when it is done. The file records who holds it (pid, host,
command, start time) for the message a second writer gets, and a random run token: a worker process
of the holder's run (a distributed executor) opens the store with that token and is admitted while
the holder lives; anyone else is refused. Readers never look at the lock.

Shards (``extract --shard I/N``) run between a planning run and the finishing run, many at once:
each holds ``<store>.lock`` SHARED (so no lock holder can start, and none is running) and its own
``<store>.shard-I-of-N.lock`` exclusively (so the same shard cannot run twice).

flock is local to one machine (and unreliable on some network file systems): writers on several
machines must share one holder and its token; shards on several machines are kept apart by their
disjoint units, not by these locks.

A lock file is opened with ``O_NOFOLLOW``: anyone who can write the store's folder could otherwise
plant a symlink at ``<store>.lock`` and have featcache truncate the file it points to. A lock path
that is a link (dangling or not), a folder or anything but a regular file is refused with one line.

``RunLock`` is the same lock for a run folder being written (``<run>.lock`` beside it): a second
fit-head, sweep or fine-tune on one ``--out`` is refused, not raced.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import socket
import stat
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..errors import FeatcacheError
from .errors import StoreLockedError


@dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str
    command: str
    started: str  # ISO time, UTC
    token: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, running `{self.command}` since {self.started}"

    @classmethod
    def this_process(cls, token: str = "") -> LockHolder:
        return cls(os.getpid(), socket.gethostname(), " ".join(sys.argv) or sys.executable,
                   datetime.now(UTC).isoformat(timespec="seconds"), token)

    def write_to(self, fd: int) -> None:
        """Record this holder in the lock file ``fd`` (read by a refused second writer)."""
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(self)).encode(), 0)


def lock_path(store: Path) -> Path:
    return store.with_name(store.name + ".lock")


def read_holder(path: Path) -> LockHolder | None:
    try:
        fd = open_lock_file(path, os.O_RDONLY)
    except (OSError, FeatcacheError):  # gone, or not a lock file (whoever opens it for writing says so)
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            return LockHolder(**json.loads(f.read(1 << 16)))
    except (OSError, ValueError, TypeError):  # its holder is still writing it
        return None


class LockPathError(FeatcacheError):
    """A lock path holds something featcache must not open: a link, a folder, a device."""


_NOT_FOLLOWED = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a FIFO planted there must not hang us


def open_lock_file(path: Path, flags: int) -> int:
    """``os.open(path, flags)`` that follows no link and returns only a regular file's descriptor;
    anything else at ``path`` is a LockPathError saying what is there and what to do."""
    try:
        fd = os.open(path, flags | _NOT_FOLLOWED, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _bad_lock_path(path, "a symbolic link") from None
        if exc.errno == errno.EISDIR:
            raise _bad_lock_path(path, "a folder") from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _bad_lock_path(path, "a folder" if stat.S_ISDIR(mode) else "not a regular file")
    return fd


def _bad_lock_path(path: Path, what: str) -> LockPathError:
    return LockPathError(f"{path} is {what}, where featcache keeps its lock file (a regular file it creates and "
                         "deletes); featcache follows no link there, as the link's target would be overwritten",
                         remedy=f"remove {path} (nothing featcache needs is in it) and run again")


def shard_lock_path(store: Path, shard: str) -> Path:
    return store.with_name(f"{store.name}.shard-{shard}.lock")


def _shard_locks(store: Path) -> list[Path]:
    return sorted(store.parent.glob(f"{store.name}.shard-*.lock"))


def _held(path: Path) -> bool:
    """Whether a process holds ``path``'s flock (a killed shard's file stays, unlocked)."""
    try:
        fd = open_lock_file(path, os.O_RDONLY)
    except (OSError, LockPathError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _running_shards(store: Path) -> list[str]:
    return [f"shard {p.name[len(store.name) + 7:-5].replace('-of-', '/')} ({h.describe()})"
            for p in _shard_locks(store) if _held(p) and (h := read_holder(p))]


def _remove_stale_shard_locks(store: Path) -> None:
    """The files killed shards left (the holder of the store's lock runs alone: no shard is running)."""
    for path in _shard_locks(store):
        fd = _open_locked(path, fcntl.LOCK_EX)
        if fd is not None:
            path.unlink(missing_ok=True)
            os.close(fd)


def _refusal(store: Path, holder: LockHolder | None) -> StoreLockedError:
    if holder is None and (shards := _running_shards(store)):
        return StoreLockedError(f"{store} is being written by shards of a sharded run: {'; '.join(shards)}. Run "
                                "this once they have finished (it then finishes what they left)")
    who = holder.describe() if holder else "a process that is just starting"
    return StoreLockedError(f"{store} is being written by another featcache process ({who}). A store has one "
                            "writer at a time: wait for that one to finish, or stop it. Reading the store meanwhile "
                            "works")


class StoreLock:
    """The lock of one store, held by this process until :meth:`release`."""

    def __init__(self, path: Path, fd: int, holder: LockHolder, owns_file: bool):
        self.path = path
        self.fd: int | None = fd
        self.holder = holder
        self.owns_file = owns_file  # False: a read-only folder, the file could only be opened for reading

    @property
    def token(self) -> str:
        """Hand this to worker processes of this run: ``open_store(path, "a", token=...)``."""
        return self.holder.token

    @classmethod
    def acquire(cls, store: Path) -> StoreLock | None:
        """The lock, or StoreLockedError naming its holder. None when the lock file can be neither
        created nor opened (a read-only folder): the store can then only be read."""
        path = lock_path(store)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)  # a store may be asked for in a new folder
        except OSError:
            pass  # a read-only place: see below
        while True:
            owns_file = True
            try:
                fd = open_lock_file(path, os.O_RDWR | os.O_CREAT)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
                try:
                    fd, owns_file = open_lock_file(path, os.O_RDONLY), False
                except OSError:
                    return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise _refusal(store, read_holder(path)) from None
            if not _is_current(fd, path):  # its holder removed the file between our open and flock
                os.close(fd)
                continue
            holder = LockHolder.this_process(secrets.token_hex(16))
            if owns_file:
                holder.write_to(fd)
                _remove_stale_shard_locks(store)
            return cls(path, fd, holder, owns_file)

    def release(self) -> None:
        if self.fd is None:
            return
        _unlink_and_close(self.fd, self.path, self.owns_file)
        self.fd = None


def _open_locked(path: Path, how: int) -> int | None:
    """A descriptor of ``path`` holding flock ``how``, or None when another process holds a
    conflicting one. Retries when the file was replaced between the open and the flock."""
    while True:
        fd = open_lock_file(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if _is_current(fd, path):
            return fd
        os.close(fd)


class ShardLock:
    """Shard I of N of a sharded run: the store's lock shared, the shard's own lock exclusive."""

    def __init__(self, store: Path, shard: str):
        self.store = store
        self.path = shard_lock_path(store, shard)
        store.parent.mkdir(parents=True, exist_ok=True)
        self.store_fd = _open_locked(lock_path(store), fcntl.LOCK_SH)
        if self.store_fd is None:
            holder = read_holder(lock_path(store))
            who = holder.describe() if holder else "another process"
            raise StoreLockedError(f"{store} is being written by {who}; a shard runs only while no full extract "
                                   "runs on its store: wait for it to finish")
        self.fd = _open_locked(self.path, fcntl.LOCK_EX)
        if self.fd is None:
            os.close(self.store_fd)
            holder = read_holder(self.path)
            raise StoreLockedError(f"{store}: shard {shard.replace('-of-', '/')} is already running"
                                   f"{f' ({holder.describe()})' if holder else ''}")
        self.holder = LockHolder.this_process()
        self.holder.write_to(self.fd)

    def release(self) -> None:
        if self.fd is None:
            return
        _unlink_and_close(self.fd, self.path)
        os.close(self.store_fd)  # the store's lock file stays: other shards may hold it
        self.fd = None


def _unlink_and_close(fd: int, path: Path, owns_file: bool = True) -> None:
    if owns_file and _is_current(fd, path):
        path.unlink()  # while still holding it: a waiting opener then sees a stale inode and retries
    os.close(fd)


def _is_current(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def admit(store: Path, token: str) -> LockHolder:
    """A worker of the run holding the store's lock: the holder, when ``token`` is its token. On
    the holder's machine the lock must still be held; elsewhere flock says nothing (it is local)."""
    path = lock_path(store)
    holder = read_holder(path)
    if holder is not None and holder.host == socket.gethostname() and not _held(path):
        holder = None  # nobody holds it: its run has ended
    if holder is None:
        raise StoreLockedError(f"{store}: no run holds its lock any more, so token {token[:8]}... admits no "
                               "one; start a new run")
    if holder.token != token:
        raise _refusal(store, holder)
    return holder


class RunLock:
    """The lock of a run folder while a new version of it is written: ``<run>.lock`` beside it,
    exclusive, held until :meth:`release` (or the holder's death: flock)."""

    def __init__(self, path: Path, fd: int, holder: LockHolder):
        self.path = path
        self.fd: int | None = fd
        self.holder = holder

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock:
        path = lock_path(run_dir)
        while True:
            fd = open_lock_file(path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = read_holder(path)
                who = holder.describe() if holder else "a process that is just starting"
                raise FeatcacheError(f"{run_dir} is being written by another featcache process ({who}); one run "
                                     "folder has one writer at a time",
                                     remedy="wait for it to finish, or write to another folder") from None
            if not _is_current(fd, path):  # its holder removed the file between our open and flock
                os.close(fd)
                continue
            holder = LockHolder.this_process()
            holder.write_to(fd)
            return cls(path, fd, holder)

    def release(self) -> None:
        if self.fd is None:
            return
        _unlink_and_close(self.fd, self.path)
        self.fd = None

"""One writer at a time: an exclusive ``flock`` on ``<store>.lock``, beside the store.

The kernel drops the lock when its holder's process dies, however it dies, so a kill -9 never leaves
a stale lock; the holder deletes the file when it is done. The file records who holds it (pid, host,
command, start time) for the message a second writer gets, and a random run token: a worker process
of the holder's run (a distributed executor) opens the store with that token and is admitted while
the holder lives; anyone else is refused. Readers never look at the lock.

flock is local to one machine (and unreliable on some network file systems): writers on several
machines must share one holder and its token.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import socket
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

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


def lock_path(store: Path) -> Path:
    return store.with_name(store.name + ".lock")


def read_holder(path: Path) -> LockHolder | None:
    try:
        return LockHolder(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):  # gone, or its holder is still writing it
        return None


def _refusal(store: Path, holder: LockHolder | None) -> StoreLockedError:
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
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
                try:
                    fd, owns_file = os.open(path, os.O_RDONLY | os.O_CLOEXEC), False
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
            holder = LockHolder(os.getpid(), socket.gethostname(), " ".join(sys.argv) or sys.executable,
                                datetime.now(UTC).isoformat(timespec="seconds"), secrets.token_hex(16))
            if owns_file:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(asdict(holder)).encode(), 0)
            return cls(path, fd, holder, owns_file)

    def release(self) -> None:
        if self.fd is None:
            return
        if self.owns_file and _is_current(self.fd, self.path):
            self.path.unlink()  # while still holding it: a waiting opener then sees a stale inode and retries
        os.close(self.fd)
        self.fd = None


def _is_current(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def admit(store: Path, token: str) -> LockHolder:
    """A worker of the run holding the store's lock: the holder, when ``token`` is its token."""
    path = lock_path(store)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = None
    held = False
    if fd is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            held = True
        finally:
            os.close(fd)
    if not held:
        raise StoreLockedError(f"{store}: no run holds its lock any more, so token {token[:8]}... admits no "
                               "one; start a new run")
    holder = read_holder(path)
    if holder is None or holder.token != token:
        raise _refusal(store, holder)
    return holder

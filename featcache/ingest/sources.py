"""Where images are read from: a local folder, or a URL of an fsspec file system (``s3://bucket/
prefix``, ``gs://``, ``az://``, ...). A data root and an image's location are text: a local path,
or ``<root URL>/<relative path>``.

One registry of source kinds (``SOURCES``, entry-point group ``featcache.sources``): the first
kind whose ``matches`` accepts a text opens it. Built in: ``url`` (any text ``scheme://...``
whose scheme fsspec knows) and ``local`` (everything else: a path on this machine, walked by
scan.py as before). A URL source:

- lists the whole tree under its prefix ONCE, with one recursive listing (fsspec ``find``: on S3
  one paginated ListObjectsV2 without a delimiter, not one call per folder);
- reads each object whole (one GET, no range requests) on the caller's thread, so the reader's
  threads bound the concurrency; a transient failure (a dropped connection, a timeout, a 5xx) is
  retried with exponential backoff, ``ReadPolicy.attempts`` times in all, then stops the run with
  one ``SourceUnreachableError``; a permanent one (404, access denied) is an ``ImageDecodeError``:
  the image is skipped and recorded, exactly like an unreadable local file;
- takes its credentials from the file system's standard configuration (for S3: the AWS
  environment variables, profiles, instance roles, ``AWS_ENDPOINT_URL``; fsspec's own config
  files) and never records them: a URL carrying credentials (``s3://KEY:SECRET@bucket``) or a
  query string is refused, and the root a store records is the bare ``scheme://bucket/prefix``.

The content digest is of the bytes, as for a local file, so a store extracted from a local copy
and one from the bucket share their rows.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import FeatcacheError, ImageDecodeError, ParameterError
from ..registry import Registry

URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.S)
# environment variables that configure an object store's client: a change makes a new client
_CLIENT_ENV = re.compile(r"^(AWS_|FSSPEC_|GOOGLE_|AZURE_|S3_)")


def is_url(location: str | os.PathLike) -> bool:
    return isinstance(location, str) and URL.match(location) is not None


def join(root: str, rel: str) -> str:
    """The location of ``rel`` (a POSIX relative path) under the data root ``root``."""
    if is_url(root):
        return f"{root.rstrip('/')}/{rel}"
    return str(Path(root) / rel)


class SourceUnreachableError(FeatcacheError):
    """The store of images cannot be reached (after the retries): the run stops; what it finished
    is kept, and running it again resumes."""


@dataclass(frozen=True)
class ReadPolicy:
    """How a URL source reads: ``attempts`` tries per object on transient errors, waiting
    ``backoff`` seconds after the first failure and doubling up to ``max_backoff``; each request
    gives up after ``timeout`` seconds without an answer."""

    attempts: int = 4
    backoff: float = 0.2
    max_backoff: float = 5.0
    timeout: float = 20.0

    @classmethod
    def from_environment(cls) -> ReadPolicy:
        """FEATCACHE_SOURCE_ATTEMPTS / _BACKOFF / _TIMEOUT override the defaults."""
        env = os.environ
        try:
            return cls(attempts=max(1, int(env.get("FEATCACHE_SOURCE_ATTEMPTS", cls.attempts))),
                       backoff=float(env.get("FEATCACHE_SOURCE_BACKOFF", cls.backoff)),
                       timeout=float(env.get("FEATCACHE_SOURCE_TIMEOUT", cls.timeout)))
        except ValueError as exc:
            raise FeatcacheError(f"a FEATCACHE_SOURCE_* variable is not a number ({exc})") from None


class ImageSource:
    """A data root: where a tree of images is listed and read."""

    kind = "local"
    root: str  # what a store records: a resolved local path, or a URL without credentials

    def join(self, rel: str) -> str:
        return join(self.root, rel)

    def list_files(self) -> list[str]:
        """Every file under the root, as POSIX paths relative to it, sorted."""
        raise NotImplementedError

    def read_bytes(self, location: str) -> bytes:
        """The whole content of ``location``; ImageDecodeError when it cannot be read for good."""
        raise NotImplementedError


class LocalSource(ImageSource):
    """A folder on this machine (scan.py walks it itself: links, FIFOs and odd names are its care)."""

    kind = "local"

    def __init__(self, root: str | os.PathLike):
        self.root = str(Path(root).expanduser().resolve())

    def list_files(self) -> list[str]:
        base = Path(self.root)
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())

    def read_bytes(self, location: str) -> bytes:
        try:
            return Path(location).read_bytes()
        except OSError as exc:
            raise ImageDecodeError(location, f"cannot read file ({exc.strerror})") from exc


def _permanent(exc: BaseException) -> str | None:
    """Why an object cannot be read for good (404, access denied), or None."""
    if isinstance(exc, FileNotFoundError):
        return "not found (404): removed since it was listed?"
    if isinstance(exc, PermissionError):
        return "access denied (403)"
    if isinstance(exc, IsADirectoryError):
        return "not a file (a folder)"
    code = getattr(exc, "response", {}) or {}
    status = (code.get("ResponseMetadata") or {}).get("HTTPStatusCode") if isinstance(code, dict) else None
    if status in (400, 401, 403, 404, 410):
        return f"cannot read object (HTTP {status})"
    return None


def _transient(exc: BaseException) -> bool:
    """A failure worth another try: the network, a timeout, a server error or throttling."""
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return True
    module = type(exc).__module__.split(".")[0]
    return module in ("botocore", "aiobotocore", "aiohttp", "urllib3", "requests", "s3fs", "gcsfs", "adlfs",
                      "fsspec", "asyncio")


class FsspecSource(ImageSource):
    """A prefix of an fsspec file system, read with the file system's own configuration."""

    kind = "url"

    def __init__(self, url: str, policy: ReadPolicy | None = None):
        self.protocol, self.root, self.prefix = parse_url(url)
        self.policy = policy or ReadPolicy.from_environment()
        self.fs = _filesystem(self.protocol, self.policy)

    def _key(self, location: str) -> str:
        m = URL.match(location)
        return m.group(2) if m else location

    def list_files(self) -> list[str]:
        """One recursive listing of the prefix (paginated by the file system, not per folder)."""
        prefix = self.prefix.rstrip("/")
        found = self._retrying(lambda: self.fs.find(prefix + "/", detail=False), self.root, listing=True)
        start = len(prefix) + 1
        return sorted(p[start:] for p in found if p.startswith(prefix + "/") and not p.endswith("/"))

    def read_bytes(self, location: str) -> bytes:
        key = self._key(location)
        return self._retrying(lambda: self.fs.cat_file(key), location)

    def _retrying(self, call: Callable, location: str, listing: bool = False):
        wait, last = self.policy.backoff, None
        for attempt in range(self.policy.attempts):
            try:
                return call()
            except ImageDecodeError:
                raise
            except Exception as exc:  # noqa: BLE001  (classified below: permanent, transient, or a bug)
                why = _permanent(exc)
                if why is not None:
                    if listing:
                        raise FeatcacheError(f"cannot list {self.root}: {why}",
                                             remedy="check the bucket, the prefix and the credentials "
                                                    "in the environment") from None
                    raise ImageDecodeError(location, why) from None
                if not _transient(exc):
                    raise
                last = exc
            if attempt + 1 < self.policy.attempts:
                time.sleep(wait)
                wait = min(wait * 2, self.policy.max_backoff)
        raise SourceUnreachableError(
            f"cannot reach {self.root} (reading {location} failed {self.policy.attempts} times: "
            f"{type(last).__name__}: {_short(last)})",
            remedy="check the endpoint and the network, then run again: finished work is kept") from None


def _short(exc: BaseException | None) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def parse_url(url: str) -> tuple[str, str, str]:
    """(protocol, the root as recorded: ``protocol://path`` without a trailing slash, the path)."""
    m = URL.match(url.strip())
    if m is None:
        raise ParameterError("data_dir", f"{url!r} is not a URL")
    protocol, rest = m.group(1).lower(), m.group(2)
    if "@" in rest.split("/", 1)[0] or re.match(r"[^/@]*:[^@]*@", rest):  # user:secret@ (a secret may hold "/")
        raise ParameterError("data_dir", "a URL carrying credentials (user:secret@) is refused: featcache "
                                         "would record it",
                             remedy="give the bare URL and the credentials in the file system's standard "
                                    "configuration (for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, a profile)")
    if "?" in rest or "#" in rest:
        raise ParameterError("data_dir", "a URL with a query string is refused (it may carry a signature or a "
                                         "token, which featcache would record); give the bare URL")
    path = rest.strip("/")
    if not path:
        raise ParameterError("data_dir", f"{url!r} names no bucket or folder")
    return protocol, f"{protocol}://{path}", path


_FILESYSTEMS: dict[tuple, object] = {}
_FS_LOCK = threading.Lock()


def _filesystem(protocol: str, policy: ReadPolicy):
    """One client per protocol and client configuration (environment) in this process: every
    reader thread shares it. The file system's own retries are turned off: ReadPolicy retries."""
    try:
        import fsspec
        from fsspec.registry import known_implementations
    except ImportError:  # pragma: no cover (fsspec comes with zarr)
        raise FeatcacheError("reading images from a URL needs the fsspec package") from None
    if protocol not in known_implementations and protocol not in fsspec.available_protocols():
        raise ParameterError("data_dir", f"{protocol}:// is not a file system fsspec knows")
    env = hashlib.sha256(repr(sorted((k, v) for k, v in os.environ.items() if _CLIENT_ENV.match(k))).encode())
    key = (protocol, env.hexdigest(), policy)
    with _FS_LOCK:
        if key in _FILESYSTEMS:
            return _FILESYSTEMS[key]
        options: dict = {"skip_instance_cache": True}
        if protocol in ("s3", "s3a"):
            options["config_kwargs"] = {"retries": {"max_attempts": 1, "mode": "standard"},
                                        "connect_timeout": policy.timeout, "read_timeout": policy.timeout}
        try:
            fs = fsspec.filesystem(protocol, **options)
        except ImportError as exc:
            package = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs",
                       "abfs": "adlfs"}.get(protocol, exc.name or "its fsspec implementation")
            raise FeatcacheError(f"reading {protocol}:// URLs needs the {package} package, which is not installed",
                                 remedy=f"install it (pip install {package})") from None
        if hasattr(fs, "retries"):
            fs.retries = 1  # s3fs' own retry loop: ours instead, bounded and with one clear error
        _FILESYSTEMS[key] = fs
        return fs


@dataclass(frozen=True)
class SourceKind:
    """A kind of data root: ``matches`` says whether a text is one, ``open`` makes its source."""

    name: str
    matches: Callable[[str], bool]
    open: Callable[[str], ImageSource]


SOURCES: Registry[SourceKind] = Registry("image source", "featcache.sources", lambda obj: isinstance(obj, SourceKind))
SOURCES.register(SourceKind("url", is_url, FsspecSource))
SOURCES.register(SourceKind("local", lambda text: not is_url(text), LocalSource))


def open_source(root: str | os.PathLike) -> ImageSource:
    """The source of the data root ``root`` (a folder or a URL)."""
    text = os.fspath(root)
    for kind in sorted(SOURCES, key=lambda k: k.name == "local"):  # the catch-all local kind last
        if kind.matches(text):
            return kind.open(text)
    raise ParameterError("data_dir", f"no image source reads {text!r}")


class KeptBytes:
    """Objects read for their digests, kept (up to ``budget`` bytes, the first ones read) for the
    reader, which then decodes the very bytes that were digested instead of fetching them again:
    one GET per image instead of two for a data set that fits, the first ones of a larger one.
    Taken out when read; ``clear()`` at the end of a run drops the rest."""

    def __init__(self, budget: int):
        self.budget = budget
        self.used = 0
        self.enabled = False
        self._items: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def offer(self, location: str, data: bytes) -> None:
        with self._lock:
            if self.enabled and self.used + len(data) <= self.budget and location not in self._items:
                self._items[location] = data
                self.used += len(data)

    def take(self, location: str) -> bytes | None:
        with self._lock:
            data = self._items.pop(location, None)
            if data is not None:
                self.used -= len(data)
            return data

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.used = 0
            self.enabled = False


def _keep_budget() -> int:
    """FEATCACHE_SOURCE_KEEP_MB (default 256; 0: keep nothing, read every object twice)."""
    try:
        return int(float(os.environ.get("FEATCACHE_SOURCE_KEEP_MB", "256")) * 2**20)
    except ValueError:
        raise FeatcacheError("FEATCACHE_SOURCE_KEEP_MB is not a number of megabytes") from None


KEPT = KeptBytes(256 * 2**20)


class keeping_scanned_bytes:
    """``with keeping_scanned_bytes():`` (one run in this process) objects digested in the block
    are kept for its reader (``KeptBytes``); all are dropped when it ends."""

    def __enter__(self):
        KEPT.clear()
        KEPT.budget = _keep_budget()
        KEPT.enabled = KEPT.budget > 0
        return KEPT

    def __exit__(self, *exc):
        KEPT.clear()


_SOURCES_BY_ROOT: dict[str, ImageSource] = {}


def read_location(location: str, digesting: bool = False) -> bytes:
    """The bytes at a URL location (an image of a URL data root), through its source. Bytes read
    ``digesting`` may be kept for the reader; the reader takes kept bytes first."""
    if not digesting and (kept := KEPT.take(location)) is not None:
        return kept
    data = _read(location)
    if digesting:
        KEPT.offer(location, data)
    return data


def _read(location: str) -> bytes:
    protocol, _, path = parse_url(location)
    bucket = path.split("/", 1)[0]
    src = _SOURCES_BY_ROOT.get(f"{protocol}://{bucket}")
    if src is None:
        src = _SOURCES_BY_ROOT.setdefault(f"{protocol}://{bucket}", FsspecSource(f"{protocol}://{bucket}"))
    # the cached source follows the environment: a changed configuration opens a new client
    src.policy = ReadPolicy.from_environment()
    src.fs = _filesystem(src.protocol, src.policy)
    return src.read_bytes(location)


def local_root(root: str, what: str) -> Path:
    """``root`` as a local folder for ``what`` (an operation that needs one), or a clear refusal."""
    if is_url(root):
        raise ParameterError("data", f"{what} reads the images from a local folder; these are at {root}",
                             remedy="give a local copy of the images (the same files: their digests are checked)")
    return Path(root).expanduser().resolve()


__all__ = ["KEPT", "SOURCES", "FsspecSource", "ImageSource", "KeptBytes", "LocalSource", "ReadPolicy", "SourceKind",
           "SourceUnreachableError", "keeping_scanned_bytes", "is_url", "join", "local_root", "open_source", "parse_url", "read_location"]

"""The store's user-facing errors: damage found on read, another writer, a write the disk refused."""

from __future__ import annotations

import errno
import gc
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

from ..errors import FeatcacheError, Remedy, Step, describe_error, shortlist

SHOWN = 5  # damaged images named in one message; `featcache verify` lists them all


class StoreDamagedError(FeatcacheError):
    """Stored data that fails its checksum (or cannot be read at all). ``images``: the damaged
    images' relative paths."""

    def __init__(self, message: str, images: list[str] | None = None, remedy: Remedy | str | None = None):
        self.images = list(images or [])
        super().__init__(message, remedy=remedy)


def damaged_features(store: Path, key: str, images: list[str], data_root: str, orphans: int = 0) -> StoreDamagedError:
    what = f"{len(images)} image(s): {shortlist(images, SHOWN)}" if images else f"{orphans} stored row(s) of no current image"
    return StoreDamagedError(
        f"{store}: features {key} are damaged for {what} (checksum mismatch or unreadable data)", images,
        Remedy("run {} with the same options to recompute them ({} lists every damaged image)",
               Step.of("extract", data_dir=data_root, store=store), Step.of("verify", store=store)))


def damaged_array(store: Path, key: str, array: str, data_root: str, exc: BaseException) -> StoreDamagedError:
    return StoreDamagedError(
        f"{store}: features {key} are damaged: their {array} array cannot be read ({describe_error(exc)})",
        remedy=Remedy("run {} with the same options to compute them again, or remove them with {}",
                      Step.of("extract", data_dir=data_root, store=store), Step.of("rm", store=store, backbone=key)))


def damaged_manifest(store: Path, detail: str) -> StoreDamagedError:
    return StoreDamagedError(
        f"{store}: the image list (manifest) is damaged: {detail}", remedy=Remedy(
            "run {} (the folder the store was made from) to rewrite it; no features are recomputed",
            Step.of("extract", data_dir="DATA_DIR", store=store)))


def damaged_record(store: Path, key: str, data_root: str) -> StoreDamagedError:
    return StoreDamagedError(
        f"{store}: the record of features {key} (its preprocessing, input size, seed, chunk layout) was changed "
        "after its rows were computed: it no longer says how they were made", remedy=Remedy(
            "run {} with the options the features were made with: they are computed again; or remove them "
            "with {}", Step.of("extract", data_dir=data_root, store=store), Step.of("rm", store=store, backbone=key)))


class StoreLockedError(FeatcacheError):
    """Another process is writing the store."""


_READ_ONLY = {errno.EACCES, errno.EPERM, errno.EROFS}


@contextmanager
def write_errors(store: Path):
    """A write the operating system refuses -> one clear message: what happened, that nothing
    computed so far is lost, what to do."""
    try:
        yield
    except (OSError, RuntimeError) as exc:  # h5py raises RuntimeError for some failed writes
        code = getattr(exc, "errno", None) or _errno_in_text(str(exc))
        if code == errno.ENOSPC or code == errno.EDQUOT:
            raise FeatcacheError(
                f"{store}: no space left on the device (or quota exceeded) while writing. Everything written "
                "before is kept and checksummed: free some space and re-run the same command to resume") from exc
        if code in _READ_ONLY:
            raise FeatcacheError(
                f"{store}: cannot write ({getattr(exc, 'strerror', None) or exc}): the store or its folder is "
                "read-only. Reading it works; to add features, make it writable or extract into another store"
            ) from exc
        raise


@contextmanager
def quiet_cleanup_errors():
    """Around writing a file that may fail (a full disk): h5py reports the failed flush of every
    object it frees once more, as an "Exception ignored" traceback on stderr. The write error
    itself is raised as usual."""
    hooks = sys.unraisablehook, sys.excepthook  # (Cython prints them through both)
    sys.unraisablehook = lambda u: None if isinstance(u.exc_value, OSError | RuntimeError) else hooks[0](u)
    sys.excepthook = lambda t, v, tb: None if isinstance(v, OSError | RuntimeError) else hooks[1](t, v, tb)
    try:
        yield
    except BaseException as exc:
        traceback.clear_frames(exc.__traceback__)  # free the failed objects now, while quiet
        gc.collect()
        raise
    finally:
        sys.unraisablehook, sys.excepthook = hooks


def _errno_in_text(text: str) -> int | None:
    """h5py reports write errors with the errno only in its message ("errno = 28,")."""
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS):
        if f"errno = {code}," in text or f"[Errno {code}]" in text:
            return code
    return None

"""Reading a store's features a few chunks at a time, verified, for heads that do not fit in memory.

``FeatureStore.load`` reads whole feature arrays (what an in-memory fit needs). ``StoreRows`` does
the same bookkeeping (which images are usable, which stored row holds each, the refusal of
incomplete features) without reading any feature, and then reads the features of any set of
images chunk by chunk: every chunk read is checked against the rows' checksums, exactly as
``load`` checks them, so a damaged row is refused with the same error and never reaches a head.
Rows stay in the stored dtype (float16 by default) until the caller forms its batch.

Only store.py's public reading methods and the Backend primitives are used.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..config import FeatureConfig
from ..errors import FeatcacheError
from .checksum import damaged_rows
from .errors import damaged_features
from .schema import CHECKSUM, DONE, FEATURES, PENDING, STATUS
from .store import FeatureStore, StoredManifest


@dataclass
class KeyRows:
    """Where one feature config keeps the usable images' rows."""

    key: str
    row_of: np.ndarray  # (n,) stored row of each usable image
    chunk_rows: int
    dim: int
    dtype: np.dtype
    digests: list[str] = field(repr=False)  # every stored row's content digest
    verifiable: bool = True


class StoreRows:
    """The usable images of one or more configs (concatenated along D), read on demand."""

    def __init__(self, store: FeatureStore, names: list[str]):
        self.store = store
        keys = [store.resolve_key(n) for n in names]
        manifest = store.manifest()
        self.manifest: StoredManifest = manifest
        usable = np.ones(len(manifest), bool)
        found = []
        for key in keys:
            row_digests, rows, st = store._manifest_rows(key, manifest)
            pending = int((st == PENDING).sum())
            if pending:  # the very message load() gives
                store.load([key])
            self._check_failed(key, row_digests, rows[st != PENDING], st[st != PENDING])
            usable &= st == DONE
            found.append((key, row_digests, rows))
        self.images = np.flatnonzero(usable)  # manifest index of each usable image
        g = "features/{}/" + FEATURES
        self.views = min(store.backend.shape(g.format(k))[1] for k in keys) if keys else 1
        self.keys = [KeyRows(key, rows[self.images], store.chunk_rows(key), store.backend.shape(g.format(key))[2],
                             np.dtype(store.backend.array_info(g.format(key)).dtype), row_digests,
                             store.verifiable(key)) for key, row_digests, rows in found]
        self.configs: list[FeatureConfig] = [store.config(k) for k in keys]
        self.labels = manifest.labels[self.images]
        self.splits = manifest.splits[self.images]

    @property
    def dim(self) -> int:
        return sum(k.dim for k in self.keys)

    @property
    def itemsize(self) -> int:
        return max(k.dtype.itemsize for k in self.keys)

    def _check_failed(self, key: str, row_digests: list[str], rows: np.ndarray, status: np.ndarray) -> None:
        """Failed rows carry no features: their checksums bind digest and status only, so they are
        verified here, from the small arrays, as load() verifies them (a row turned "failed"
        would silently drop its image)."""
        failed = rows[status != DONE]
        if not len(failed) or not self.store.verifiable(key):
            return
        checksum = self.store.backend.read(f"features/{key}/{CHECKSUM}")[failed]
        stat = self.store.backend.read(f"features/{key}/{STATUS}")[failed]
        bad = damaged_rows([row_digests[r] for r in failed], stat, checksum, np.zeros((len(failed), 1, 1), np.uint8))
        if len(bad):
            raise self._damage(key, row_digests, failed[bad])

    def chunk_groups(self, images: np.ndarray) -> list[np.ndarray]:
        """Positions in ``images`` (which are positions among the usable images) grouped by the
        chunk of the first config that holds them, in store order: reading one group reads one
        chunk per config (of each config, when their rows are in the same order, as extract makes them)."""
        images = np.asarray(images)
        if not len(images):
            return []
        first = self.keys[0]
        rows = first.row_of[images]
        order = np.argsort(rows, kind="stable")
        cuts = np.flatnonzero(np.diff(rows[order] // first.chunk_rows)) + 1
        return np.split(order, cuts)

    def read(self, images: np.ndarray, view: int | None = None) -> np.ndarray:
        """Features of ``images`` (positions among the usable images): (n, V, D), or (n, D) of one
        ``view``, in the stored dtype, verified chunk by chunk."""
        images = np.asarray(images)
        parts = [self._read_key(k, k.row_of[images], view) for k in self.keys]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)

    def _read_key(self, k: KeyRows, rows: np.ndarray, view: int | None) -> np.ndarray:
        g = f"features/{k.key}"
        shape = (len(rows), self.views, k.dim) if view is None else (len(rows), k.dim)
        out = np.empty(shape, k.dtype)
        chunk_of = rows // k.chunk_rows
        for c in np.unique(chunk_of):
            at = np.flatnonzero(chunk_of == c)
            start = int(c) * k.chunk_rows
            sel = slice(start, start + k.chunk_rows)
            local = rows[at] - start
            try:  # checksums before features, as FeatureStore reads them
                checksum = self.store.backend.read(f"{g}/{CHECKSUM}", sel) if k.verifiable else None
                feats = self.store.backend.read(f"{g}/{FEATURES}", sel)
            except Exception:  # noqa: BLE001  (an unreadable chunk: every row asked of it is damaged)
                raise self._damage(k.key, k.digests, rows[at]) from None
            if k.verifiable:
                status = np.full(len(at), DONE, np.int8)  # usable rows are done (read with the manifest)
                bad = damaged_rows([k.digests[r] for r in rows[at]], status, checksum[local], feats[local])
                if len(bad):
                    raise self._damage(k.key, k.digests, rows[at][bad])
            picked = feats[local, :self.views] if view is None else feats[local, view]
            out[at] = picked
        return out

    def _damage(self, key: str, row_digests: list[str], rows: Iterable[int]) -> FeatcacheError:
        bad = {row_digests[r] for r in rows}
        m = self.manifest
        images = [p for p, d in zip(m.paths, m.digests, strict=True) if d in bad]
        return damaged_features(self.store.path, key, images, m.data_root, orphans=len(bad))


def prefetch(items: Iterator, depth: int = 1) -> Iterator:
    """Run ``items`` on a thread, up to ``depth`` items ahead: reading and decompressing the next
    window overlaps the training on this one. Errors surface in the consumer; a consumer that
    stops early stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as exc:  # noqa: BLE001  (handed to the consumer)
            q.put((done, exc))

    thread = threading.Thread(target=work, name="featcache-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # let it see the stop (it may be blocked on a full queue)
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)


__all__ = ["KeyRows", "StoreRows", "prefetch"]

"""The one way features are read: a verified, lazy view of the usable rows of one or more groups.

``store.rows(names)`` is a ``FeatureRows``: the images every named config holds features of
(several configs are concatenated along D), with their labels, splits, paths and digests, and
nothing read yet. Selecting (``take``, ``split``, ``view``, ``columns``) makes another view, still
unread. Reading goes chunk by chunk, and every chunk read is checked against the rows' checksums:
a damaged row is refused with StoreDamagedError naming its images and never reaches a caller.
``load()`` materialises a view as float32; ``blocks()`` reads it a chunk at a time (in store
order, on a prefetch thread), ``epoch()`` draws a streamed training epoch.

Heads read the same interface from arrays (heads/data.py ``ArrayRows``), so a head has one code
path whether its rows are in memory or in the store.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from ..config import FeatureConfig
from ..errors import FeatcacheError, Remedy, Step
from ..ingest.scan import SPLITS
from .checksum import damaged_rows
from .group import ConfigGroup
from .schema import DONE, FAILED, PENDING

if TYPE_CHECKING:
    from .manifests import StoredManifest
    from .store import FeatureStore


@dataclass(frozen=True)
class _Part:
    """Where one config keeps the usable images' rows."""

    group: ConfigGroup
    row_of: np.ndarray  # (N,) stored row of each usable image
    chunk_rows: int
    dim: int
    dtype: np.dtype
    digests: list[str] = field(repr=False)  # every stored row's content digest
    verifiable: bool = True


def open_rows(store: FeatureStore, names: list[str], allow_incomplete: bool = False) -> FeatureRows:
    """The usable images of the configs ``names`` (keys or backbone labels). Incomplete features
    are refused (unless ``allow_incomplete``: then only the images every config holds); failed
    rows are verified here (they carry no features, and one turned "failed" would drop its image)."""
    keys = [store.resolve_key(n) for n in names]
    manifest = store.manifest()
    usable = np.ones(len(manifest), bool)
    found = []
    for key in keys:
        group = store[key]
        row_digests, rows, st = group.manifest_rows(manifest)
        pending = int((st == PENDING).sum())
        if pending and not allow_incomplete and pending == len(manifest):
            # never extracted (a run stopped before its first unit): resuming it needs its options
            raise FeatcacheError(
                f"features {key} are empty: none of the {len(manifest)} images was extracted",
                remedy=Remedy("remove them with {}, or extract them with the options they were recorded with "
                              "({} lists them)", Step.of("rm", store=store.path, backbone=key),
                              Step.of("info", store=store.path)))
        if pending and not allow_incomplete:
            raise FeatcacheError(
                f"features {key} are incomplete: {pending} of {len(manifest)} images not extracted yet",
                remedy=Remedy("resume with {} and the same options as before",
                              Step.of("extract", data_dir=manifest.data_root, store=store.path)))
        group.check_failed(row_digests, rows[st == FAILED])
        try:
            shape, dtype = group.shape(), group.dtype()
        except Exception:  # noqa: BLE001  (a lost features array: every image's row is damaged)
            raise group.damage_error(row_digests, rows[st == DONE], manifest) from None
        usable &= st == DONE
        found.append((group, row_digests, rows, shape, dtype))
    images = np.flatnonzero(usable)
    parts = tuple(_Part(group, rows[images], group.chunk_rows(), int(shape[2]), dtype, row_digests, group.verifiable())
                  for group, row_digests, rows, shape, dtype in found)
    views = min(shape[1] for _, _, _, shape, _ in found) if found else 1
    return FeatureRows(store, manifest, parts, images, views, np.arange(len(images)))


@dataclass(frozen=True, eq=False)
class FeatureRows:
    """A selection of the usable images of one or more configs, read on demand (see the module)."""

    store: FeatureStore = field(repr=False)
    manifest: StoredManifest = field(repr=False)
    parts: tuple[_Part, ...] = field(repr=False)
    images: np.ndarray = field(repr=False)  # (N,) manifest index of every usable image
    n_views: int  # V: views every config holds
    at: np.ndarray = field(repr=False)  # the selection: positions among the N usable images
    view_index: int | None = None  # one view: rows are (n, D); None: every view, (n, V, D)
    cols: slice | None = None  # a column range of the concatenated features
    window_chunks: int = 1  # chunks per shuffle window of a streamed epoch
    label_override: np.ndarray | None = field(default=None, repr=False)

    in_memory = False  # rows are read from the store when asked for

    # -- what the selection is -------------------------------------------------------------------
    @property
    def keys(self) -> list[str]:
        return [p.group.key for p in self.parts]

    @property
    def configs(self) -> list[FeatureConfig]:
        return [p.group.config() for p in self.parts]

    @property
    def dims(self) -> list[int]:
        """Each config's feature size, in concatenation order (before any column selection)."""
        return [p.dim for p in self.parts]

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    @property
    def labels(self) -> np.ndarray:
        if self.label_override is not None:
            return self.label_override
        return self.manifest.labels[self.images[self.at]]

    @property
    def multilabel(self) -> bool:
        return self.manifest.label_sets is not None

    @property
    def label_sets(self) -> np.ndarray | None:
        """Multi-label: each row's (classes,) 0/1 labels, (n, classes) uint8; None: single-label."""
        if self.manifest.label_sets is None:
            return None
        return self.manifest.label_sets[self.images[self.at]]

    @property
    def splits(self) -> np.ndarray:
        return self.manifest.splits[self.images[self.at]]

    @property
    def paths(self) -> list[str]:
        return [self.manifest.paths[i] for i in self.images[self.at]]

    @property
    def digests(self) -> list[str]:
        return [self.manifest.digests[i] for i in self.images[self.at]]

    @property
    def dim(self) -> int:
        total = sum(self.dims)
        return total if self.cols is None else len(range(*self.cols.indices(total)))

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.at), self.dim) if self.view_index is not None else (len(self.at), self.n_views, self.dim)

    @property
    def itemsize(self) -> int:
        return max((p.dtype.itemsize for p in self.parts), default=4)

    @property
    def chunk_bytes(self) -> int:
        """What one chunk of the first config holds, as stored: the unit a window is counted in."""
        return self.parts[0].chunk_rows * self.n_views * self.dim * self.itemsize if self.parts else 0

    def nbytes(self, itemsize: int = 4) -> int:
        """What the selection takes in memory (float32 by default, as ``load()`` holds it)."""
        return int(np.prod(self.shape)) * itemsize

    def __len__(self) -> int:
        return len(self.at)

    def __repr__(self) -> str:
        return f"FeatureRows({self.store.path}, {self.keys}, shape={self.shape})"

    # -- selections (nothing is read) --------------------------------------------------------------
    def take(self, positions) -> FeatureRows:
        """The rows at ``positions`` of this selection, in that order."""
        positions = np.asarray(positions, np.int64)
        labels = None if self.label_override is None else self.label_override[positions]
        return replace(self, at=self.at[positions], label_override=labels)

    def positions(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == SPLITS.index(split))

    def split(self, name: str) -> FeatureRows:
        """The images of one split ("train", "validation", "test")."""
        return self.take(self.positions(name))

    def view(self, v: int) -> FeatureRows:
        """View ``v`` of every image (0: the un-augmented one): (n, D) rows."""
        if self.view_index is not None:
            raise ValueError("a view of a view")
        if not 0 <= v < self.n_views:
            raise ValueError(f"view {v} of {self.n_views}")
        return replace(self, view_index=int(v))

    def columns(self, s: slice) -> FeatureRows:
        """A range of the concatenated feature columns (one config's, for a per-backbone head)."""
        if self.cols is not None:
            base = range(*self.cols.indices(sum(self.dims)))[s]
            s = slice(base.start, base.stop)
        return replace(self, cols=s)

    def concat(self, other: FeatureRows) -> FeatureRows:
        """This selection's rows, then ``other``'s (another selection of the same view)."""
        if other.parts is not self.parts:
            raise ValueError("rows of two different views")
        labels = (None if self.label_override is None and other.label_override is None
                  else np.concatenate([self.labels, other.labels]))
        return replace(self, at=np.concatenate([self.at, other.at]), label_override=labels)

    def with_labels(self, labels) -> FeatureRows:
        labels = np.asarray(labels)
        if len(labels) != len(self):
            raise ValueError(f"{len(labels)} labels for {len(self)} rows")
        return replace(self, label_override=labels)

    def windowed(self, chunks: int) -> FeatureRows:
        return replace(self, window_chunks=max(1, int(chunks)))

    # -- reading -----------------------------------------------------------------------------------
    @property
    def groups(self) -> list[np.ndarray]:
        """Positions in the selection grouped by the chunk of the first config that holds them, in
        store order: reading one group reads one chunk per config (of each config, when their rows
        are in the same order, as extract makes them)."""
        if not len(self.at) or not self.parts:
            return []
        first = self.parts[0]
        rows = first.row_of[self.at]
        order = np.argsort(rows, kind="stable")
        cuts = np.flatnonzero(np.diff(rows[order] // first.chunk_rows)) + 1
        return np.split(order, cuts)

    def read(self, positions, view: int | None = None) -> np.ndarray:
        """Features of ``positions`` of the selection in the stored dtype, verified chunk by chunk:
        (n, V, D), or (n, D) of ``view`` (default: the selection's own view)."""
        view = self.view_index if view is None else view
        usable = self.at[np.asarray(positions, np.int64)]
        ends = np.cumsum([0, *self.dims])
        lo, hi = (0, int(ends[-1])) if self.cols is None else self.cols.indices(int(ends[-1]))[:2]
        parts = []
        for p, a, b in zip(self.parts, ends[:-1], ends[1:], strict=True):
            if b <= lo or a >= hi:  # columns not selected: not read
                continue
            X = self._read_part(p, p.row_of[usable], view)
            parts.append(X[..., max(lo - a, 0):min(hi, b) - a] if (lo > a or hi < b) else X)
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)

    def _read_part(self, p: _Part, rows: np.ndarray, view: int | None) -> np.ndarray:
        out = np.empty((len(rows), self.n_views, p.dim) if view is None else (len(rows), p.dim), p.dtype)
        chunk_of = rows // p.chunk_rows
        for c in np.unique(chunk_of):
            at = np.flatnonzero(chunk_of == c)
            start = int(c) * p.chunk_rows
            local = rows[at] - start
            try:
                checksum, feats = p.group.read_rows(slice(start, start + p.chunk_rows), p.verifiable)
            except Exception:  # noqa: BLE001  (an unreadable chunk: every row asked of it is damaged)
                raise self._damage(p, rows[at]) from None
            if p.verifiable:
                status = np.full(len(at), DONE, np.int8)  # usable rows are done (read with the manifest)
                bad = damaged_rows([p.digests[r] for r in rows[at]], status, checksum[local], feats[local])
                if len(bad):
                    raise self._damage(p, rows[at][bad])
            out[at] = feats[local, :self.n_views] if view is None else feats[local, view]
        return out

    def _damage(self, p: _Part, found) -> FeatcacheError:
        """The refusal names every damaged image of the selection, not only the first chunk's: the
        error path reads the selection's chunks once more (status, checksums, features)."""
        bad = set(np.asarray(found).tolist()) | p.group.damaged_among(p.digests, p.row_of[self.at].tolist())
        return p.group.damage_error(p.digests, bad, self.manifest)

    def indexed_blocks(self, every: int = 1, view: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(rows in the stored dtype, their positions in the selection), a chunk at a time in store
        order (every ``every``-th chunk), read on a prefetch thread."""
        return prefetch((self.read(g, view), g) for g in self.groups[::every])

    def blocks(self, every: int = 1, view: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(rows, their labels), a chunk at a time in store order: (r, V, D), or (r, D) of ``view``."""
        labels = self.labels
        for X, g in self.indexed_blocks(every, view):
            yield X, labels[g]

    def load(self) -> np.ndarray:
        """The whole selection as float32, in selection order."""
        out = np.empty(self.shape, np.float32)
        for g in self.groups:
            out[g] = self.read(g)
        return out

    def epoch(self, seed: int, epoch: int, batch_size: int) -> tuple[np.ndarray, Iterator]:
        """A streamed training epoch: (the view drawn for each image, an iterator of (float32
        batch, labels)). The chunks in a shuffled order, read ``window_chunks`` at a time on a
        prefetch thread, each window's rows shuffled, one view per image drawn with (seed,
        epoch); rows left at a window's end open the next window's first batch, so batches are full."""
        rng = np.random.default_rng([seed, epoch])
        n, v = self.shape[:2]
        views = rng.integers(0, v, n)
        groups = self.groups
        order = rng.permutation(len(groups))
        windows = [np.concatenate([groups[g] for g in order[i:i + self.window_chunks]])
                   for i in range(0, len(order), self.window_chunks)]
        shuffles = [rng.permutation(len(w)) for w in windows]  # drawn up front: the reads run on a thread
        labels = self.labels

        def read_windows():
            for at, perm in zip(windows, shuffles, strict=True):
                at = at[perm]
                X = self.read(at)
                yield X[np.arange(len(at)), views[at]], labels[at]

        return views, full_batches(prefetch(read_windows()), batch_size)


def full_batches(windows: Iterator, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Full batches across window boundaries (the remainder carried over), float32 at the last step."""
    carry_x, carry_y = None, None
    for X, y in windows:
        if carry_x is not None:
            X, y = np.concatenate([carry_x, X]), np.concatenate([carry_y, y])
        full = len(X) // batch_size * batch_size
        for i in range(0, full, batch_size):
            yield X[i:i + batch_size].astype(np.float32), y[i:i + batch_size]
        carry_x, carry_y = X[full:], y[full:]
    if carry_x is not None and len(carry_x):
        yield carry_x.astype(np.float32), carry_y


def prefetch(items: Iterator, depth: int = 1) -> Iterator:
    """Run ``items`` on a thread, up to ``depth`` items ahead: reading and decompressing the next
    block overlaps the work on this one. Errors surface in the consumer; a consumer that stops
    early stops the thread."""
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


__all__ = ["FeatureRows", "full_batches", "open_rows", "prefetch"]

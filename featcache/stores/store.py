"""One feature-store schema over any Backend (Zarr or HDF5).

Layout (schema 2)::

    /                       attrs: featcache_schema, featcache_version, manifest (the current version),
                                   split, skipped {digest: {path, reason}}, plan {manifest, keys} (what
                                   a --plan-only run planned: shards check it)
    /shards/<I-of-N>/       attrs: skipped, stats: one shard's own record until the next full run folds it in
    /manifests/<n>/         attrs: classes, data_root, presplit, split, ignored, checksums {array: crc32}
        path                (N,) str    relative path of manifest entry i
        label               (N,) int32
        split               (N,) int8   0 train, 1 validation, 2 test
        digest              (N,) str    content digest
    /features/<key>/        attrs: config (FeatureConfig), chunk_rows, batch_size, dim, stats, checksummed
        features            (M, V, D)   chunked (chunk_rows, V, D): V = 1 + K views, view 0 un-augmented
        digest              (M,) str    which image content row r holds ("" = unused)
        status              (M,) int8   0 pending, 1 done, 2 failed (image could not be decoded)
        checksum            (M,) uint32 CRC-32 of the row's digest, status and feature bytes (checksum.py)

Feature rows are addressed by image CONTENT, not by position in the manifest: adding, renaming or
removing files never moves or loses a computed row, identical files share one, and the manifest
maps each image to its row through its digest. New rows are allocated once per run, starting at a
chunk boundary, so every unit of work is a chunk-aligned row range that one worker can compute and
write on its own.

No silent wrong result:
- One writer at a time (lock.py); readers are never blocked. The writer's workers (its run token)
  and shards write only their own units (and a shard its own record): anything shared is refused.
- A new manifest is written as a new version, then the root's ``manifest`` attribute switches to
  it in one write: a reader sees the old image list (with its classes) or the new one, never a mix.
  The version before stays for readers that are still reading it.
- A unit is written features, then checksums, then status: a crash in between leaves its rows
  pending. Every read of features verifies the rows' checksums and refuses damaged data naming the
  images; every ``extract`` verifies the rows it reuses (reading the config's features once per
  run) and recomputes damaged ones.
- A config group counts once its ``config`` attribute is written (last): a half-made one is redone.
- Zarr: every file is written atomically and carries a CRC-32C. HDF5: the file is never modified in
  place; a run writes a Zarr journal and its commit rewrites the whole file and renames it into
  place (journal.py). That costs a full copy of the store in and out per run that writes anything
  (about 3 s for a 145 MB store of 50,000 rows x 1280 float16; a run with nothing to do writes
  nothing). Verifying a config's rows costs about 5 us per row on top of reading them.
- Schema 1 stores (written before checksums) are read as they are; their features are reported
  "not verifiable" until the next ``extract`` adds checksums, from the data as it is then.
- Each config records the batch size it was started with; a resume uses it, since the backbone's
  arithmetic rounds differently for other batch shapes (features would differ by ~1e-4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from .. import __version__
from ..config import FeatureConfig
from ..errors import FeatcacheError, ParameterError
from ..ingest.scan import SPLITS, Manifest, SplitFractions
from .backend import Backend
from .checksum import array_checksum, damaged_rows, row_checksums
from .errors import damaged_features, damaged_manifest, write_errors
from .lock import ShardLock, StoreLock
from .schema import (
    CHECKSUM,
    CONFIG_ARRAYS,
    DIGEST,
    DONE,
    FAILED,
    FEATURES,
    PENDING,
    READABLE_SCHEMAS,
    SCHEMA_VERSION,
    SHARDS,
    STATUS,
)

__all__ = ["DONE", "FAILED", "PENDING", "SCHEMA_VERSION", "ConfigStatus", "FeatureSet", "FeatureStore",
           "StoredManifest", "WorkUnit", "choose_chunk_rows"]


@dataclass(frozen=True)
class WorkUnit:
    """A chunk-aligned row range of one feature config with rows still to compute."""

    key: str
    start: int
    stop: int
    rows: tuple[int, ...]  # rows to compute inside [start, stop): pending ones and damaged ones
    repairs: tuple[int, ...] = ()  # of those, rows computed before whose stored data is damaged


@dataclass
class StoredManifest:
    classes: list[str]
    paths: list[str]
    labels: np.ndarray
    splits: np.ndarray
    digests: list[str]
    data_root: str
    presplit: bool
    split: str
    ignored: list[str] = field(default_factory=list)
    verifiable: bool = True  # False: a schema 1 manifest, written without checksums

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class ConfigStatus:
    key: str
    config: FeatureConfig
    rows: int  # manifest images
    done: int  # of those, with features
    failed: int
    pending: int
    views: int
    dim: int
    dtype: str
    nbytes: int
    stats: dict = field(default_factory=dict)
    orphans: int = 0  # stored rows no current image maps to (removed or changed files)
    verifiable: bool = True  # False: written before checksums (schema 1) and not extracted since

    @property
    def complete(self) -> bool:
        return self.pending == 0


@dataclass
class FeatureSet:
    """Cached features of the usable manifest images, as numpy arrays (the head's input)."""

    keys: list[str]
    configs: list[FeatureConfig]
    classes: list[str]
    features: np.ndarray  # (n, V, D) float32
    labels: np.ndarray  # (n,)
    splits: np.ndarray  # (n,)
    paths: list[str]
    digests: list[str]

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        mask = self.splits == SPLITS.index(name)
        return self.features[mask], self.labels[mask]

    def indices(self, name: str) -> np.ndarray:
        return np.flatnonzero(self.splits == SPLITS.index(name))


def choose_chunk_rows(views: int, dim: int, itemsize: int, target_bytes: int = 2 << 20) -> int:
    rows = max(16, target_bytes // max(1, views * dim * itemsize))
    return int(2 ** int(np.log2(rows)))


def _manifest_arrays(paths, digests, labels, splits) -> dict:
    return {"path": paths, "digest": digests, "label": np.asarray(labels, np.int32),
            "split": np.asarray(splits, np.int8)}


class FeatureStore:
    def __init__(self, backend: Backend, lock: StoreLock | ShardLock | None = None, refuse_writes: str | None = None,
                 role: str = "writer"):
        self.backend = backend
        self.path = backend.path
        self.lock = lock  # held by this process: it commits and releases
        self.refuse_writes = refuse_writes  # why this writer may not write (no lock could be taken)
        # "writer": the lock holder, writes anything. "worker" (a run token) and "shard" (a shard
        # lock) write only their units' rows (and a shard its own record): never what others share
        self.role = role
        self._new = False  # nothing on disk yet: the first write creates the store

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def token(self) -> str | None:
        """The run token workers of this writer open the store with (``open_store(..., token=)``)."""
        return self.lock.token if isinstance(self.lock, StoreLock) else None

    def close(self) -> None:
        try:
            if self.lock is not None:
                with write_errors(self.path):
                    self.backend.commit()
        finally:
            try:
                self.backend.close()
            finally:
                if self.lock is not None:
                    self.lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_schema(self, creating: bool) -> None:
        attrs = self.backend.get_attrs()
        if "featcache_schema" not in attrs:
            if not creating:
                raise FeatcacheError(f"{self.path} is not a featcache store (no featcache_schema attribute)")
            if not self.backend.is_empty() or attrs:
                raise ParameterError("store", f"{self.path} exists but is not a featcache store; choose another path")
            self._new = True
        elif attrs["featcache_schema"] not in READABLE_SCHEMAS:
            raise FeatcacheError(
                f"{self.path} has store schema {attrs['featcache_schema']}, this featcache reads schema "
                f"{', '.join(map(str, READABLE_SCHEMAS))}; extract into a new store"
            )

    @contextmanager
    def _writing(self, shared: bool = True) -> Iterator[None]:
        """Around every write: refuse it when this process may not write, create the store on its
        first write, and turn the operating system's refusals into clear errors. ``shared``: it
        writes what every writer shares (attributes, the manifest, array sizes): the lock holder's."""
        if self.backend.mode == "r":
            raise FeatcacheError(f"{self.path} was opened for reading; open it with mode 'a' to write")
        if self.refuse_writes:
            raise FeatcacheError(self.refuse_writes)
        if shared and self.role != "writer":
            raise FeatcacheError(f"{self.path}: a {self.role} writes only its own units; the run holding the "
                                 "store's lock writes everything else")
        with write_errors(self.path):
            if self._new:
                self.backend.set_attrs("", {"featcache_schema": SCHEMA_VERSION, "featcache_version": __version__})
                self._new = False
            yield

    # -- manifest ----------------------------------------------------------------------------------
    def stored_split(self) -> str | None:
        """The split fractions the store was extracted with (None: a new store)."""
        return self.backend.get_attrs().get("split")

    def write_manifest(self, m: Manifest) -> bool:
        """Make ``m`` the store's image list; False when it already is (then nothing is written)."""
        if self._holds_manifest(m):
            return False
        arrays = _manifest_arrays(m.paths, m.digests, m.labels, m.splits)
        with self._writing():
            previous = self.backend.get_attrs().get("manifest")
            version = str(int(previous) + 1) if previous is not None else "1"
            g = f"manifests/{version}"
            if self.backend.exists(g):  # half-written by a killed run, never switched to
                self.backend.delete(g)
            for name in ("path", "digest"):
                self.backend.write_strings(f"{g}/{name}", arrays[name])
            for name in ("label", "split"):
                self.backend.create_array(f"{g}/{name}", (len(m),), (max(1, len(m)),), arrays[name].dtype.name, 0)
                self.backend.write(f"{g}/{name}", slice(None), arrays[name])
            self.backend.set_attrs(g, {
                "classes": m.classes, "data_root": m.root, "presplit": m.presplit, "split": str(m.split_fractions),
                "ignored": m.ignored[:1000], "checksums": {k: array_checksum(v) for k, v in arrays.items()}})
            self.backend.flush()
            # the switch: one write of the root attributes
            self.backend.set_attrs("", {"manifest": version, "split": str(m.split_fractions),
                                        "featcache_schema": SCHEMA_VERSION, "featcache_version": __version__})
            self.backend.flush()
            for old in self.backend.groups("manifests"):  # a reader may still be reading `previous`
                if old not in (version, previous):
                    self.backend.delete(f"manifests/{old}")
            if self.backend.exists("images"):  # the schema 1 manifest
                self.backend.delete("images")
        return True

    def _holds_manifest(self, m: Manifest) -> bool:
        try:
            cur = self.manifest()
        except FeatcacheError:  # none yet, or damaged: write it
            return False
        return (cur.verifiable and cur.paths == m.paths and cur.digests == m.digests and cur.classes == m.classes
                and np.array_equal(cur.labels, m.labels) and np.array_equal(cur.splits, m.splits)
                and cur.data_root == m.root and cur.presplit == m.presplit and cur.split == str(m.split_fractions)
                and cur.ignored == m.ignored[:1000] and self.backend.get_attrs().get("split") == cur.split)

    def manifest(self) -> StoredManifest:
        a = self.backend.get_attrs()
        if "manifest" in a:
            return self._read_manifest(f"manifests/{a['manifest']}", self.backend.get_attrs, verifiable=True)
        if self.backend.exists("images/path"):  # schema 1: the arrays under images/, their attributes at the root
            return self._read_manifest("images", lambda g: a, verifiable=False)
        raise FeatcacheError(f"{self.path} holds no images yet; run `featcache extract DATA_DIR --store {self.path}`")

    def _read_manifest(self, g: str, attrs_of, verifiable: bool) -> StoredManifest:
        try:
            a = attrs_of(g)
            arrays = _manifest_arrays(self.backend.read_strings(f"{g}/path"), self.backend.read_strings(f"{g}/digest"),
                                      self.backend.read(f"{g}/label"), self.backend.read(f"{g}/split"))
            classes = list(a["classes"])
        except Exception as exc:  # noqa: BLE001  (whatever the storage library raises: unreadable)
            raise damaged_manifest(self.path, f"{g} cannot be read ({type(exc).__name__}: {exc})") from exc
        if len({len(v) for v in arrays.values()}) != 1:
            raise damaged_manifest(self.path, f"the arrays of {g} have different lengths")
        if verifiable:
            bad = [k for k, v in arrays.items() if array_checksum(v) != a.get("checksums", {}).get(k)]
            if bad:
                raise damaged_manifest(self.path, f"{', '.join(f'{g}/{k}' for k in bad)} fail their checksum")
        return StoredManifest(
            classes=classes, paths=arrays["path"], labels=arrays["label"], splits=arrays["split"],
            digests=arrays["digest"], data_root=a["data_root"], presplit=bool(a.get("presplit")),
            split=a.get("split", str(SplitFractions())), ignored=list(a.get("ignored", [])), verifiable=verifiable,
        )

    def skipped(self) -> dict[str, dict]:
        return dict(self.backend.get_attrs().get("skipped", {}))

    def record_skipped(self, entries: dict[str, dict]) -> None:
        if entries:
            with self._writing():
                self.backend.set_attrs("", {"skipped": {**self.skipped(), **entries}})

    def failed_images(self, paths: list[str], digests: list[str]) -> list[tuple[str, str]]:
        """(path, reason) of the given images whose row failed to decode in any config (decoding
        does not depend on the config)."""
        failed = set()
        for key in self.keys():
            rows = self.row_digests(key)
            status = self._read_tolerant(f"features/{key}/{STATUS}", len(rows), self.chunk_rows(key), np.int8)
            failed.update(d for d, s in zip(rows, status.tolist(), strict=True) if s == FAILED)
        reasons = self.skipped()
        return [(p, reasons.get(d, {}).get("reason", "could not be decoded"))
                for p, d in zip(paths, digests, strict=True) if d in failed]

    # -- feature configs ---------------------------------------------------------------------------
    def keys(self) -> list[str]:
        """The feature configs; a group without its ``config`` attribute (written last) was never finished."""
        return [k for k in self.backend.groups("features") if "config" in self._group_attrs(k)]

    def _group_attrs(self, key: str) -> dict:
        try:
            return self.backend.get_attrs(f"features/{key}")
        except Exception:  # noqa: BLE001  (unreadable group metadata: not a usable config)
            return {}

    def config(self, key: str) -> FeatureConfig:
        return FeatureConfig.from_dict(self.backend.get_attrs(f"features/{key}")["config"])

    def find_config(self, cfg: FeatureConfig) -> str | None:
        """The key of the stored config with the same identity as ``cfg`` (whatever featcache
        version wrote it, so a store of an older version resumes instead of re-extracting)."""
        keys = self.keys()
        if cfg.key in keys:
            return cfg.key
        wanted = cfg.identity()
        for key in keys:
            try:
                if self.config(key).identity() == wanted:
                    return key
            except FeatcacheError:  # an old record that cannot be read as numbers: never a match
                continue
        return None

    def ensure_config(self, cfg: FeatureConfig, dim: int, chunk_rows: int | None = None,
                      batch_size: int | None = None) -> str:
        """The key of ``cfg``'s features, created (empty) if the store has none yet."""
        if (found := self.find_config(cfg)) is not None:
            self._repair_config(found)
            return found
        key, g = cfg.key, f"features/{cfg.key}"
        views = cfg.augment.views
        chunk_rows = chunk_rows or choose_chunk_rows(views, dim, np.dtype(cfg.dtype).itemsize)
        with self._writing():
            if self.backend.exists(g):  # half-made by a killed run: it holds nothing computed
                self.backend.delete(g)
            self._create_arrays(g, views, dim, cfg.dtype, chunk_rows)
            self.backend.set_attrs(g, {"config": cfg.to_dict(), "chunk_rows": chunk_rows, "stats": {},
                                       "featcache_version": __version__, "batch_size": batch_size, "dim": dim,
                                       "checksummed": True})
            self.backend.flush()
        return key

    def _create_arrays(self, g: str, views: int, dim: int, dtype: str, chunk_rows: int) -> None:
        self.backend.create_array(f"{g}/{FEATURES}", (0, views, dim), (chunk_rows, views, dim), dtype, 0)
        self.backend.create_array(f"{g}/{STATUS}", (0,), (chunk_rows,), "int8", PENDING)
        self.backend.create_array(f"{g}/{CHECKSUM}", (0,), (chunk_rows,), "uint32", 0)
        self.backend.write_strings(f"{g}/{DIGEST}", [])

    def verifiable(self, key: str) -> bool:
        """False for a config written before checksums (schema 1). A config that has them but lost
        its checksum array is damaged, not unverifiable."""
        return bool(self._group_attrs(key).get("checksummed"))

    def _repair_config(self, key: str) -> None:
        """A config whose arrays cannot all be read is emptied (everything is recomputed); one of
        schema 1 gets its checksums, computed from its data as it is now."""
        g = f"features/{key}"
        try:
            for name in CONFIG_ARRAYS if self.verifiable(key) else (FEATURES, STATUS, DIGEST):
                self.backend.array_info(f"{g}/{name}")
            _, views, dim = self.backend.shape(f"{g}/{FEATURES}")
        except Exception:  # noqa: BLE001  (missing or unreadable array metadata)
            cfg, attrs = self.config(key), self.backend.get_attrs(g)
            with self._writing():
                for name in CONFIG_ARRAYS:
                    if self.backend.exists(f"{g}/{name}"):
                        self.backend.delete(f"{g}/{name}")
                dim = feature_dim_of(cfg, attrs)
                self._create_arrays(g, cfg.augment.views, dim, cfg.dtype, int(attrs["chunk_rows"]))
                self.backend.set_attrs(g, {"checksummed": True})
                self.backend.flush()
            return
        if not self.verifiable(key):
            self._add_checksums(key, views, dim)

    def _add_checksums(self, key: str, views: int, dim: int) -> None:
        g = f"features/{key}"
        chunk = self.chunk_rows(key)
        digests = self.row_digests(key)
        with self._writing():
            self.backend.create_array(f"{g}/{CHECKSUM}", (self.backend.shape(f"{g}/{STATUS}")[0],), (chunk,), "uint32", 0)
            for start in range(0, self.backend.shape(f"{g}/{STATUS}")[0], chunk):
                sel = slice(start, start + chunk)
                try:
                    status, feats = self.backend.read(f"{g}/{STATUS}", sel), self.backend.read(f"{g}/{FEATURES}", sel)
                except Exception:  # noqa: BLE001  (unreadable: computed again, not blessed)
                    self.backend.write(f"{g}/{STATUS}", sel, np.zeros(min(chunk, len(digests) - start), np.int8))
                    continue
                self.backend.write(f"{g}/{CHECKSUM}", sel, row_checksums(digests[sel], status, feats))
            self.backend.set_attrs(g, {"checksummed": True})  # last: a crash before redoes them
            self.backend.flush()

    def chunk_rows(self, key: str) -> int:
        return int(self.backend.get_attrs(f"features/{key}")["chunk_rows"])

    def batch_size(self, key: str) -> int | None:
        """The forward batch size the config's rows were computed with (None: not recorded)."""
        return self.backend.get_attrs(f"features/{key}").get("batch_size")

    def record_batch_size(self, key: str, batch_size: int) -> None:
        with self._writing():
            self.backend.set_attrs(f"features/{key}", {"batch_size": batch_size})

    def row_digests(self, key: str) -> list[str]:
        return self.backend.read_strings(f"features/{key}/{DIGEST}")

    def status(self, key: str) -> np.ndarray:
        return self.backend.read(f"features/{key}/{STATUS}")

    def plan(self, key: str, digests: list[str]) -> list[WorkUnit]:
        """allocate() then pending_units(): the chunk-aligned units still to compute for ``digests``."""
        self.allocate(key, digests)
        return self.pending_units(key, digests)

    def allocate(self, key: str, digests: list[str]) -> None:
        """Give every new content digest a row, growing the arrays once, by whole chunks (the
        lock holder's job: after it, units can be written by any number of workers)."""
        g = f"features/{key}"
        chunk = self.chunk_rows(key)
        row_digests = self.row_digests(key)
        known = set(row_digests)
        new = sorted({d for d in digests if d not in known})
        names = (FEATURES, STATUS, CHECKSUM) if self.verifiable(key) else (FEATURES, STATUS)
        sizes = {name: self.backend.shape(f"{g}/{name}")[0] for name in names}
        if new:
            # after every existing row, whichever array a killed run left longest, at a chunk boundary
            start = -(-max(len(row_digests), *sizes.values()) // chunk) * chunk
            padded = [""] * (start - len(row_digests)) + new + [""] * (-len(new) % chunk)
            with self._writing():  # digests first: after a crash they are known rows, grown below
                self.backend.write_strings(f"{g}/{DIGEST}", padded, start=len(row_digests))
            row_digests += padded
        for name, size in sizes.items():  # new rows start PENDING (fill value)
            if size < len(row_digests):
                with self._writing():
                    shape = self.backend.shape(f"{g}/{name}")
                    self.backend.resize(f"{g}/{name}", (len(row_digests), *shape[1:]))
        self.backend.flush()

    def pending_units(self, key: str, digests: list[str], chunks: Callable[[int], bool] | None = None
                      ) -> list[WorkUnit]:
        """The chunk-aligned units holding rows of ``digests`` to compute: pending rows, and done
        ones whose stored features fail their checksum (verified here, chunk by chunk). Reads only.
        ``chunks``: which chunk indices to look at (a shard's); default all."""
        g = f"features/{key}"
        chunk = self.chunk_rows(key)
        row_digests = self.row_digests(key)
        mine = chunks or (lambda index: True)
        wanted = set(digests)
        status = self._read_tolerant(f"{g}/{STATUS}", len(row_digests), chunk, np.int8)
        reuse = [r for r in np.flatnonzero(status != PENDING).tolist() if row_digests[r] in wanted and mine(r // chunk)]
        damaged = self._damaged(key, row_digests, reuse) if self.verifiable(key) else set()
        units = []
        for start in range(0, len(row_digests), chunk):
            if not mine(start // chunk):
                continue
            rows = tuple(r for r in range(start, min(start + chunk, len(row_digests)))
                         if row_digests[r] in wanted and (status[r] == PENDING or r in damaged))
            if rows:
                units.append(WorkUnit(key, start, start + chunk, rows, tuple(r for r in rows if r in damaged)))
        return units

    def _read_tolerant(self, name: str, n: int, chunk: int, dtype) -> np.ndarray:
        """A 1-D array of ``n`` values; if it cannot be read whole, chunk by chunk, an unreadable
        (or missing) chunk reading as zeros: pending rows, no checksum."""
        try:
            out = np.asarray(self.backend.read(name), dtype)
            if len(out) == n:
                return out
        except Exception:  # noqa: BLE001
            pass
        out = np.zeros(n, dtype)
        for start in range(0, n, chunk):
            try:
                out[start:start + chunk] = self.backend.read(name, slice(start, start + chunk))
            except Exception:  # noqa: BLE001
                continue
        return out

    def _damaged(self, key: str, row_digests: list[str], rows: list[int]) -> set[int]:
        """Of ``rows`` (done or failed ones), those whose checksum fails or whose chunk cannot be
        read. Reads only the chunks holding them: status, then checksums, then features, so a
        row a concurrent writer has marked done is read with the features written before."""
        g, chunk = f"features/{key}", self.chunk_rows(key)
        asked = set(rows)
        bad: set[int] = set()
        for start in sorted({r // chunk * chunk for r in rows}):
            sel = slice(start, start + chunk)
            try:
                status = self.backend.read(f"{g}/{STATUS}", sel)
                checksum = self.backend.read(f"{g}/{CHECKSUM}", sel)
                feats = self.backend.read(f"{g}/{FEATURES}", sel)
                found = start + damaged_rows(row_digests[sel], status, checksum, feats)
            except Exception:  # noqa: BLE001  (unreadable chunk: every row in it)
                found = range(start, min(start + chunk, len(row_digests)))
            bad.update(r for r in found if r in asked)
        return bad

    def commit_unit(self, unit: WorkUnit, digests: list[str], rows: list[int], features: np.ndarray,
                    failed: list[int]) -> None:
        """Write one unit: ``features`` (len(rows), V, D) of ``rows``, the ``failed`` rows, and the
        region's checksums. ``digests``: the region's row digests. Rows of the region computed
        earlier keep their values if they pass their checksum, else they become pending again."""
        g = f"features/{unit.key}"
        sel = slice(unit.start, unit.stop)
        redone = set(rows) | set(failed)
        others = [r for r in range(unit.start, unit.stop) if r not in redone]
        try:
            status = np.array(self.backend.read(f"{g}/{STATUS}", sel))
            checksum = self.backend.read(f"{g}/{CHECKSUM}", sel)
            region = np.array(self.backend.read(f"{g}/{FEATURES}", sel))
            bad = set((unit.start + damaged_rows(digests, status, checksum, region)).tolist())
        except Exception:  # noqa: BLE001  (unreadable region: what is not recomputed now is next time)
            _, views, dim = self.backend.shape(f"{g}/{FEATURES}")
            region = np.zeros((unit.stop - unit.start, views, dim), self.backend.array_info(f"{g}/{FEATURES}").dtype)
            status = np.zeros(unit.stop - unit.start, np.int8)
            bad = set()
        for r in others:
            if r in bad:
                status[r - unit.start] = PENDING
        if rows:
            at = np.asarray(rows) - unit.start
            region[at] = features
            status[at] = DONE
        status[np.asarray(failed, np.int64) - unit.start] = FAILED
        with self._writing(shared=False):
            self.backend.write(f"{g}/{FEATURES}", sel, region)
            self.backend.write(f"{g}/{CHECKSUM}", sel, row_checksums(digests, status, region))
            self.backend.write(f"{g}/{STATUS}", sel, status)  # last: a crash before leaves the rows pending
            self.backend.flush()

    def read_unit(self, unit: WorkUnit) -> tuple[np.ndarray, np.ndarray]:
        """A unit's stored features and status, verified: damaged rows raise StoreDamagedError."""
        g = f"features/{unit.key}"
        sel = slice(unit.start, unit.stop)
        digests = self.row_digests(unit.key)
        bad = self._damaged(unit.key, digests, list(range(unit.start, unit.stop))) if self.verifiable(unit.key) else set()
        status = self.backend.read(f"{g}/{STATUS}", sel)
        bad = {r for r in bad if status[r - unit.start] != PENDING}
        if bad:
            raise self._damage_error(unit.key, digests, bad)
        return self.backend.read(f"{g}/{FEATURES}", sel), status

    def add_stats(self, key: str, rows: int, images: int, seconds: float) -> None:
        g = f"features/{key}"
        s = dict(self.backend.get_attrs(g).get("stats", {}))
        s["rows"] = s.get("rows", 0) + rows
        s["images"] = s.get("images", 0) + images
        s["seconds"] = round(s.get("seconds", 0.0) + seconds, 3)
        s["images_per_s"] = round(s["images"] / s["seconds"], 2) if s["seconds"] else None
        with self._writing():
            self.backend.set_attrs(g, {"stats": s})

    # -- planning and shards -----------------------------------------------------------------------
    def record_plan(self, keys: list[str]) -> None:
        """What this run planned (the manifest version, the configs' keys): shards check it."""
        with self._writing():
            if not self.backend.exists(SHARDS):  # the group each shard adds its own record to
                self.backend.set_attrs(SHARDS, {})
            self.backend.set_attrs("", {"plan": {"manifest": self.manifest_version(), "keys": sorted(keys)}})
            self.backend.flush()

    def planned(self) -> dict | None:
        return self.backend.get_attrs().get("plan")

    def manifest_version(self) -> str | None:
        return self.backend.get_attrs().get("manifest")

    def shard_record(self, shard: str) -> dict:
        """What shard ``shard`` ("I-of-N") recorded so far (a re-run of a killed shard goes on from it)."""
        g = f"{SHARDS}/{shard}"
        return self.backend.get_attrs(g) if self.backend.exists(g) else {}

    def record_shard(self, shard: str, skipped: dict[str, dict], stats: dict[str, dict]) -> None:
        """A shard's own record, never shared: the images it could not decode and, per config, its
        rows, images and start/finish times. The next full run folds it in (merge_shards)."""
        with self._writing(shared=False):
            self.backend.set_attrs(f"{SHARDS}/{shard}", {"skipped": skipped, "stats": stats})
            self.backend.flush()

    def merge_shards(self) -> list[str]:
        """Fold the shards' records into the store (skip reasons; stats, timed from the first
        shard's start to the last one's finish), then delete them. The shards merged."""
        names = self.backend.groups(SHARDS)
        records = [self.backend.get_attrs(f"{SHARDS}/{n}") for n in names]
        self.record_skipped({d: v for r in records for d, v in r.get("skipped", {}).items()})
        keys = set(self.keys())
        for key in sorted({k for r in records for k in r.get("stats", {})} & keys):
            runs = [r["stats"][key] for r in records if key in r.get("stats", {})]
            self.add_stats(key, sum(s["rows"] for s in runs), sum(s["images"] for s in runs),
                           max(s["finished"] for s in runs) - min(s["started"] for s in runs))
        if names:
            with self._writing():
                for name in names:
                    self.backend.delete(f"{SHARDS}/{name}")
        return names

    def _manifest_rows(self, key: str, manifest: StoredManifest) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(row digests, each image's row or -1, each image's status) for one config."""
        row_digests = self.row_digests(key)
        index = {d: r for r, d in enumerate(row_digests)}
        rows = np.array([index.get(d, -1) for d in manifest.digests], np.int64)
        status = self._read_tolerant(f"features/{key}/{STATUS}", len(row_digests), self.chunk_rows(key), np.int8)
        st = np.where(rows >= 0, status[np.maximum(rows, 0)] if len(status) else PENDING, PENDING).astype(np.int8)
        return row_digests, rows, st

    def config_status(self, key: str, manifest: StoredManifest | None = None) -> ConfigStatus:
        manifest = manifest or self.manifest()
        g = f"features/{key}"
        row_digests, _, st = self._manifest_rows(key, manifest)
        current = set(manifest.digests)
        orphans = sum(1 for d in row_digests if d and d not in current)
        _, views, dim = self.backend.shape(f"{g}/{FEATURES}")
        cfg = self.config(key)
        return ConfigStatus(
            key=key, config=cfg, rows=len(manifest), done=int((st == DONE).sum()),
            failed=int((st == FAILED).sum()), pending=int((st == PENDING).sum()), views=views, dim=dim,
            dtype=cfg.dtype, nbytes=self.backend.nbytes_on_disk(g), stats=self.backend.get_attrs(g).get("stats", {}),
            orphans=orphans, verifiable=self.verifiable(key),
        )

    def damaged(self, key: str) -> set[int]:
        """Every row of an image (pending rows aside) that fails its checksum or lies in a chunk that
        cannot be read (empty when the config is not verifiable)."""
        if not self.verifiable(key):
            return set()
        digests = self.row_digests(key)
        return self._damaged(key, digests, [r for r, d in enumerate(digests) if d])

    def _damage_error(self, key: str, row_digests: list[str], rows: set[int]):
        try:
            manifest = self.manifest()
            bad = {row_digests[r] for r in rows}
            images = [p for p, d in zip(manifest.paths, manifest.digests, strict=True) if d in bad]
            root = manifest.data_root
        except FeatcacheError:
            images, root = [], "DATA_DIR"
        return damaged_features(self.path, key, images, root, orphans=len(rows))

    # -- reading -----------------------------------------------------------------------------------
    def resolve_key(self, name: str) -> str:
        """A full key, or a backbone's label (its name, or ``name.tap`` for a tap: a name alone
        never means a tap of it) when the store holds exactly one config of it."""
        keys = self.keys()
        if name in keys:
            return name
        matches = [k for k in keys if self.config(k).backbone.label == name]
        if len(matches) == 1:
            return matches[0]
        if not keys:
            raise FeatcacheError(f"{self.path} holds no features yet; run `featcache extract` first")
        if not matches:
            raise FeatcacheError(f"{self.path} has no features for {name!r}; it has: {', '.join(keys)}")
        raise FeatcacheError(f"{self.path} has several configs of {name!r}: {', '.join(matches)}; pass the full key")

    def load(self, names: list[str], allow_incomplete: bool = False) -> FeatureSet:
        """Features of every usable image for one or more configs (several are concatenated),
        verified against their checksums: damaged rows raise StoreDamagedError naming the images."""
        keys = [self.resolve_key(n) for n in names]
        manifest = self.manifest()
        usable = np.ones(len(manifest), bool)
        blocks = []
        for key in keys:
            row_digests, rows, st = self._manifest_rows(key, manifest)
            pending = int((st == PENDING).sum())
            if pending and not allow_incomplete:
                raise FeatcacheError(
                    f"features {key} are incomplete: {pending} of {len(manifest)} images not extracted yet. "
                    f"Resume with `featcache extract {manifest.data_root} --store {self.path} ...` "
                    "(the same options as before)"
                )
            usable &= st == DONE
            # failed rows are verified too: a row turned "failed" would silently drop its image
            checked = np.flatnonzero(st != PENDING)
            blocks.append((key, self._verified_rows(key, row_digests, rows[checked], st[checked]), checked))
        views = min(self.backend.shape(f"features/{k}/{FEATURES}")[1] for k, _, _ in blocks)
        idx = np.flatnonzero(usable)
        parts = [(feats if len(checked) == len(idx) else feats[np.searchsorted(checked, idx)])[:, :views]
                 .astype(np.float32) for _, feats, checked in blocks]
        return FeatureSet(
            keys=keys, configs=[self.config(k) for k in keys], classes=manifest.classes,
            features=np.concatenate(parts, axis=-1) if parts else np.zeros((0, views, 0), np.float32),
            labels=manifest.labels[idx], splits=manifest.splits[idx],
            paths=[manifest.paths[i] for i in idx], digests=[manifest.digests[i] for i in idx],
        )

    def _verified_rows(self, key: str, row_digests: list[str], rows: np.ndarray, status: np.ndarray) -> np.ndarray:
        """The stored features of ``rows`` (done or failed rows, of that ``status``: read first),
        after checking their checksums."""
        g = f"features/{key}"
        verifiable = self.verifiable(key)
        try:  # whole arrays: heads need it all in memory. Checksums, then features (see _damaged)
            checksum = self.backend.read(f"{g}/{CHECKSUM}")[rows] if verifiable else None
            feats = self.backend.read(f"{g}/{FEATURES}")[rows]
        except Exception:  # noqa: BLE001  (a chunk that cannot be read: find every damaged row)
            raise self._damage_error(key, row_digests, self._damaged(key, row_digests, rows.tolist())) from None
        if verifiable:
            bad = damaged_rows([row_digests[r] for r in rows], status, checksum, feats)
            if len(bad):
                raise self._damage_error(key, row_digests, set(rows[bad].tolist()))
        return feats


def feature_dim_of(cfg: FeatureConfig, attrs: dict) -> int:
    """D of a config whose features array is lost: as recorded, else from the backbone's spec."""
    if "dim" in attrs:
        return int(attrs["dim"])
    from ..backbones.model import known_feature_dim

    dim = known_feature_dim(cfg.backbone)
    if dim is None:  # flatten: only the model knows it
        raise FeatcacheError(f"the features array of {cfg.key} is lost and its size was not recorded; "
                             "extract into a new store")
    return dim

"""One feature-store schema over any Backend (Zarr or HDF5): ``FeatureStore``, the facade callers open.

The store in layers: ``FeatureStore`` (this file) holds the lifecycle (who may write, the commit,
the schema check), the skip record and the list of groups; ``manifests.py`` the manifest log;
``store[key]`` a ``ConfigGroup`` (group.py: its arrays, allocation, work units, commit,
verification); ``shard_records.py`` what a sharded run records; ``store.rows(names)`` the one read
path (view.py: a verified, lazy view of the usable rows).

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

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .. import __version__
from ..config import FeatureConfig
from ..errors import FeatcacheError, ParameterError, Remedy, Step
from ..ingest.scan import SPLITS, Manifest, SkippedImage
from .backend import Backend
from .errors import write_errors
from .group import GROUPS, ConfigGroup, ConfigStatus, ExtractStats, WorkUnit, choose_chunk_rows
from .lock import ShardLock, StoreLock
from .manifests import ManifestLog, StoredManifest
from .schema import DONE, FAILED, PENDING, READABLE_SCHEMAS, SCHEMA_VERSION
from .shard_records import ShardRecords, skips_from_record, skips_record
from .view import FeatureRows, open_rows

__all__ = ["DONE", "FAILED", "PENDING", "SCHEMA_VERSION", "ConfigGroup", "ConfigStatus", "ExtractStats",
           "FeatureRows", "FeatureSet", "FeatureStore", "StoredManifest", "WorkUnit", "choose_chunk_rows"]


@dataclass(frozen=True)
class FeatureSet:
    """A view's rows materialised (``FeatureRows.load()`` and its labels): what an audit holds."""

    keys: list[str]
    configs: list[FeatureConfig]
    classes: list[str]
    features: np.ndarray  # (n, V, D) float32
    labels: np.ndarray  # (n,)
    splits: np.ndarray  # (n,)
    paths: list[str]
    digests: list[str]
    label_sets: np.ndarray | None = None  # multi-label: (n, classes) uint8 multi-hot; None: single-label

    @classmethod
    def of(cls, rows: FeatureRows) -> FeatureSet:
        return cls(rows.keys, rows.configs, rows.classes, rows.load(), rows.labels, rows.splits, rows.paths,
                   rows.digests, rows.label_sets)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        mask = self.splits == SPLITS.index(name)
        return self.features[mask], self.labels[mask]

    def indices(self, name: str) -> np.ndarray:
        return np.flatnonzero(self.splits == SPLITS.index(name))


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
        self._closed = False
        self.manifests = ManifestLog(self)
        self.shards = ShardRecords(self)

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def token(self) -> str | None:
        """The run token workers of this writer open the store with (``open_store(..., token=)``)."""
        return self.lock.token if isinstance(self.lock, StoreLock) else None

    def close(self) -> None:
        if self._closed:  # a second close (a TrainingData closed twice) does nothing
            return
        self._closed = True
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

    # -- the image list (manifests.py) ---------------------------------------------------------------
    def manifest(self) -> StoredManifest:
        return self.manifests.read()

    def write_manifest(self, m: Manifest) -> bool:
        """Make ``m`` the store's image list; False when it already is (then nothing is written)."""
        return self.manifests.write(m)

    # -- skipped images ------------------------------------------------------------------------------
    def skipped(self) -> dict[str, SkippedImage]:
        """{digest: why} of the images that could not be decoded."""
        return skips_from_record(self.backend.get_attrs().get("skipped", {}))

    def record_skipped(self, entries: dict[str, SkippedImage]) -> None:
        if entries:
            with self._writing():
                self.backend.set_attrs("", {"skipped": skips_record({**self.skipped(), **entries})})

    def failed_images(self, paths: list[str], digests: list[str]) -> list[tuple[str, str]]:
        """(path, reason) of the given images whose row failed to decode in any config (decoding
        does not depend on the config). A config whose record fails its digest is not asked."""
        failed = set()
        for group in (self[key] for key in self.keys()):
            if not group.record_intact():
                continue
            try:
                rows = group.row_digests()
            except FeatcacheError:  # a config that lost its digests says nothing about decoding
                continue
            failed.update(d for d, s in zip(rows, group.status_tolerant(len(rows)).tolist(), strict=True)
                          if s == FAILED)
        reasons = self.skipped()
        return [(p, reasons[d].reason if d in reasons else "could not be decoded")
                for p, d in zip(paths, digests, strict=True) if d in failed]

    # -- feature configs (group.py) ------------------------------------------------------------------
    def __getitem__(self, key: str) -> ConfigGroup:
        """The group of config ``key`` (an exact key; ``resolve_key`` turns a backbone label into one)."""
        return ConfigGroup(self, key)

    def keys(self) -> list[str]:
        """The feature configs; a group without its ``config`` attribute (written last) was never finished."""
        return [k for k in self.backend.groups(GROUPS) if self[k].finished]

    def config(self, key: str) -> FeatureConfig:
        return self[key].config()

    def config_status(self, key: str, manifest: StoredManifest | None = None) -> ConfigStatus:
        return self[key].summary(manifest or self.manifest())

    def find_config(self, cfg: FeatureConfig) -> str | None:
        """The key of the stored config with the same identity as ``cfg`` (whatever featcache
        version wrote it, so a store of an older version resumes instead of re-extracting). A group
        whose record was changed after its rows were made is no match: what they hold is unknown, so
        ``ensure_config`` makes it again, empty, under the record asked for."""
        keys = self.keys()
        if cfg.key in keys:
            return cfg.key if self[cfg.key].record_intact() else None
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
            self[found].repair()
            return found
        self[cfg.key].create(cfg, dim, chunk_rows, batch_size)
        return cfg.key

    def commit_unit(self, unit: WorkUnit, digests: list[str], rows: list[int], features: np.ndarray,
                    failed: list[int]) -> None:
        """A unit names its group: ``store[unit.key].commit_unit(...)``."""
        self[unit.key].commit_unit(unit, digests, rows, features, failed)

    # -- reading (view.py) ---------------------------------------------------------------------------
    def resolve_key(self, name: str | None = None) -> str:
        """A full key, a unique prefix of one, or a backbone's label (its name, or ``name.tap`` for a
        tap: a name alone never means a tap of it). Of several configs of one label, the one complete
        config is chosen (an empty one a failed run left never competes). ``None``: the store's one
        config, or its one complete config."""
        keys = self.keys()
        if name in keys:
            return name
        if not keys:
            raise FeatcacheError(f"{self.path} holds no features yet", remedy=Remedy(
                "run {} first", Step.of("extract", data_dir="DATA_DIR", store=self.path)))
        if name is None or name == "":
            matches, what = keys, "configurations"
        else:
            matches = [k for k in keys if self.config(k).backbone.label == name]
            matches = matches or [k for k in keys if k.startswith(name)]
            what = f"configurations of {name!r}"
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise FeatcacheError(f"{self.path} has no features for {name!r}; it has: {', '.join(keys)}")
        manifest = self.manifest()
        done = {k: self[k].summary(manifest) for k in matches}
        complete = [k for k in matches if done[k].complete and done[k].done]
        if len(complete) == 1:
            return complete[0]
        listed = ", ".join(f"{k} ({done[k].done}/{done[k].rows} done)" for k in matches)
        raise FeatcacheError(f"{self.path} has several {what}: {listed}",
                             remedy="name one by its key (a unique start of it is enough)")

    def remove_config(self, key: str) -> ConfigStatus | None:
        """Remove config ``key`` (an exact key) and its features; its status before removal is returned.
        Crash-safe: a Zarr group is renamed away before it is deleted, an HDF5 store is rewritten
        and renamed into place at the commit. Needs the writer's lock (mode "a")."""
        keys = self.keys()
        if key not in keys:
            raise ParameterError("key", f"{self.path} has no configuration {key!r}; it has: "
                                        f"{', '.join(keys) or 'none'}")
        try:
            status = self[key].summary(self.manifest())
        except Exception:  # noqa: BLE001  (a damaged manifest or group does not stop its removal)
            status = None
        with self._writing():
            if (plan := self.shards.planned()) and key in plan.get("keys", []):  # shards must not look for it
                self.backend.set_attrs("", {"plan": {**plan, "keys": [k for k in plan["keys"] if k != key]}})
            self.backend.delete(self[key].name)
            self.backend.flush()
        return status

    def rows(self, names: list[str], allow_incomplete: bool = False) -> FeatureRows:
        """A verified, lazy view of the usable images of one or more configs (concatenated along
        D): nothing is read until asked; every chunk read is checked against its checksums."""
        return open_rows(self, names, allow_incomplete)

    def load(self, names: list[str], allow_incomplete: bool = False) -> FeatureSet:
        """``rows(names).load()`` with its labels, splits and paths: every usable image in memory."""
        return FeatureSet.of(self.rows(names, allow_incomplete))

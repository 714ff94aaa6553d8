"""One feature configuration's group of a store (``store[key]``): its arrays, its rows and their work.

A group owns the names of its arrays (``features/<key>/...``: nothing outside stores/ builds one),
their allocation by whole chunks, the work units still to compute, the commit of a unit
(features, then checksums, then status) and the verification of its rows. See store.py for the
layout and the guarantees; view.py reads a group's usable rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .. import __version__
from ..config import FeatureConfig
from ..errors import FeatcacheError
from .checksum import damaged_rows, record_digest, row_checksums
from .errors import damaged_array, damaged_features, damaged_record
from .schema import CHECKSUM, CONFIG_ARRAYS, DIGEST, DONE, FAILED, FEATURES, PENDING, STATUS

if TYPE_CHECKING:
    from .manifests import StoredManifest
    from .store import FeatureStore

GROUPS = "features"  # the group holding one sub-group per feature configuration
# what says how a config's rows were made and are laid out: bound by its record_digest
RECORD = ("config", "chunk_rows", "dim", "batch_size", "checksummed")


@dataclass(frozen=True)
class WorkUnit:
    """A chunk-aligned row range of one feature config with rows still to compute."""

    key: str
    start: int
    stop: int
    rows: tuple[int, ...]  # rows to compute inside [start, stop): pending ones and damaged ones
    repairs: tuple[int, ...] = ()  # of those, rows computed before whose stored data is damaged


@dataclass(frozen=True)
class ExtractStats:
    """What extraction recorded for a config: rows computed, images through the backbone (rows x
    views: the stored record's name for forward passes), seconds."""

    rows: int = 0
    images: int = 0
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float | None:
        """Rows (images, every view included) per second."""
        return round(self.rows / self.seconds, 2) if self.seconds else None

    @property
    def views_per_s(self) -> float | None:
        """Forward passes per second: the backbone's throughput, whatever the number of views."""
        return round(self.images / self.seconds, 2) if self.seconds else None

    def plus(self, rows: int, images: int, seconds: float) -> ExtractStats:
        return ExtractStats(self.rows + rows, self.images + images, round(self.seconds + seconds, 3))

    def to_dict(self) -> dict:
        return {"rows": self.rows, "images": self.images, "seconds": self.seconds, "images_per_s": self.images_per_s,
                "views_per_s": self.views_per_s}

    @classmethod
    def from_dict(cls, d: dict | None) -> ExtractStats:
        d = d or {}
        return cls(int(d.get("rows", 0)), int(d.get("images", 0)), float(d.get("seconds", 0.0)))


@dataclass(frozen=True)
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
    stats: ExtractStats = field(default_factory=lambda: ExtractStats())  # what extraction recorded
    orphans: int = 0  # stored rows no current image maps to (removed or changed files)
    verifiable: bool = True  # False: written before checksums (schema 1) and not extracted since

    @property
    def complete(self) -> bool:
        return self.pending == 0

    @property
    def empty(self) -> bool:
        """Nothing extracted for any current image: what a run that stopped before its first unit left."""
        return self.rows > 0 and self.done == 0 and self.failed == 0

    @property
    def state(self) -> str:
        return "empty" if self.empty else "complete" if self.complete else "partial"


def choose_chunk_rows(views: int, dim: int, itemsize: int, target_bytes: int = 2 << 20) -> int:
    rows = max(16, target_bytes // max(1, views * dim * itemsize))
    return int(2 ** int(np.log2(rows)))


class ConfigGroup:
    """``features/<key>/`` of ``store``: made by ``store[key]`` (or ``store.ensure_config``)."""

    def __init__(self, store: FeatureStore, key: str):
        self.store, self.key = store, key
        self.backend = store.backend
        self.name = f"{GROUPS}/{key}"

    def __repr__(self) -> str:
        return f"ConfigGroup({self.store.path}, {self.key!r})"

    def array(self, name: str) -> str:
        """The backend path of one of the group's arrays (schema.CONFIG_ARRAYS)."""
        return f"{self.name}/{name}"

    # -- record --------------------------------------------------------------------------------------
    def attrs(self) -> dict:
        try:
            return self.backend.get_attrs(self.name)
        except Exception:  # noqa: BLE001  (unreadable group metadata: not a usable config)
            return {}

    @property
    def finished(self) -> bool:
        """A group counts once its ``config`` attribute is written (last): a half-made one is redone."""
        return "config" in self.attrs()

    def record(self) -> dict:
        """The group's attributes, its record verified: a record changed after the rows were made
        (preprocessing, input size, seed, chunk layout) no longer says what they are, and is refused."""
        attrs = self.backend.get_attrs(self.name)
        if "record_digest" in attrs and record_digest(_record_of(attrs)) != attrs["record_digest"]:
            raise damaged_record(self.store.path, self.key, self._data_root())
        return attrs

    def record_intact(self) -> bool:
        try:
            self.record()
        except FeatcacheError:
            return False
        return True

    def _set_record(self, changes: dict) -> None:
        """Write attributes, the record's digest with them (one write)."""
        attrs = {**self.attrs(), **changes}
        self.backend.set_attrs(self.name, {**changes, "record_digest": record_digest(_record_of(attrs))})

    def config(self) -> FeatureConfig:
        return FeatureConfig.from_dict(self.record()["config"])

    def chunk_rows(self) -> int:
        return int(self.record()["chunk_rows"])

    def batch_size(self) -> int | None:
        """The forward batch size the config's rows were computed with (None: not recorded)."""
        return self.record().get("batch_size")

    def record_batch_size(self, batch_size: int) -> None:
        with self.store._writing():
            self._set_record({"batch_size": batch_size})

    def verifiable(self) -> bool:
        """False for a config written before checksums (schema 1). A config that has them but lost
        its checksum array is damaged, not unverifiable."""
        return bool(self.attrs().get("checksummed"))

    def stats(self) -> ExtractStats:
        return ExtractStats.from_dict(self.attrs().get("stats"))

    def add_stats(self, rows: int, images: int, seconds: float) -> None:
        s = self.stats().plus(rows, images, seconds)
        with self.store._writing():
            self.backend.set_attrs(self.name, {"stats": s.to_dict()})

    # -- arrays --------------------------------------------------------------------------------------
    def shape(self) -> tuple[int, int, int]:
        """(stored rows M, views V, feature size D)."""
        try:
            return tuple(self.backend.shape(self.array(FEATURES)))
        except Exception as exc:  # noqa: BLE001  (lost or unreadable array metadata)
            raise damaged_array(self.store.path, self.key, FEATURES, self._data_root(), exc) from exc

    def dtype(self) -> np.dtype:
        return np.dtype(self.backend.array_info(self.array(FEATURES)).dtype)

    def row_digests(self) -> list[str]:
        try:
            return self.backend.read_strings(self.array(DIGEST))
        except Exception as exc:  # noqa: BLE001  (a lost or unreadable array: the config's rows are unknown)
            raise damaged_array(self.store.path, self.key, DIGEST, self._data_root(), exc) from exc

    def status(self) -> np.ndarray:
        return self.backend.read(self.array(STATUS))

    def read_rows(self, sel: slice, checksums: bool) -> tuple[np.ndarray | None, np.ndarray]:
        """(checksums or None, features) of a row range: checksums first, then features (a row a
        concurrent writer marks done is read with the features written before its status)."""
        checksum = self.backend.read(self.array(CHECKSUM), sel) if checksums else None
        return checksum, self.backend.read(self.array(FEATURES), sel)

    def status_tolerant(self, n: int | None = None) -> np.ndarray:
        """The status of every stored row; a chunk that cannot be read (or is missing) reads as
        pending rows (no checksum)."""
        n = len(self.row_digests()) if n is None else n
        name, chunk = self.array(STATUS), self.chunk_rows()
        try:
            out = np.asarray(self.backend.read(name), np.int8)
            if len(out) == n:
                return out
        except Exception:  # noqa: BLE001
            pass
        out = np.zeros(n, np.int8)
        for start in range(0, n, chunk):
            try:
                out[start:start + chunk] = self.backend.read(name, slice(start, start + chunk))
            except Exception:  # noqa: BLE001
                continue
        return out

    def manifest_rows(self, manifest: StoredManifest) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(row digests, each manifest image's row or -1, each image's status)."""
        row_digests = self.row_digests()
        index = {d: r for r, d in enumerate(row_digests)}
        rows = np.array([index.get(d, -1) for d in manifest.digests], np.int64)
        status = self.status_tolerant(len(row_digests))
        st = np.where(rows >= 0, status[np.maximum(rows, 0)] if len(status) else PENDING, PENDING).astype(np.int8)
        return row_digests, rows, st

    def summary(self, manifest: StoredManifest) -> ConfigStatus:
        row_digests, _, st = self.manifest_rows(manifest)
        current = set(manifest.digests)
        _, views, dim = self.shape()
        cfg = self.config()
        return ConfigStatus(
            key=self.key, config=cfg, rows=len(manifest), done=int((st == DONE).sum()),
            failed=int((st == FAILED).sum()), pending=int((st == PENDING).sum()), views=views, dim=dim,
            dtype=cfg.dtype, nbytes=self.backend.nbytes_on_disk(self.name), stats=self.stats(),
            orphans=sum(1 for d in row_digests if d and d not in current), verifiable=self.verifiable(),
        )

    # -- creation and repair -------------------------------------------------------------------------
    def create(self, cfg: FeatureConfig, dim: int, chunk_rows: int | None, batch_size: int | None) -> None:
        """Empty arrays and the record (``config`` last: until then the group does not count)."""
        views = cfg.augment.views
        chunk_rows = chunk_rows or choose_chunk_rows(views, dim, np.dtype(cfg.dtype).itemsize)
        with self.store._writing():
            if self.backend.exists(self.name):  # half-made by a killed run: it holds nothing computed
                self.backend.delete(self.name)
            self._create_arrays(views, dim, cfg.dtype, chunk_rows)
            self._set_record({"config": cfg.to_dict(), "chunk_rows": chunk_rows, "stats": {},
                              "featcache_version": __version__, "batch_size": batch_size, "dim": dim,
                              "checksummed": True})
            self.backend.flush()

    def _create_arrays(self, views: int, dim: int, dtype: str, chunk_rows: int) -> None:
        self.backend.create_array(self.array(FEATURES), (0, views, dim), (chunk_rows, views, dim), dtype, 0)
        self.backend.create_array(self.array(STATUS), (0,), (chunk_rows,), "int8", PENDING)
        self.backend.create_array(self.array(CHECKSUM), (0,), (chunk_rows,), "uint32", 0)
        self.backend.write_strings(self.array(DIGEST), [])

    def check_arrays(self) -> list[str]:
        """The group's arrays whose metadata cannot be read (problems for ``featcache verify``)."""
        problems = []
        for name in CONFIG_ARRAYS if self.verifiable() else ():
            try:
                self.backend.array_info(self.array(name))
            except Exception as exc:  # noqa: BLE001  (whatever the storage library raises: unreadable)
                problems.append(f"{self.array(name)} cannot be read ({type(exc).__name__})")
        return problems

    def repair(self) -> None:
        """A config whose arrays cannot all be read is emptied (everything is recomputed); one of
        schema 1 gets its checksums, computed from its data as it is now."""
        try:
            for name in CONFIG_ARRAYS if self.verifiable() else (FEATURES, STATUS, DIGEST):
                self.backend.array_info(self.array(name))
            _, views, dim = self.shape()
        except Exception:  # noqa: BLE001  (missing or unreadable array metadata)
            cfg, attrs = self.config(), self.backend.get_attrs(self.name)
            with self.store._writing():
                for name in CONFIG_ARRAYS:
                    if self.backend.exists(self.array(name)):
                        self.backend.delete(self.array(name))
                dim = feature_dim_of(cfg, attrs)
                self._create_arrays(cfg.augment.views, dim, cfg.dtype, int(attrs["chunk_rows"]))
                self._set_record({"checksummed": True})
                self.backend.flush()
            return
        if not self.verifiable():
            self._add_checksums()
        elif "record_digest" not in self.attrs():  # recorded before records had digests: bind it now
            with self.store._writing():
                self._set_record({})
                self.backend.flush()

    def _add_checksums(self) -> None:
        chunk, digests = self.chunk_rows(), self.row_digests()
        n = self.backend.shape(self.array(STATUS))[0]
        with self.store._writing():
            self.backend.create_array(self.array(CHECKSUM), (n,), (chunk,), "uint32", 0)
            for start in range(0, n, chunk):
                sel = slice(start, start + chunk)
                try:
                    status = self.backend.read(self.array(STATUS), sel)
                    feats = self.backend.read(self.array(FEATURES), sel)
                except Exception:  # noqa: BLE001  (unreadable: computed again, not blessed)
                    self.backend.write(self.array(STATUS), sel, np.zeros(min(chunk, len(digests) - start), np.int8))
                    continue
                self.backend.write(self.array(CHECKSUM), sel, row_checksums(digests[sel], status, feats))
            self._set_record({"checksummed": True})  # last: a crash before redoes them
            self.backend.flush()

    # -- work ----------------------------------------------------------------------------------------
    def plan(self, digests: list[str]) -> list[WorkUnit]:
        """allocate() then pending_units(): the chunk-aligned units still to compute for ``digests``."""
        self.allocate(digests)
        return self.pending_units(digests)

    def allocate(self, digests: list[str]) -> None:
        """Give every new content digest a row, growing the arrays once, by whole chunks (the
        lock holder's job: after it, units can be written by any number of workers)."""
        chunk = self.chunk_rows()
        row_digests = self.row_digests()
        known = set(row_digests)
        new = sorted({d for d in digests if d not in known})
        names = (FEATURES, STATUS, CHECKSUM) if self.verifiable() else (FEATURES, STATUS)
        sizes = {name: self.backend.shape(self.array(name))[0] for name in names}
        if new:
            # after every existing row, whichever array a killed run left longest, at a chunk boundary
            start = -(-max(len(row_digests), *sizes.values()) // chunk) * chunk
            padded = [""] * (start - len(row_digests)) + new + [""] * (-len(new) % chunk)
            with self.store._writing():  # digests first: after a crash they are known rows, grown below
                self.backend.write_strings(self.array(DIGEST), padded, start=len(row_digests))
            row_digests += padded
        for name, size in sizes.items():  # new rows start PENDING (fill value)
            if size < len(row_digests):
                with self.store._writing():
                    shape = self.backend.shape(self.array(name))
                    self.backend.resize(self.array(name), (len(row_digests), *shape[1:]))
        self.backend.flush()

    def pending_units(self, digests: list[str], chunks: Callable[[int], bool] | None = None) -> list[WorkUnit]:
        """The chunk-aligned units holding rows of ``digests`` to compute: pending rows, and done
        ones whose stored features fail their checksum (verified here, chunk by chunk). Reads only.
        ``chunks``: which chunk indices to look at (a shard's); default all."""
        chunk = self.chunk_rows()
        row_digests = self.row_digests()
        mine = chunks or (lambda index: True)
        wanted = set(digests)
        status = self.status_tolerant(len(row_digests))
        reuse = [r for r in np.flatnonzero(status != PENDING).tolist() if row_digests[r] in wanted and mine(r // chunk)]
        damaged = self.damaged_among(row_digests, reuse) if self.verifiable() else set()
        units = []
        for start in range(0, len(row_digests), chunk):
            if not mine(start // chunk):
                continue
            rows = tuple(r for r in range(start, min(start + chunk, len(row_digests)))
                         if row_digests[r] in wanted and (status[r] == PENDING or r in damaged))
            if rows:
                units.append(WorkUnit(self.key, start, start + chunk, rows, tuple(r for r in rows if r in damaged)))
        return units

    def commit_unit(self, unit: WorkUnit, digests: list[str], rows: list[int], features: np.ndarray,
                    failed: list[int]) -> None:
        """Write one unit: ``features`` (len(rows), V, D) of ``rows``, the ``failed`` rows, and the
        region's checksums. ``digests``: the region's row digests. Rows of the region computed
        earlier keep their values if they pass their checksum, else they become pending again."""
        sel = slice(unit.start, unit.stop)
        redone = set(rows) | set(failed)
        others = [r for r in range(unit.start, unit.stop) if r not in redone]
        try:
            status = np.array(self.backend.read(self.array(STATUS), sel))
            checksum = self.backend.read(self.array(CHECKSUM), sel)
            region = np.array(self.backend.read(self.array(FEATURES), sel))
            bad = set((unit.start + damaged_rows(digests, status, checksum, region)).tolist())
        except Exception:  # noqa: BLE001  (unreadable region: what is not recomputed now is next time)
            _, views, dim = self.shape()
            region = np.zeros((unit.stop - unit.start, views, dim), self.dtype())
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
        with self.store._writing(shared=False):
            self.backend.write(self.array(FEATURES), sel, region)
            self.backend.write(self.array(CHECKSUM), sel, row_checksums(digests, status, region))
            self.backend.write(self.array(STATUS), sel, status)  # last: a crash before leaves the rows pending
            self.backend.flush()

    # -- verification --------------------------------------------------------------------------------
    def damaged_among(self, row_digests: list[str], rows: list[int]) -> set[int]:
        """Of ``rows`` (done or failed ones), those whose checksum fails or whose chunk cannot be
        read. Reads only the chunks holding them: status, then checksums, then features."""
        chunk = self.chunk_rows()
        asked = set(rows)
        bad: set[int] = set()
        for start in sorted({r // chunk * chunk for r in rows}):
            sel = slice(start, start + chunk)
            try:
                status = self.backend.read(self.array(STATUS), sel)
                checksum, feats = self.read_rows(sel, checksums=True)
                found = start + damaged_rows(row_digests[sel], status, checksum, feats)
            except Exception:  # noqa: BLE001  (unreadable chunk: every row in it)
                found = range(start, min(start + chunk, len(row_digests)))
            bad.update(r for r in found if r in asked)
        return bad

    def damaged(self) -> set[int]:
        """Every row of an image (pending rows aside) that fails its checksum or lies in a chunk that
        cannot be read (empty when the config is not verifiable)."""
        if not self.verifiable():
            return set()
        digests = self.row_digests()
        return self.damaged_among(digests, [r for r, d in enumerate(digests) if d])

    def check_failed(self, row_digests: list[str], failed: np.ndarray) -> None:
        """Failed rows carry no features: their checksums bind digest and status only, so they are
        verified from the small arrays (a row turned "failed" would silently drop its image)."""
        if not len(failed) or not self.verifiable():
            return
        try:
            checksum = self.backend.read(self.array(CHECKSUM))[failed]
            stat = self.backend.read(self.array(STATUS))[failed]
        except Exception:  # noqa: BLE001  (an unreadable chunk: find every damaged row)
            raise self.damage_error(row_digests, self.damaged_among(row_digests, failed.tolist())) from None
        bad = damaged_rows([row_digests[r] for r in failed], stat, checksum, np.zeros((len(failed), 1, 1), np.uint8))
        if len(bad):
            raise self.damage_error(row_digests, set(failed[bad].tolist()))

    def damage_error(self, row_digests: list[str], rows, manifest: StoredManifest | None = None) -> FeatcacheError:
        """StoreDamagedError naming the images whose rows are ``rows``."""
        bad = {row_digests[r] for r in rows}
        try:
            manifest = manifest or self.store.manifest()
            images = [p for p, d in zip(manifest.paths, manifest.digests, strict=True) if d in bad]
        except FeatcacheError:
            images = []
        return damaged_features(self.store.path, self.key, images, self._data_root(manifest), orphans=len(bad))

    def _data_root(self, manifest: StoredManifest | None = None) -> str:
        """Where the images are, for a remedy (DATA_DIR where the image list cannot say)."""
        try:
            return (manifest or self.store.manifest()).data_root
        except FeatcacheError:
            return "DATA_DIR"


def _record_of(attrs: dict) -> dict:
    return {k: attrs.get(k) for k in RECORD}


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


__all__ = ["GROUPS", "ConfigGroup", "ConfigStatus", "ExtractStats", "WorkUnit", "choose_chunk_rows"]

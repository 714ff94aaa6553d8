"""One feature-store schema over any Backend (Zarr or HDF5).

Layout::

    /                       attrs: featcache_schema, featcache_version, classes, data_root,
                                   presplit, split, skipped {digest: {path, reason}}, ignored
    /images/path            (N,) str    relative path of manifest entry i
    /images/label           (N,) int32
    /images/split           (N,) int8   0 train, 1 validation, 2 test
    /images/digest          (N,) str    content digest
    /features/<key>/        attrs: config (FeatureConfig), chunk_rows, stats
        features            (M, V, D)   chunked (chunk_rows, V, D): V = 1 + K views, view 0 un-augmented
        digest              (M,) str    which image content row r holds ("" = unused)
        status              (M,) int8   0 pending, 1 done, 2 failed (image could not be decoded)

Feature rows are addressed by image CONTENT, not by position in the manifest: adding, renaming or
removing files never moves or loses a computed row, identical files share one, and the manifest
(rewritten on every run) maps each image to its row through its digest. New rows are allocated
once per run, starting at a chunk boundary, so every unit of work is a chunk-aligned row range
that one worker can compute and write on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import __version__
from ..config import FeatureConfig
from ..errors import FeatcacheError, ParameterError
from ..ingest.scan import SPLITS, Manifest, SplitFractions
from .backend import Backend

SCHEMA_VERSION = 1
PENDING, DONE, FAILED = 0, 1, 2


@dataclass(frozen=True)
class WorkUnit:
    """A chunk-aligned row range of one feature config with rows still to compute."""

    key: str
    start: int
    stop: int
    rows: tuple[int, ...]  # pending rows inside [start, stop)


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


class FeatureStore:
    def __init__(self, backend: Backend):
        self.backend = backend
        self.path = backend.path

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        self.backend.close()

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
            self.backend.set_attrs("", {"featcache_schema": SCHEMA_VERSION, "featcache_version": __version__})
        elif attrs["featcache_schema"] != SCHEMA_VERSION:
            raise FeatcacheError(
                f"{self.path} has store schema {attrs['featcache_schema']}, this featcache reads schema "
                f"{SCHEMA_VERSION}; extract into a new store"
            )

    # -- manifest ----------------------------------------------------------------------------------
    def write_manifest(self, m: Manifest) -> None:
        self.backend.write_strings("images/path", m.paths)
        self.backend.write_strings("images/digest", m.digests)
        self.backend.create_array("images/label", (len(m),), (max(1, len(m)),), "int32", 0)
        self.backend.write("images/label", slice(None), m.labels.astype(np.int32))
        self.backend.create_array("images/split", (len(m),), (max(1, len(m)),), "int8", 0)
        self.backend.write("images/split", slice(None), m.splits.astype(np.int8))
        self.backend.set_attrs("", {"classes": m.classes, "data_root": m.root, "presplit": m.presplit,
                              "split": str(m.split_fractions), "ignored": m.ignored[:1000]})
        self.backend.flush()

    def manifest(self) -> StoredManifest:
        if not self.backend.exists("images/path"):
            raise FeatcacheError(f"{self.path} holds no images yet; run `featcache extract DATA_DIR --store {self.path}`")
        a = self.backend.get_attrs()
        return StoredManifest(
            classes=list(a["classes"]), paths=self.backend.read_strings("images/path"),
            labels=self.backend.read("images/label").astype(np.int32), splits=self.backend.read("images/split").astype(np.int8),
            digests=self.backend.read_strings("images/digest"), data_root=a["data_root"],
            presplit=bool(a.get("presplit")), split=a.get("split", str(SplitFractions())),
        )

    def skipped(self) -> dict[str, dict]:
        return dict(self.backend.get_attrs().get("skipped", {}))

    def record_skipped(self, entries: dict[str, dict]) -> None:
        if entries:
            self.backend.set_attrs("", {"skipped": {**self.skipped(), **entries}})

    # -- feature configs ---------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return self.backend.groups("features")

    def config(self, key: str) -> FeatureConfig:
        return FeatureConfig.from_dict(self.backend.get_attrs(f"features/{key}")["config"])

    def find_config(self, cfg: FeatureConfig) -> str | None:
        """The key of the stored config with the same identity as ``cfg`` (whatever featcache
        version wrote it, so a store of an older version resumes instead of re-extracting)."""
        if self.backend.exists(f"features/{cfg.key}/status"):
            return cfg.key
        wanted = cfg.identity()
        for key in self.keys():
            try:
                if self.backend.exists(f"features/{key}/status") and self.config(key).identity() == wanted:
                    return key
            except FeatcacheError:  # an old record that cannot be read as numbers: never a match
                continue
        return None

    def ensure_config(self, cfg: FeatureConfig, dim: int, chunk_rows: int | None = None) -> str:
        if (found := self.find_config(cfg)) is not None:
            return found
        key, g = cfg.key, f"features/{cfg.key}"
        views = cfg.augment.views
        chunk_rows = chunk_rows or choose_chunk_rows(views, dim, np.dtype(cfg.dtype).itemsize)
        self.backend.create_array(f"{g}/features", (0, views, dim), (chunk_rows, views, dim), cfg.dtype, 0)
        self.backend.create_array(f"{g}/status", (0,), (chunk_rows,), "int8", PENDING)
        self.backend.write_strings(f"{g}/digest", [])
        self.backend.set_attrs(g, {"config": cfg.to_dict(), "chunk_rows": chunk_rows, "stats": {},
                             "featcache_version": __version__})
        self.backend.flush()
        return key

    def row_digests(self, key: str) -> list[str]:
        return self.backend.read_strings(f"features/{key}/digest")

    def status(self, key: str) -> np.ndarray:
        return self.backend.read(f"features/{key}/status")

    def plan(self, key: str, digests: list[str]) -> list[WorkUnit]:
        """Give every new content digest a row (growing the arrays once, by whole chunks) and
        return the chunk-aligned units that still hold pending rows."""
        g = f"features/{key}"
        chunk = int(self.backend.get_attrs(g)["chunk_rows"])
        row_digests = self.row_digests(key)
        known = set(row_digests)
        new = sorted({d for d in digests if d not in known})
        if new:
            start = len(row_digests)  # always a multiple of chunk
            padded = new + [""] * (-len(new) % chunk)
            # Digests first: after a crash they are known rows, and the arrays are grown below.
            self.backend.write_strings(f"{g}/digest", padded, start=start)
            row_digests += padded
        _, views, dim = self.backend.shape(f"{g}/features")
        if self.backend.shape(f"{g}/status")[0] < len(row_digests):  # new rows start PENDING (fill value)
            self.backend.resize(f"{g}/features", (len(row_digests), views, dim))
            self.backend.resize(f"{g}/status", (len(row_digests),))
        self.backend.flush()
        status = self.status(key)
        wanted = set(digests)
        units = []
        for start in range(0, len(row_digests), chunk):
            rows = tuple(r for r in range(start, min(start + chunk, len(row_digests)))
                         if status[r] == PENDING and row_digests[r] in wanted)
            if rows:
                units.append(WorkUnit(key, start, start + chunk, rows))
        return units

    def write_unit(self, unit: WorkUnit, features: np.ndarray, status: np.ndarray) -> None:
        """Write one chunk-aligned region: features (stop-start, V, D) and status (stop-start,)."""
        g = f"features/{unit.key}"
        sel = slice(unit.start, unit.stop)
        self.backend.write(f"{g}/features", sel, features)
        self.backend.write(f"{g}/status", sel, status)  # after the features: a crash between leaves rows pending
        self.backend.flush()

    def read_unit(self, unit: WorkUnit) -> tuple[np.ndarray, np.ndarray]:
        g = f"features/{unit.key}"
        sel = slice(unit.start, unit.stop)
        return self.backend.read(f"{g}/features", sel), self.backend.read(f"{g}/status", sel)

    def add_stats(self, key: str, rows: int, images: int, seconds: float) -> None:
        g = f"features/{key}"
        s = dict(self.backend.get_attrs(g).get("stats", {}))
        s["rows"] = s.get("rows", 0) + rows
        s["images"] = s.get("images", 0) + images
        s["seconds"] = round(s.get("seconds", 0.0) + seconds, 3)
        s["images_per_s"] = round(s["images"] / s["seconds"], 2) if s["seconds"] else None
        self.backend.set_attrs(g, {"stats": s})

    def _manifest_rows(self, key: str, manifest: StoredManifest) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(row digests, each image's row or -1, each image's status) for one config."""
        row_digests = self.row_digests(key)
        index = {d: r for r, d in enumerate(row_digests)}
        rows = np.array([index.get(d, -1) for d in manifest.digests], np.int64)
        st = np.where(rows >= 0, self.status(key)[np.maximum(rows, 0)], PENDING).astype(np.int8)
        return row_digests, rows, st

    def config_status(self, key: str, manifest: StoredManifest | None = None) -> ConfigStatus:
        manifest = manifest or self.manifest()
        g = f"features/{key}"
        row_digests, _, st = self._manifest_rows(key, manifest)
        current = set(manifest.digests)
        orphans = sum(1 for d in row_digests if d and d not in current)
        _, views, dim = self.backend.shape(f"{g}/features")
        cfg = self.config(key)
        return ConfigStatus(
            key=key, config=cfg, rows=len(manifest), done=int((st == DONE).sum()),
            failed=int((st == FAILED).sum()), pending=int((st == PENDING).sum()), views=views, dim=dim,
            dtype=cfg.dtype, nbytes=self.backend.nbytes_on_disk(g), stats=self.backend.get_attrs(g).get("stats", {}),
            orphans=orphans,
        )

    # -- reading -----------------------------------------------------------------------------------
    def resolve_key(self, name: str) -> str:
        """A full key, or a backbone name when the store holds exactly one config of it."""
        keys = self.keys()
        if name in keys:
            return name
        matches = [k for k in keys if self.config(k).backbone.name == name]
        if len(matches) == 1:
            return matches[0]
        if not keys:
            raise FeatcacheError(f"{self.path} holds no features yet; run `featcache extract` first")
        if not matches:
            raise FeatcacheError(f"{self.path} has no features for {name!r}; it has: {', '.join(keys)}")
        raise FeatcacheError(f"{self.path} has several configs of {name!r}: {', '.join(matches)}; pass the full key")

    def load(self, names: list[str], allow_incomplete: bool = False) -> FeatureSet:
        """Features of every usable image for one or more configs (several are concatenated)."""
        keys = [self.resolve_key(n) for n in names]
        manifest = self.manifest()
        usable = np.ones(len(manifest), bool)
        blocks = []
        for key in keys:
            _, rows, st = self._manifest_rows(key, manifest)
            pending = int((st == PENDING).sum())
            if pending and not allow_incomplete:
                raise FeatcacheError(
                    f"features {key} are incomplete: {pending} of {len(manifest)} images not extracted yet. "
                    f"Resume with `featcache extract {manifest.data_root} --store {self.path} ...` "
                    "(the same options as before)"
                )
            usable &= st == DONE
            blocks.append((key, rows))
        views = min(self.backend.shape(f"features/{k}/features")[1] for k, _ in blocks)
        idx = np.flatnonzero(usable)
        parts = []
        for key, rows in blocks:
            feats = self.backend.read(f"features/{key}/features")  # whole array: heads need it all in memory
            parts.append(feats[rows[idx], :views].astype(np.float32))
        return FeatureSet(
            keys=keys, configs=[self.config(k) for k in keys], classes=manifest.classes,
            features=np.concatenate(parts, axis=-1) if parts else np.zeros((0, views, 0), np.float32),
            labels=manifest.labels[idx], splits=manifest.splits[idx],
            paths=[manifest.paths[i] for i in idx], digests=[manifest.digests[i] for i in idx],
        )

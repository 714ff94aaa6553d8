"""The manifest log of a store: versions of its image list, the switch between them, schema-1 reading.

A new manifest is written as a new version (``manifests/<n>/``), then the root's ``manifest``
attribute switches to it in one write: a reader sees the old image list or the new one, never a
mix. The version before stays for readers still reading it. A schema 1 store kept its one image
list under ``images/`` with its attributes at the root, without checksums.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .. import __version__
from ..errors import FeatcacheError, Remedy, Step
from ..ingest.scan import Manifest, SplitFractions
from .checksum import array_checksum, record_digest
from .errors import damaged_manifest
from .schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from .store import FeatureStore

VERSIONS, SCHEMA1_IMAGES = "manifests", "images"


@dataclass(frozen=True)
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
    groups: list[str] | None = None  # per image, where the images come in groups (stores before: None)
    # multi-label: (n, classes) uint8 multi-hot, the manifest's ``label_set`` (stores before, and
    # single-label ones: None; ``labels`` then holds each image's first label, -1 for none)
    label_sets: np.ndarray | None = None

    @property
    def multilabel(self) -> bool:
        return self.label_sets is not None

    def __len__(self) -> int:
        return len(self.paths)


def _attributes(classes, data_root, presplit, split, multilabel=False) -> dict:
    """The attributes that change what the arrays mean: bound by the ``attributes`` checksum
    (``multilabel`` recorded only when true, so single-label image lists keep their digest)."""
    return {"classes": list(classes), "data_root": data_root, "presplit": bool(presplit), "split": split,
            **({"multilabel": True} if multilabel else {})}


def _arrays(paths, digests, labels, splits) -> dict:
    return {"path": paths, "digest": digests, "label": np.asarray(labels, np.int32),
            "split": np.asarray(splits, np.int8)}


class ManifestLog:
    def __init__(self, store: FeatureStore):
        self.store, self.backend = store, store.backend

    def version(self) -> str | None:
        return self.backend.get_attrs().get("manifest")

    def stored_split(self) -> str | None:
        """The split fractions the store was extracted with (None: a new store): the current
        manifest's, verified (the root's copy only where the manifest cannot be read)."""
        a = self.backend.get_attrs()
        try:
            return self._read(f"{VERSIONS}/{a['manifest']}", self.backend.get_attrs, verifiable=True).split
        except (KeyError, FeatcacheError):
            return a.get("split")

    def write(self, m: Manifest) -> bool:
        """Make ``m`` the store's image list; False when it already is (then nothing is written)."""
        if self._holds(m):
            return False
        arrays = _arrays(m.paths, m.digests, m.labels, m.splits)
        if m.groups is not None:
            arrays["group"] = list(m.groups)
        if m.label_sets is not None:
            arrays["label_set"] = np.asarray(m.label_sets, np.uint8).reshape(len(m), len(m.classes))
        with self.store._writing():
            previous = self.version()
            version = str(int(previous) + 1) if previous is not None else "1"
            g = f"{VERSIONS}/{version}"
            if self.backend.exists(g):  # half-written by a killed run, never switched to
                self.backend.delete(g)
            for name in ("path", "digest", "group"):
                if name in arrays:
                    self.backend.write_strings(f"{g}/{name}", arrays[name])
            for name in ("label", "split", "label_set"):
                if name in arrays:
                    a = arrays[name]
                    self.backend.create_array(f"{g}/{name}", a.shape, (max(1, len(m)), *a.shape[1:]), a.dtype.name, 0)
                    self.backend.write(f"{g}/{name}", slice(None), a)
            attributes = _attributes(m.classes, m.root, m.presplit, str(m.split_fractions), m.multilabel)
            self.backend.set_attrs(g, {**attributes, "ignored": m.ignored[:1000], "checksums": {
                **{k: array_checksum(v) for k, v in arrays.items()}, "attributes": record_digest(attributes)}})
            self.backend.flush()
            # the switch: one write of the root attributes
            self.backend.set_attrs("", {"manifest": version, "split": str(m.split_fractions),
                                        "featcache_schema": SCHEMA_VERSION, "featcache_version": __version__})
            self.backend.flush()
            for old in self.backend.groups(VERSIONS):  # a reader may still be reading `previous`
                if old not in (version, previous):
                    self.backend.delete(f"{VERSIONS}/{old}")
            if self.backend.exists(SCHEMA1_IMAGES):
                self.backend.delete(SCHEMA1_IMAGES)
        return True

    def _holds(self, m: Manifest) -> bool:
        try:
            cur = self.read()
        except FeatcacheError:  # none yet, or damaged: write it
            return False
        return (cur.verifiable and cur.paths == m.paths and cur.digests == m.digests and cur.classes == m.classes
                and np.array_equal(cur.labels, m.labels) and np.array_equal(cur.splits, m.splits)
                and cur.data_root == m.root and cur.presplit == m.presplit and cur.split == str(m.split_fractions)
                and cur.ignored == m.ignored[:1000]
                and "attributes" in self.backend.get_attrs(f"{VERSIONS}/{self.version()}").get("checksums", {})
                and cur.groups == (list(m.groups) if m.groups is not None else None)
                and cur.multilabel == m.multilabel
                and (m.label_sets is None or np.array_equal(cur.label_sets, m.label_sets)))

    def read(self) -> StoredManifest:
        a = self.backend.get_attrs()
        if "manifest" in a:
            m = self._read(f"{VERSIONS}/{a['manifest']}", self.backend.get_attrs, verifiable=True)
            if a.get("split") != m.split:  # the next extract keeps the root's split: it must be this one
                raise damaged_manifest(self.store.path, f"the store's split {a.get('split')!r} is not its image "
                                                        f"list's ({m.split!r})")
            return m
        if self.backend.exists(f"{SCHEMA1_IMAGES}/path"):  # schema 1: its attributes at the root
            return self._read(SCHEMA1_IMAGES, lambda g: a, verifiable=False)
        raise FeatcacheError(f"{self.store.path} holds no images yet",
                             remedy=Remedy("run {}", Step.of("extract", data_dir="DATA_DIR", store=self.store.path)))

    def _read(self, g: str, attrs_of, verifiable: bool) -> StoredManifest:
        try:
            a = attrs_of(g)
            arrays = _arrays(self.backend.read_strings(f"{g}/path"), self.backend.read_strings(f"{g}/digest"),
                             self.backend.read(f"{g}/label"), self.backend.read(f"{g}/split"))
            if self.backend.exists(f"{g}/group"):  # optional: written where the images come in groups
                arrays["group"] = self.backend.read_strings(f"{g}/group")
            if a.get("multilabel") or self.backend.exists(f"{g}/label_set"):  # optional: multi-label
                arrays["label_set"] = np.asarray(self.backend.read(f"{g}/label_set"), np.uint8)
            classes = list(a["classes"])
        except Exception as exc:  # noqa: BLE001  (whatever the storage library raises: unreadable)
            raise damaged_manifest(self.store.path, f"{g} cannot be read ({type(exc).__name__}: {exc})") from exc
        if len({len(v) for v in arrays.values()}) != 1:
            raise damaged_manifest(self.store.path, f"the arrays of {g} have different lengths")
        if "label_set" in arrays and (arrays["label_set"].ndim != 2 or arrays["label_set"].shape[1] != len(classes)
                                      or arrays["label_set"].max(initial=0) > 1):
            raise damaged_manifest(self.store.path, f"{g}/label_set is not one 0/1 column per class")
        if verifiable:
            checksums = a.get("checksums", {})
            bad = [k for k, v in arrays.items() if array_checksum(v) != checksums.get(k)]
            attributes = _attributes(classes, a.get("data_root"), a.get("presplit"), a.get("split"),
                                     bool(a.get("multilabel")))
            if "attributes" in checksums and record_digest(attributes) != checksums["attributes"]:
                bad.append("attributes (classes, data root, split)")  # (older image lists have none)
            if bad:
                raise damaged_manifest(self.store.path, f"{', '.join(f'{g}/{k}' for k in bad)} fail their checksum")
        return StoredManifest(
            classes=classes, paths=arrays["path"], labels=arrays["label"], splits=arrays["split"],
            digests=arrays["digest"], data_root=a["data_root"], presplit=bool(a.get("presplit")),
            split=a.get("split", str(SplitFractions())), ignored=list(a.get("ignored", [])), verifiable=verifiable,
            groups=list(arrays["group"]) if "group" in arrays else None,
            label_sets=arrays.get("label_set"),
        )


__all__ = ["ManifestLog", "StoredManifest"]

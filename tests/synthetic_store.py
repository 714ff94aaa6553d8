"""A store of synthetic features written through the store API: for tests and benchmarks of heads at
sizes no photo set here reaches (100,000 images and more). Test support, so it lives beside the
tests, not in the package (it names a backbone only to have a record).

Features look like pooled CNN outputs: non-negative (ReLU), correlated (a low-rank signal), and
learnable: each class has a centre in the low-rank space, ``separation`` scales it against the
noise. Views 1..K are view 0 plus a little noise (an augmentation moves features a little).
Everything is seeded: the same arguments write the same store.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from featcache.backbones.model import resolve_config
from featcache.config import FeatureConfig
from featcache.ingest.augment import AugmentParams
from featcache.ingest.scan import Manifest, SplitFractions
from featcache.stores import open_store

RANK = 32  # of the signal
VIEW_NOISE = 0.15


def synthetic_manifest(n: int, n_classes: int, seed: int, split=(0.7, 0.2, 0.1)) -> Manifest:
    rng = np.random.default_rng([seed, 0])
    labels = rng.integers(0, n_classes, n).astype(np.int32)
    splits = rng.choice(3, n, p=list(split)).astype(np.int8)
    classes = [f"class{c:03d}" for c in range(n_classes)]
    return Manifest(root="synthetic", classes=classes, paths=[f"{classes[y]}/{i:08d}.syn" for i, y in enumerate(labels)],
                    labels=labels, digests=[hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=16).hexdigest()
                                            for i in range(n)],
                    splits=splits, split_fractions=SplitFractions(*split))


def write_synthetic_store(path: str | Path, n: int, dim: int, views: int = 1, n_classes: int = 10,
                          separation: float = 0.5, seed: int = 0, dtype: str = "float16",
                          chunk_rows: int | None = None) -> str:
    """Write (or complete) the store; return its feature key."""
    m = synthetic_manifest(n, n_classes, seed)
    image_of = {d: i for i, d in enumerate(m.digests)}
    rng = np.random.default_rng([seed, 1])
    basis = rng.normal(size=(RANK, dim)).astype(np.float32) / np.sqrt(RANK)
    centres = rng.normal(size=(n_classes, RANK)).astype(np.float32) * separation
    cfg = FeatureConfig(resolve_config("efficientnet_lite0", weights="random"),
                        AugmentParams(augmented_views=views - 1), dtype)
    with open_store(path, "a") as st:
        st.write_manifest(m)
        key = st.ensure_config(cfg, dim, chunk_rows)
        units = st[key].plan(m.digests)
        digests = st[key].row_digests()
        for unit in units:
            images = np.array([image_of[digests[r]] for r in unit.rows])
            r = np.random.default_rng([seed, 2, unit.start])
            z = centres[m.labels[images]] + r.normal(size=(len(images), RANK)).astype(np.float32)
            base = z @ basis + 0.3 * r.normal(size=(len(images), dim)).astype(np.float32)
            noise = VIEW_NOISE * r.normal(size=(len(images), views, dim)).astype(np.float32)
            noise[:, 0] = 0
            feats = np.maximum(base[:, None, :] + noise, 0).astype(dtype)
            st.commit_unit(unit, digests[unit.start:unit.stop], list(unit.rows), feats, [])
    return key

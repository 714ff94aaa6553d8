"""What an audit or a neighbour search reads from a store: one feature config's features of the
usable images (read through the store's verified view: every view, or one), each image's
reference, the config record and the data folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import FeatureConfig
from ..ingest.scan import SPLITS
from ..stores import FeatureSet, open_store
from .records import ImageRef


@dataclass
class StoredImages:
    key: str
    config: FeatureConfig
    features: FeatureSet  # (n, V, D), or (n, D) of one view
    refs: list[ImageRef]  # one per FeatureSet row
    data_root: str


def load_images(store: str | Path, backbone: str | None, view: int | None = None) -> StoredImages:
    """``view``: only that view of each image (0: the un-augmented one); None: every view."""
    with open_store(store) as st:
        key = st.resolve_key(backbone)
        rows = st.rows([key])
        fs = FeatureSet.of(rows if view is None else rows.view(view))
        cfg, data_root = st.config(key), st.manifest().data_root
    refs = [ImageRef(i, p, fs.classes[c], SPLITS[s])
            for i, (p, c, s) in enumerate(zip(fs.paths, fs.labels.tolist(), fs.splits.tolist(), strict=True))]
    return StoredImages(key, cfg, fs, refs, data_root)

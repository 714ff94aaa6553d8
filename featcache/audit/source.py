"""What an audit or a neighbour search reads from a store: one feature config's features of the
usable images, each image's reference, the config record and the data folder."""

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
    features: FeatureSet
    refs: list[ImageRef]  # one per FeatureSet row
    data_root: str


def load_images(store: str | Path, backbone: str) -> StoredImages:
    with open_store(store) as st:
        key = st.resolve_key(backbone)
        fs = st.load([key])
        cfg, data_root = st.config(key), st.manifest().data_root
    refs = [ImageRef(i, p, fs.classes[c], SPLITS[s])
            for i, (p, c, s) in enumerate(zip(fs.paths, fs.labels.tolist(), fs.splits.tolist(), strict=True))]
    return StoredImages(key, cfg, fs, refs, data_root)

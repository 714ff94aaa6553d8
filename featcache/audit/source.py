"""What an audit or a neighbour search reads from a store: one feature config's features of the
usable images (read through the store's verified view: every view, or one), each image's
reference, the config record and the data folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import FeatureConfig
from ..ingest.label_file import group_of, group_pattern
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


def load_images(store: str | Path, backbone: str | None, view: int | None = None,
                group_by: str | None = None) -> StoredImages:
    """``view``: only that view of each image (0: the un-augmented one); None: every view.
    ``group_by``: each image's group by this expression on its path, instead of the store's groups."""
    with open_store(store) as st:
        key = st.resolve_key(backbone)
        rows = st.rows([key])
        fs = FeatureSet.of(rows if view is None else rows.view(view))
        manifest = st.manifest()
        cfg, data_root = st.config(key), manifest.data_root
    if (pattern := group_pattern(group_by)) is not None:
        groups = {p: group_of(pattern, p) for p in fs.paths}
    else:
        groups = dict(zip(manifest.paths, manifest.groups, strict=True)) if manifest.groups is not None else {}
    refs = [ImageRef(i, p, fs.classes[c], SPLITS[s], groups.get(p))
            for i, (p, c, s) in enumerate(zip(fs.paths, fs.labels.tolist(), fs.splits.tolist(), strict=True))]
    return StoredImages(key, cfg, fs, refs, data_root)

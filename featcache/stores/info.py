"""Summary of a feature store: images per class and split, skipped files, every feature config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import FeatcacheError, Remedy
from ..ingest.scan import SPLITS, split_counts
from . import ConfigStatus, open_store


@dataclass(frozen=True)
class DamagedConfig:
    """A configuration `info` cannot summarise: its record fails its digest (or cannot be read)."""

    key: str
    problem: str
    remedy: Remedy | str | None = None


@dataclass
class StoreInfo:
    path: str
    data_root: str
    split: str
    presplit: bool
    images: int
    classes: dict[str, dict[str, int]]  # class -> split -> count
    skipped: list[dict]  # {path, reason}: path relative to data_root, as extract reports it
    configs: list[ConfigStatus]
    groups: dict[str, dict[str, int]] | None = None  # split -> {groups, images}; None: no groups
    damaged: list[DamagedConfig] = field(default_factory=list)  # configs whose record cannot be trusted

    def to_dict(self) -> dict:
        d = asdict(self)
        d["configs"] = [{**asdict(c), "config": c.config.to_dict(), "stats": c.stats.to_dict(), "complete": c.complete,
                          "state": c.state}
                        for c in self.configs]
        return d


def store_info(path) -> StoreInfo:
    with open_store(path) as st:
        m = st.manifest()
        counts = split_counts(m.classes, m.labels, m.splits, m.label_sets)  # multi-label: images holding each class
        skipped = [{"path": p, "reason": reason} for p, reason in st.failed_images(m.paths, m.digests)]
        configs, damaged = [], []
        for key in st.keys():  # one damaged record is listed, not a reason to describe nothing
            try:
                configs.append(st.config_status(key, m))
            except FeatcacheError as exc:
                damaged.append(DamagedConfig(key, exc.problem, exc.remedy))
        return StoreInfo(str(st.path), m.data_root, m.split, m.presplit, len(m), counts, skipped, configs,
                         _group_counts(m), damaged)


def _group_counts(m) -> dict[str, dict[str, int]] | None:
    """Per split: how many groups and images (a group in two splits counts in both)."""
    if m.groups is None:
        return None
    out = {s: {"groups": set(), "images": 0} for s in SPLITS}
    for g, split in zip(m.groups, m.splits.tolist(), strict=True):
        out[SPLITS[split]]["groups"].add(g)
        out[SPLITS[split]]["images"] += 1
    return {s: {"groups": len(v["groups"]), "images": v["images"]} for s, v in out.items()}

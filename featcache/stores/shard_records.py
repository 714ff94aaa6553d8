"""What a sharded run records: the plan (``--plan-only``) and each shard's own record.

``/shards/<I-of-N>/`` holds one shard's skip reasons and per-config stats until the next full run
folds them into the store (``merge``); the root's ``plan`` says which manifest version and which
configs were planned, so a shard refuses a store planned otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..ingest.scan import SkippedImage
from .schema import SHARDS

if TYPE_CHECKING:
    from .store import FeatureStore


def skips_record(skips: dict[str, SkippedImage]) -> dict[str, dict]:
    """{digest: SkippedImage} as a store records it (JSON attributes): {digest: {"path", "reason"}}."""
    return {d: {"path": s.path, "reason": s.reason} for d, s in skips.items()}


def skips_from_record(record: dict[str, dict]) -> dict[str, SkippedImage]:
    return {d: SkippedImage(v["path"], v["reason"]) for d, v in record.items()}


class ShardRecords:
    def __init__(self, store: FeatureStore):
        self.store, self.backend = store, store.backend

    def record_plan(self, keys: list[str]) -> None:
        """What this run planned (the manifest version, the configs' keys): shards check it."""
        with self.store._writing():
            if not self.backend.exists(SHARDS):  # the group each shard adds its own record to
                self.backend.set_attrs(SHARDS, {})
            self.backend.set_attrs("", {"plan": {"manifest": self.store.manifests.version(), "keys": sorted(keys)}})
            self.backend.flush()

    def planned(self) -> dict | None:
        return self.backend.get_attrs().get("plan")

    def get(self, shard: str) -> dict:
        """What shard ``shard`` ("I-of-N") recorded so far (a re-run of a killed shard goes on from
        it): its "skipped" ({digest: SkippedImage}) and "stats"."""
        g = f"{SHARDS}/{shard}"
        record = dict(self.backend.get_attrs(g)) if self.backend.exists(g) else {}
        return {**record, "skipped": skips_from_record(record.get("skipped", {}))}

    def record(self, shard: str, skipped: dict[str, SkippedImage], stats: dict[str, dict]) -> None:
        """A shard's own record, never shared: the images it could not decode and, per config, its
        rows, images and start/finish times. The next full run folds it in (merge)."""
        with self.store._writing(shared=False):
            self.backend.set_attrs(f"{SHARDS}/{shard}", {"skipped": skips_record(skipped), "stats": stats})
            self.backend.flush()

    def merge(self) -> list[str]:
        """Fold the shards' records into the store (skip reasons; stats, timed from the first
        shard's start to the last one's finish), then delete them. The shards merged."""
        names = self.backend.groups(SHARDS)
        records = [self.backend.get_attrs(f"{SHARDS}/{n}") for n in names]
        self.store.record_skipped({d: s for r in records for d, s in skips_from_record(r.get("skipped", {})).items()})
        keys = set(self.store.keys())
        for key in sorted({k for r in records for k in r.get("stats", {})} & keys):
            runs = [r["stats"][key] for r in records if key in r.get("stats", {})]
            self.store[key].add_stats(sum(s["rows"] for s in runs), sum(s["images"] for s in runs),
                                      max(s["finished"] for s in runs) - min(s["started"] for s in runs))
        if names:
            with self.store._writing():
                for name in names:
                    self.backend.delete(f"{SHARDS}/{name}")
        return names


__all__ = ["ShardRecords"]

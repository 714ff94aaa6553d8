"""Sharded runs without an engine (Slurm arrays, one process per GPU): an extract with the
``plan-only`` executor plans the store once; then ``shard:I/N`` processes, as many as wanted at
once, each compute the units whose chunk index is I modulo N; a last extract (no shard) finishes
what is left (a killed shard's unit) and folds the shards' records into the store.

A shard reads the stored manifest (it never scans or hashes the tree again), checks that the store
was planned with its options, writes only its units and its own record (shards/I-of-N: skip
reasons and timings), and holds the store's lock shared with the other shards (lock.py).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import FeatureConfig
from ..errors import FeatcacheError, ParameterError, Remedy, Step
from ..ingest.scan import SplitFractions
from ..ingest.sources import join, open_source
from ..stores import FeatureStore, StoredManifest, open_store
from .compute import compute_units
from .options import ExtractOptions
from .plan import ConfigPlan
from .reader import SkippedImage, decode_threads
from .runs import ConfigRun, ExtractResult, compute_config


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
            raise ParameterError("shard", f"expected I/N with 0 <= I < N, e.g. 0/4 to 3/4 for four shards (Slurm: "
                                          f"$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT), got {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    @property
    def name(self) -> str:
        return f"{self.index}-of-{self.count}"

    def owns(self, chunk_index: int) -> bool:
        return chunk_index % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def run_shard(data_dir: str | Path, store: str | Path, options: ExtractOptions, shard: Shard) -> ExtractResult:
    st = open_store(store, "a", shard=shard.name)
    try:
        manifest = st.manifest()
        keys = _planned_keys(st, data_dir, options, manifest)
        paths: dict[str, str] = {}
        for rel, d in zip(manifest.paths, manifest.digests, strict=True):
            paths.setdefault(d, join(manifest.data_root, rel))
        record = st.shards.get(shard.name)
        skipped, stats = record.get("skipped", {}), record.get("stats", {})

        def keep_failures(failures: dict[str, SkippedImage]) -> None:  # before the unit's status: see UnitWriter
            skipped.update(failures)
            st.shards.record(shard.name, skipped, stats)

        result = ExtractResult(str(st.path), len(manifest), manifest.classes)
        workers, device = decode_threads(options.workers), options.resolved_device()
        for cfg, key in keys:
            units = st[key].pending_units(manifest.digests, chunks=shard.owns)
            plan = ConfigPlan(cfg, key, units, st[key].batch_size(), 0, device=device)
            plan = replace(plan, reused=_owned_rows(st, key, manifest, shard) - plan.todo)
            run = ConfigRun.planned(plan)
            result.configs.append(run)
            if not units:
                continue

            started = time.time()

            def recorded(on_images, plan=plan, started=started):
                """Each unit counted in the shard's record once it is written (a killed shard's too)."""
                for out in compute_units(st, plan.cfg, plan.units, st[plan.key].row_digests(), paths,
                                         runner=plan.runner_factory(), workers=workers, batch_size=plan.batch_size,
                                         record_failures=keep_failures, on_images=on_images):
                    done = stats.get(plan.key, {"rows": 0, "images": 0, "started": started})
                    stats[plan.key] = {**done, "rows": done["rows"] + out.rows, "finished": time.time(),
                                       "images": done["images"] + out.rows * out.views}
                    st.shards.record(shard.name, skipped, stats)
                    yield out

            compute_config([run], plan.todo, recorded, options.strict, options.progress)
        result.skipped = list(skipped.values())
        return result
    finally:
        st.close()


def _owned_rows(st: FeatureStore, key: str, manifest: StoredManifest, shard: Shard) -> int:
    wanted, chunk = set(manifest.digests), st[key].chunk_rows()
    return sum(1 for r, d in enumerate(st[key].row_digests()) if d in wanted and shard.owns(r // chunk))


def _planned_keys(st: FeatureStore, data_dir, options: ExtractOptions, manifest: StoredManifest
                  ) -> list[tuple[FeatureConfig, str]]:
    """(config, store key) per backbone of ``options``, after checking that the store was planned
    (``plan-only``) for this image list, this data folder and these options."""
    plan = st.shards.planned()
    again = "plan it with {} and the shards' options, then start the shards"
    planning = Step.of("extract", data_dir=manifest.data_root, store=st.path, executor="plan-only")
    if plan is None:
        raise FeatcacheError(f"{st.path} was not planned for shards", remedy=Remedy(again, planning))
    if plan["manifest"] != st.manifests.version():
        raise FeatcacheError(f"{st.path}: its image list changed since it was planned", remedy=Remedy(again, planning))
    if open_source(data_dir).root != manifest.data_root:
        raise ParameterError("data_dir", f"{st.path} was planned for {manifest.data_root}, not {data_dir}")
    if options.split is not None and not manifest.presplit:
        split = options.split if isinstance(options.split, SplitFractions) else SplitFractions.parse(options.split)
        if str(split) != manifest.split:
            raise ParameterError("split", f"{st.path} was planned with split {manifest.split}, not {split}")
    out = []
    for cfg in options.feature_configs():
        key = st.find_config(cfg)
        if key is None or key not in plan["keys"]:
            planned = ", ".join(f"{st.config(k).backbone.label} ({k})" for k in plan["keys"] if k in st.keys())
            raise FeatcacheError(f"{st.path} was planned with other options: no planned configuration is "
                                 f"{cfg.backbone.label} with these options (planned: {planned})",
                                 remedy=Remedy(f"start the shards with the planning run's options, or {again}",
                                               planning))
        out.append((cfg, key))
    return out

"""extract(): take the store's lock, scan, write the manifest, plan the missing (or damaged) rows of
each feature config into chunk-aligned work units (plan.py), then have an executor compute them
(executors.py: this process by default, a Dask cluster with ``executor="local:N"`` or a scheduler
address, ``"plan-only"`` to plan and stop, ``"shard:I/N"`` for one shard of a planned store).

In this process, the reader decodes and augments rows on worker threads, a bounded window of rows
ahead of the backbone (across unit boundaries), so decoding overlaps the forward pass and memory
stays bounded by that window, two input batches and one unit's features, whatever the data set.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

from ..errors import FeatcacheError, Interrupted, ParameterError
from ..ingest.scan import Manifest, scan
from ..ingest.sources import keeping_scanned_bytes
from ..stores import FeatureStore, open_store
from .executors import Executor, PlanOnlyExecutor, ShardExecutor, make_executor
from .options import ExtractOptions
from .plan import ConfigPlan, check_new_configs, plan_config, shared_passes, untapped
from .reader import SkippedImage
from .runs import ConfigRun, ExtractResult, compute_config


def extract(data_dir: str | Path, store: str | Path, options: ExtractOptions | None = None, *,
            manifest: Manifest | None = None, executor: Executor | str | None = None, shard: str | None = None,
            plan_only: bool = False) -> ExtractResult:
    """Extract features of every image under ``data_dir`` for each backbone into ``store``.

    Re-running finishes only what is missing: rows already computed for the same configuration
    and the same image content are reused (after checking their checksums: damaged rows are
    computed again), new or changed images are extracted.

    ``executor``: who computes: an ``Executor`` or its text (executors.py): "process" (the
    default), "local:N" or "tcp://host:8786" (Dask), "plan-only" (scan, write the manifest and plan
    the rows, then stop: shards run next), "shard:I/N" (the units of chunk index I modulo N of a
    planned store). ``plan_only=True`` and ``shard="I/N"`` are the older spellings of the last two.
    """
    options = options or ExtractOptions()
    if shard is not None:
        if executor is not None or plan_only:
            raise ParameterError("shard", "a shard computes in its own process, on a store already planned: give "
                                          "it without an executor or plan_only")
        executor = f"shard:{shard}" if isinstance(shard, str) else ShardExecutor(shard)
    elif plan_only:
        if executor is not None:
            raise ParameterError("plan_only", "planning computes nothing: give it without an executor")
        executor = PlanOnlyExecutor()
    executor = make_executor(executor)
    if executor.shard is not None:
        from .shards import run_shard

        return run_shard(data_dir, store, options, executor.shard)
    configs = options.feature_configs()
    st = open_store(store, mode="a")  # the lock: a second writer is refused now. Nothing is created yet
    try:
        if executor.distributed and not st.backend.concurrent_writes:
            raise FeatcacheError(f"{st.path}: a {st.backend.name} store has a single writer; a distributed run "
                                 "needs a Zarr store (.zarr)")
        with executor, keeping_scanned_bytes():  # objects of a URL data root: read once where they fit
            return _extract(st, data_dir, configs, options, manifest, executor, executor.plan_only)
    finally:
        st.close()


def _extract(st: FeatureStore, data_dir, configs, options: ExtractOptions, manifest: Manifest | None,
             executor: Executor, plan_only: bool) -> ExtractResult:
    split, stored = options.split, st.manifests.stored_split()
    if split is None and manifest is None:
        split = stored  # keep the store's split unless asked otherwise
    # before the store's first write: a bad folder leaves none
    manifest = manifest or scan(data_dir, split, digests=executor.digests, labels=options.labels,
                                group_by=options.group_by)
    if stored is not None and not manifest.presplit and not options.resplit and str(manifest.split_fractions) != stored:
        raise ParameterError("split", f"{st.path} is split {stored}; splitting it {manifest.split_fractions} would "
                                      "move images between train, validation and test under the runs trained on "
                                      "the old split", remedy="leave the split out to keep the store's, or ask for "
                                      "the new one with resplit", mentions=("resplit",))
    if options.strict and manifest.unreadable:
        first = manifest.unreadable[0]
        raise FeatcacheError(f"{manifest.root}/{first.path}: {first.reason} (strict mode; "
                             f"{len(manifest.unreadable)} file(s) could not be read)")
    # every network new to the store built (weights loaded) before the store records anything of it
    runners = {} if executor.distributed else check_new_configs(st, configs, options.batch_size,
                                                                 options.resolved_device())
    st.write_manifest(manifest)
    st.shards.merge()  # what shards of a sharded run recorded: their skip reasons and timings
    paths: dict[str, str] = {}
    for i, d in enumerate(manifest.digests):
        paths.setdefault(d, manifest.location(i))
    result = ExtractResult(str(st.path), len(manifest), manifest.classes, empty_classes=manifest.empty_classes)
    if options.strict and (known_bad := _skipped_images(st, manifest)):
        # failed rows are never redone, so an earlier run's failures must stop a strict run too
        first = known_bad[0]
        raise FeatcacheError(f"{manifest.root}/{first.path}: {first.reason} (strict mode; {len(known_bad)} "
                             "image(s) in this store could not be decoded)")
    held = {k: st.config(k) for k in st.keys() if st[k].record_intact()}
    plans: list[ConfigPlan] = []
    device = options.resolved_device()
    for cfg in configs:
        chunk_rows = options.chunk_rows
        final = next((p for p in plans if cfg.backbone.tap and p.cfg == untapped(cfg)), None)
        if chunk_rows is None and final is not None:  # a new tap chunked as its final features: same units, one pass
            chunk_rows = st[final.key].chunk_rows()
        plan = plan_config(st, cfg, manifest.digests, options.batch_size, chunk_rows, device, runners.get(cfg))
        if any(p.key == plan.key for p in plans):  # the same config twice: computed once
            plan = replace(plan, units=[], reused=len(set(manifest.digests)))
        plans.append(plan)
    result.added_beside = [(p.key, k, p.cfg.differences(c)) for p in plans if p.key not in held
                           for k, c in held.items() if c.backbone.label == p.cfg.backbone.label]
    if plan_only:
        st.shards.record_plan([p.key for p in plans])
    elif any(p.units for p in plans):
        executor.check_store(st)
    groups = shared_passes(st, plans) if executor.shares_passes and not plan_only else [[p] for p in plans]
    for lead, *together in groups:
        runs = [ConfigRun.planned(p) for p in (lead, *together)]
        result.configs += runs
        if plan_only or not lead.units:
            continue
        run_units = partial(executor.run, st, lead, paths, options.workers,
                            **({"together": tuple(together)} if together else {}))
        try:
            compute_config(runs, lead.todo, run_units, options.strict, options.progress)
        except KeyboardInterrupt:
            raise Interrupted(_saved(result.configs)) from None
        finally:
            for run in runs:
                if run.extracted:
                    st[run.key].add_stats(run.extracted, run.extracted * run.views, run.seconds)
    result.skipped = manifest.unreadable + _skipped_images(st, manifest)
    return result


def _saved(runs: list[ConfigRun]) -> str:
    """What an interrupted extract keeps: rows are saved a whole unit (chunk) at a time, so images
    computed since the last saved unit are computed again by the next run."""
    return "; ".join(f"{r.key}: {r.reused + r.extracted} of {r.reused + r.extracted + r.pending} images saved"
                     f" ({r.extracted} in this run)" for r in runs)


def _skipped_images(st: FeatureStore, manifest: Manifest) -> list[SkippedImage]:
    """Manifest images whose row is FAILED in any config of the store (decoding is config-independent)."""
    return [SkippedImage(p, reason) for p, reason in st.failed_images(manifest.paths, manifest.digests)]

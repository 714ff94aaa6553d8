"""Scoring candidates by cross-validation on the train + validation images, with compare's machinery.

``FoldPool`` is what every candidate is scored on: the train + validation images every searched
configuration holds, one fold plan over them (train/crossval.py: stratified, grouped when the store
has groups), and each configuration's features of those images only, read once. The test split is
never selected, so never read: a search cannot see it. ``score`` fits a fresh head per fold
(crossval ``score_fold``) and summarises each metric over the folds (stats.py: Nadeau-Bengio
corrected intervals), as ``compare`` with folds does.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np

from ..errors import FeatcacheError, ParameterError
from ..heads import KerasHead, get_head_class
from ..heads.data import ArrayRows
from ..stores import FeatureRows, FeatureStore
from ..train.crossval import METRICS, FoldPlan, common_pool, cv_rows, make_folds, pool_groups, score_fold
from ..train.fit import HOLDOUT_FRACTION
from ..train.memory import plan_memory
from ..train.stats import Interval, metric_interval
from .candidates import Candidate

SEARCH_METRICS = METRICS  # what every fold is scored on, as compare scores it
LOWER_IS_BETTER = ("log_loss",)


def check_metric(metric: str) -> str:
    if metric not in SEARCH_METRICS:
        raise ParameterError("metric", f"unknown {metric!r}; choose one of {', '.join(SEARCH_METRICS)}")
    return metric


def better(metric: str, a: float, b: float) -> bool:
    """``a`` is a better mean of ``metric`` than ``b``."""
    return a < b if metric in LOWER_IS_BETTER else a > b


@dataclass(frozen=True)
class Score:
    """A candidate's cross-validated scores: every metric per fold, and its interval over the folds."""

    folds: dict[str, tuple[float, ...]]
    intervals: dict[str, Interval]
    seconds: float  # fitting and scoring, every fold

    def to_dict(self) -> dict:
        return {"folds": {m: list(v) for m, v in self.folds.items()},
                "intervals": {m: i.to_dict() for m, i in self.intervals.items()}, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict) -> Score:
        return cls({m: tuple(float(x) for x in v) for m, v in d["folds"].items()},
                   {m: Interval(**i) for m, i in d["intervals"].items()}, float(d["seconds"]))


class FoldPool:
    """The fold images of ``keys`` in an open store, their folds and their features (see the module).
    Features are held in memory when one configuration's fold rows fit ``limit`` bytes as float32,
    else read by the heads from the store, chunk by chunk, fold after fold."""

    def __init__(self, store: FeatureStore, keys: list[str], folds: int, seed: int, limit: int):
        self.store, self.keys, self.seed, self.limit = store, list(keys), seed, limit
        self.sets: dict[str, FeatureRows] = {k: store.rows([k]) for k in self.keys}  # lazy: nothing read
        first = self.sets[self.keys[0]]
        self.classes = first.classes
        if len(self.classes) < 2:
            raise FeatcacheError(f"{store.path} has {len(self.classes)} class; a classifier needs at least two "
                                 "class folders")
        self.paths, self.labels = common_pool(list(self.sets.values()))
        self.plan: FoldPlan = make_folds(self.paths, self.labels, folds, 1, seed,
                                         pool_groups(first.manifest, self.paths))
        self.dims = {k: int(fs.dim) for k, fs in self.sets.items()}
        self.views = {k: int(fs.n_views) for k, fs in self.sets.items()}
        self.configs = {k: store.config(k) for k in self.keys}
        # the network each configuration runs (a tap runs its network up to a block: the same one)
        self.networks = {k: f"{c.backbone.name}:{c.backbone.weights_id}:{c.backbone.input_size}"
                         for k, c in self.configs.items()}
        self._loaded: dict[str, np.ndarray] = {}
        self._digest: str | None = None
        self.streamed: set[str] = set()
        self.read_seconds = 0.0

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def digest(self) -> str:
        """Of what the folds are drawn from: the images (paths, content digests, labels) and the plan."""
        if self._digest is None:
            self._digest = self._pool_digest()
        return self._digest

    def _pool_digest(self) -> str:
        fs = self.sets[self.keys[0]]
        rows = cv_rows(fs)
        digests = fs.digests
        record = {"images": [[p, digests[rows[p]], int(y)] for p, y in zip(self.paths, self.labels, strict=True)],
                  "folds": self.plan.folds, "repeats": self.plan.repeats, "seed": self.seed,
                  "grouped": self.plan.grouped}
        return _sha(record)

    def config_digest(self, key: str) -> str:
        return _sha(self.configs[key].identity())

    def _selection(self, rows: FeatureRows) -> FeatureRows:
        """The fold images of ``rows``, in fold order: the test split is not among them."""
        at = cv_rows(rows)
        return rows.take(np.array([at[p] for p in self.paths], np.int64))

    def _one(self, key: str):
        if key in self._loaded:
            return self._loaded[key]
        sel = self._selection(self.sets[key])
        plan = plan_memory(sel, self.limit)
        if plan.streamed:
            self.streamed.add(key)
            return sel.windowed(plan.window_chunks)
        start = time.perf_counter()
        self._loaded[key] = sel.load()
        self.read_seconds += time.perf_counter() - start
        return self._loaded[key]

    def features(self, keys: tuple[str, ...]):
        """The fold rows of ``keys`` concatenated: arrays (n, V, D) held in memory, or the store's view."""
        parts = [self._one(k) for k in keys]
        if all(isinstance(p, np.ndarray) for p in parts):
            if len(parts) == 1:
                return ArrayRows(parts[0], self.labels)
            v = min(p.shape[1] for p in parts)
            return ArrayRows(np.concatenate([p[:, :v] for p in parts], axis=-1), self.labels)
        return self._selection(self.store.rows(list(keys))).windowed(
            plan_memory(self._selection(self.store.rows(list(keys[:1]))), self.limit).window_chunks)

    def cost(self, c: Candidate) -> tuple:
        return c.cost(self.dims, self.networks)

    def feature_dim(self, c: Candidate) -> int:
        return sum(self.dims[k] for k in c.keys)

    def min_views(self, c: Candidate) -> int:
        return min(self.views[k] for k in c.keys)


def candidate_digest(pool: FoldPool, c: Candidate) -> str:
    """What a resumed search recognises a scored candidate by: the candidate's record, the fold
    images and plan, and the identity of each of its configurations."""
    return _sha({"candidate": c.record(), "pool": pool.digest(),
                 "configs": {k: pool.config_digest(k) for k in c.keys}})


class OutOfTime(Exception):
    """The time budget ran out in the middle of a candidate: it is left out, unscored."""


def stops_on_validation(head: str) -> bool:
    """Heads whose fit decides its length on validation (the Keras heads: early stopping)."""
    return issubclass(get_head_class(head), KerasHead)


def score(pool: FoldPool, c: Candidate, seed: int, deadline: float | None = None) -> Score:
    """``c`` fitted on each fold's training part, scored on the rest (view 0, or TTA). A head
    that stops on validation holds out a share of each fold's training part for it. Past
    ``deadline`` (``time.monotonic()``) before a fold: OutOfTime."""
    X = pool.features(c.keys)
    head = c.make_head(pool.dims, seed)
    holdout = HOLDOUT_FRACTION if stops_on_validation(c.head) else 0.0
    start = time.perf_counter()
    folds = []
    for tr, te in pool.plan.splits:
        if deadline is not None and time.monotonic() > deadline:
            raise OutOfTime(c.label)
        folds.append(score_fold(X, pool.labels, tr, te, head, pool.n_classes, seed, c.tta, holdout))
    seconds = time.perf_counter() - start
    per = {m: tuple(round(float(getattr(f, m)), 6) for f in folds) for m in METRICS}
    return Score(per, {m: metric_interval(v, pool.plan.test_over_train, m) for m, v in per.items()}, round(seconds, 4))


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


__all__ = ["SEARCH_METRICS", "FoldPool", "OutOfTime", "Score", "better", "candidate_digest", "check_metric", "score"]

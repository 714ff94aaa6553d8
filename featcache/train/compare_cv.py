"""Cross-validated compare: every backbone config x head on the same stratified folds.

Fits use the cached features only (no re-extraction). Each entry gets the mean and a 95% interval
of accuracy, macro-F1, balanced accuracy and log-loss over the folds (stats.py: Nadeau-Bengio
corrected t), a corrected paired t-test against the leader (and every pair in the JSON), its cost
(backbone views/s as extracted, feature size, backbone parameters, fit time) and, with ``shots``, accuracy
against labelled images per class. Ranked by mean accuracy, then log-loss. The test split is
touched once: the winner, refit on every train + validation image, is scored on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FeatcacheError, ParameterError, Remedy, Step
from ..heads import FitContext, make_head
from ..progress import progress_bar
from ..stores import FeatureRows, open_store
from .crossval import (
    METRICS,
    FoldPlan,
    common_pool,
    cv_rows,
    make_folds,
    pool_groups,
    score_fold,
    split_scores,
    subsample_per_class,
)
from .memory import plan_memory, resolve_memory_limit, rows_for
from .probe import view_proba
from .stats import METHOD, Interval, PairedTest, metric_interval, paired_test


@dataclass
class CVEntry:
    key: str
    backbone: str
    head: str
    scores: dict[str, Interval]  # metric -> interval over the folds
    fold_accuracy: list[float]  # per fold, in FoldPlan order: what the paired tests compare
    fit_seconds: float  # mean per fold
    views_per_s: float | None  # backbone forward passes per second, as measured when extracted
    feature_dim: int
    backbone_params: int | None
    shots: dict[str, Interval] = field(default_factory=dict)  # "1", "5", "all" -> accuracy
    vs_best: PairedTest | None = None  # None for the leader itself
    pareto: bool = False  # no other entry is both more accurate and faster to extract

    @property
    def name(self) -> str:
        return f"{self.key} / {self.head}"

    def row(self) -> dict:
        """One flat leaderboard row (CSV, table, report)."""
        row = {"key": self.key, "head": self.head}
        for m in METRICS:
            i = self.scores[m]
            row |= {m: i.mean, f"{m}_low": i.low, f"{m}_high": i.high}
        row["vs_best"] = ("best" if self.vs_best is None else
                          f"{'p' if self.vs_best.significant else 'n.s. p'}={self.vs_best.p_value:.3g}")
        row |= {"fit_seconds": self.fit_seconds, "views_per_s": self.views_per_s,
                "feature_dim": self.feature_dim, "backbone_params": self.backbone_params, "pareto": self.pareto}
        return row

    def to_dict(self) -> dict:
        return {**self.row(), "backbone": self.backbone, "intervals": {m: i.to_dict() for m, i in self.scores.items()},
                "fold_accuracy": self.fold_accuracy, "shots": {s: i.to_dict() for s, i in self.shots.items()},
                "vs_best_test": None if self.vs_best is None else {
                    "diff": self.vs_best.diff, "t": self.vs_best.t, "p_value": self.vs_best.p_value,
                    "significant": self.vs_best.significant}}


@dataclass
class CVCompareResult:
    store: str
    entries: list[CVEntry]  # best first
    folds: int
    repeats: int
    seed: int
    images: int  # train + validation images in the folds
    pairs: list[dict]  # every pair's corrected paired test on accuracy
    winner_test: dict | None  # the winner's scores on the test split (None: no test images)
    configs: dict[str, dict]  # key -> FeatureConfig record
    note: str = ""
    shots: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    out: str | None = None
    tta: bool = False  # held-out images scored on the mean over their cached views
    grouped: bool = False  # folds drawn per group
    skip_errors: dict[str, FeatcacheError] = field(default_factory=dict, repr=False)  # key -> the error itself

    def rows(self) -> list[dict]:
        return [e.row() for e in self.entries]

    def to_dict(self) -> dict:
        return {"store": self.store, "mode": "cross-validation", "folds": self.folds, "repeats": self.repeats,
                "seed": self.seed, "images": self.images, "interval": f"95% {METHOD}", "note": self.note,
                "leaderboard": [e.to_dict() for e in self.entries], "pairs": self.pairs,
                "winner_test": self.winner_test, "shots": self.shots, "configs": self.configs,
                "skipped": self.skipped, "out": self.out, "tta": self.tta, "grouped_folds": self.grouped}


def parse_shots(shots: list[int | None] | None) -> list[int | None]:
    """Distinct budgets, "all" (None) last."""
    shots = list(shots or [])
    if any(s is not None and s < 1 for s in shots):
        raise ParameterError("shots", "labelled images per class must be at least 1 (or all)")
    return sorted(set(shots), key=lambda s: (s is None, s or 0))


def shot_label(s: int | None) -> str:
    return "all" if s is None else str(s)


def cross_validated_compare(store: str | Path, heads: list[str], folds: int, repeats: int = 1,
                            backbones: list[str] | None = None, seed: int = 0, shots: list[int | None] | None = None,
                            progress: bool = True, params: bool = True, tta: bool = False,
                            memory_limit: str | int | None = None) -> CVCompareResult:
    """``tta``: score held-out images on the mean over their cached views (one view: view 0).
    A config whose features (as float32) exceed ``memory_limit`` (default: half the available
    memory) is read from the store by the heads, chunk by chunk, fold after fold."""
    with open_store(store) as st:  # open while the folds read the views
        return _cross_validate(st, heads, folds, repeats, backbones, seed, shots, progress, params, tta,
                               resolve_memory_limit(memory_limit))


def _cross_validate(st, heads, folds, repeats, backbones, seed, shots, progress, params, tta, limit) -> CVCompareResult:
    from ..report.cost import backbone_parameters

    budgets = parse_shots(shots)
    sets, stats, skipped, configs, skip_errors = {}, {}, {}, {}, {}
    keys = [st.resolve_key(b) for b in backbones] if backbones else st.keys()
    path = str(Path(st.path).resolve())
    manifest = st.manifest()
    if manifest.multilabel:
        raise ParameterError("folds", f"{path} has several labels per image; cross-validated compare scores one "
                                      "label per image", remedy="compare without folds: it ranks multi-label "
                                                                "configurations by validation mean average precision")
    for key in keys:
        try:
            sets[key] = st.rows([key])  # lazy: nothing read yet
        except FeatcacheError as exc:  # e.g. incomplete features: report, compare the rest
            skipped[key], skip_errors[key] = str(exc), exc
            continue
        stats[key] = st.config_status(key, manifest).stats
        configs[key] = st.config(key).to_dict()
    if not keys:
        raise FeatcacheError(f"{path} holds no features yet",
                             remedy=Remedy("run {} first", Step.of("extract", data_dir="DATA_DIR", store=path)))
    if not sets:
        raise FeatcacheError("no feature config could be compared: " +
                             "; ".join(f"{k}: {why}" for k, why in skipped.items()))
    first = next(iter(sets.values()))
    if len(first.classes) < 2:
        raise FeatcacheError(f"{path} has {len(first.classes)} class; a classifier needs at least two class folders")
    paths, labels = common_pool(list(sets.values()))
    plan = make_folds(paths, labels, folds, repeats, seed, pool_groups(manifest, paths))
    n_classes = len(first.classes)

    entries = []
    per_entry = len(plan.splits) * (1 + len([b for b in budgets if b is not None]))
    bar = progress_bar(total=len(sets) * len(heads) * per_entry, desc="compare", unit="fit", enabled=progress)
    try:
        for key, fs in sets.items():
            source = rows_for(fs, plan_memory(fs, limit))  # in memory, or the store's view
            X, y = _pool_rows(fs, source, paths)
            bb = fs.configs[0].backbone
            n_params = backbone_parameters(bb) if params else None
            for head in heads:
                folds_scored = [score_fold(X, y, tr, te, head, n_classes, seed, tta) for tr, te in plan.splits]
                bar.update(len(plan.splits))
                curve = {}
                for s in budgets:
                    if s is None:
                        curve["all"] = _interval([f.accuracy for f in folds_scored], plan, "accuracy")
                        continue
                    accs = [score_fold(X, y, subsample_per_class(tr, y, s, seed + i), te, head, n_classes,
                                       seed, tta).accuracy for i, (tr, te) in enumerate(plan.splits)]
                    curve[shot_label(s)] = _interval(accs, plan, "accuracy")
                    bar.update(len(plan.splits))
                entries.append(CVEntry(
                    key=key, backbone=bb.name, head=head,
                    scores={m: _interval([getattr(f, m) for f in folds_scored], plan, m) for m in METRICS},
                    fold_accuracy=[round(f.accuracy, 6) for f in folds_scored],
                    fit_seconds=round(float(np.mean([f.fit_seconds for f in folds_scored])), 4),
                    views_per_s=stats[key].views_per_s, feature_dim=int(X.shape[-1]),
                    backbone_params=n_params, shots=curve))
    finally:
        bar.close()
    entries.sort(key=lambda e: (-e.scores["accuracy"].mean, e.scores["log_loss"].mean, e.fit_seconds))
    pairs = _pair_tests(entries, plan)
    _mark_pareto(entries)
    winner = entries[0]
    return CVCompareResult(
        store=path, entries=entries, folds=plan.folds, repeats=plan.repeats, seed=seed, images=len(paths),
        pairs=pairs, winner_test=_winner_on_test(sets[winner.key], limit, winner.head, n_classes, seed, tta),
        configs=configs, note=plan.note, shots=[shot_label(s) for s in budgets], skipped=skipped, tta=tta,
        grouped=plan.grouped, skip_errors=skip_errors)


def _pool_rows(fs: FeatureRows, source, paths: list[str]) -> tuple[object, np.ndarray]:
    """The fold pool's rows (of ``source``: ``fs`` in memory or streamed) and labels, in ``paths`` order."""
    rows = cv_rows(fs)
    idx = np.array([rows[p] for p in paths])
    return source.take(idx), fs.labels[idx].astype(int)


def _interval(scores: list[float], plan: FoldPlan, metric: str) -> Interval:
    return metric_interval(scores, plan.test_over_train, metric)


def _pair_tests(entries: list[CVEntry], plan: FoldPlan) -> list[dict]:
    """Each entry against the leader (``vs_best``), and every pair for the JSON."""
    pairs = []
    for i, a in enumerate(entries):
        for b in entries[i + 1:]:
            t = paired_test(a.fold_accuracy, b.fold_accuracy, plan.test_over_train)
            if i == 0:
                b.vs_best = t
            pairs.append({"a": a.name, "b": b.name, "metric": "accuracy", "diff": t.diff, "t": t.t,
                          "p_value": t.p_value, "significant": t.significant})
    return pairs


def _mark_pareto(entries: list[CVEntry]) -> None:
    """The accuracy-vs-throughput front: no other entry at least as good on both and better on one."""
    known = [e for e in entries if e.views_per_s]
    for e in known:
        acc, speed = e.scores["accuracy"].mean, e.views_per_s
        e.pareto = not any(o is not e and o.scores["accuracy"].mean >= acc and o.views_per_s >= speed and
                           (o.scores["accuracy"].mean > acc or o.views_per_s > speed) for o in known)


def _winner_on_test(fs: FeatureRows, limit: int, head: str, n_classes: int, seed: int, tta: bool) -> dict | None:
    """The winner refit on every train + validation image, scored once on the untouched test split."""
    pool, test = np.array(sorted(cv_rows(fs).values())), fs.positions("test")
    if len(test) == 0:
        return None
    X, labels = rows_for(fs, plan_memory(fs, limit)), fs.labels
    model = make_head(head, seed=seed)
    model.fit(X.take(pool), labels[pool], context=FitContext(n_classes=n_classes))
    s = split_scores(labels[test].astype(int), view_proba(model, X.take(test), tta), n_classes)
    return {"key": fs.keys[0], "head": head, "n": int(len(test)),
            **{m: round(getattr(s, m), 4) for m in METRICS}}

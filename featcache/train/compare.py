"""Leaderboard of backbones x heads on one store: which frozen backbone suits this data best.

Every complete feature configuration in the store is tried with every requested head (default
parameters); incomplete ones are listed as skipped with the reason. Without ``folds``: one fit on
the store's train split, ranked by validation accuracy, then validation loss. With ``folds``:
cross-validation over train + validation (compare_cv.py), with intervals, paired tests, cost and
few-shot curves. Either way the test split never decides a rank.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import FeatcacheError, ParameterError, Remedy, Step
from ..heads import make_head
from ..progress import progress_bar
from ..report.charts import plot_bars, plot_curves, plot_pareto
from ..report.html import Report, write_report
from ..stores import open_store
from .compare_cv import CVCompareResult, cross_validated_compare
from .fit import fit_on_data, load_training_data
from .metrics import write_leaderboard
from .probe import ProbeOptions
from .run import replaced_folder
from .stats import METHOD

REPORT_FILE = "compare.json"  # the leaderboard; also what makes a folder a compare's, which a new compare replaces


@dataclass
class CompareEntry:
    key: str
    backbone: str
    head: str
    val_accuracy: float | None
    val_loss: float | None
    test_accuracy: float | None
    fit_seconds: float
    views_per_s: float | None  # backbone forward passes per second, as measured when extracted
    feature_dim: int
    run_dir: str | None = None
    val_map: float | None = None  # multi-label: validation mean average precision (macro), what ranks
    test_map: float | None = None


@dataclass
class CompareResult:
    store: str
    entries: list[CompareEntry]  # best first
    skipped: dict[str, str] = field(default_factory=dict)  # key -> why
    out: str | None = None
    skip_errors: dict[str, FeatcacheError] = field(default_factory=dict, repr=False)  # key -> the error itself

    def rows(self) -> list[dict]:
        return [asdict(e) for e in self.entries]

    def to_dict(self) -> dict:
        return {"store": self.store, "leaderboard": self.rows(), "skipped": self.skipped, "out": self.out}


def rank_key(e: CompareEntry) -> tuple:
    """Validation accuracy (multi-label: validation mean average precision), then validation loss,
    then fit time: the test split never decides a rank."""
    score = e.val_map if e.val_map is not None else e.val_accuracy
    return (-(score or 0.0), e.val_loss if e.val_loss is not None else float("inf"), e.fit_seconds)


def compare(store: str | Path, heads: tuple[str, ...] | list[str] = ("logreg",), out: str | Path | None = None,
            backbones: list[str] | None = None, seed: int = 0, progress: bool = True, folds: int | None = None,
            repeats: int = 1, shots: list[int | None] | None = None, tta: bool = False,
            memory_limit: str | int | None = None) -> CompareResult | CVCompareResult:
    """Fit each head on each feature config (all in the store unless ``backbones`` narrows it).

    ``folds`` (and ``repeats``, ``shots``: labelled images per class, None = all) cross-validate
    instead of fitting once. ``tta``: held-out images are scored on the mean over their cached
    views (configurations with one view: view 0). With ``out``: ``compare.csv``, ``compare.json``,
    the charts and ``report.html``; without folds also one run folder per entry under ``out/runs/``.
    Features larger than ``memory_limit`` (a size such as "2GB"; default half the available memory)
    are read from the store by the heads, chunk by chunk.
    """
    heads = list(heads) or ["logreg"]
    for h in heads:
        make_head(h)  # an unknown head: fail before any work
    if folds is None and (shots or repeats != 1):
        raise ParameterError("folds", "shots and repeats need cross-validation: give folds too")
    if folds is not None:
        result = cross_validated_compare(store, heads, folds, repeats, backbones, seed, shots, progress, tta=tta,
                                         memory_limit=memory_limit)
        if out is not None:
            with replaced_folder(out, REPORT_FILE) as (staging, final):
                result.out = str(final)
                write_cv_outputs(result, staging)
        return result
    if out is None:
        return _compare(store, heads, None, None, backbones, seed, progress, tta, memory_limit)
    with replaced_folder(out, REPORT_FILE) as (staging, final):  # a killed compare leaves the last report whole
        return _compare(store, heads, staging, final, backbones, seed, progress, tta, memory_limit)


def _compare(store, heads, out_dir: Path | None, final: Path | None, backbones, seed, progress, tta,
             memory_limit) -> CompareResult:
    """One fit per head and config; run folders and outputs written under ``out_dir``, which
    becomes ``final`` (the paths the result records)."""
    with open_store(store) as st:
        keys = [st.resolve_key(b) for b in backbones] if backbones else st.keys()
        path = str(Path(st.path).resolve())
    if not keys:
        raise FeatcacheError(f"{path} holds no features yet",
                             remedy=Remedy("run {} first", Step.of("extract", data_dir="DATA_DIR", store=path)))
    entries, skipped, skip_errors = [], {}, {}
    bar = progress_bar(total=len(keys) * len(heads), desc="compare", unit="fit", enabled=progress)
    try:
        for key in keys:
            try:
                data = load_training_data(path, [key], seed, memory_limit)
            except FeatcacheError as exc:  # e.g. incomplete features: report, keep comparing the rest
                skipped[key], skip_errors[key] = str(exc), exc
                bar.update(len(heads))
                continue
            try:
                for head in heads:
                    run = out_dir / "runs" / f"{key}--{head}" if out_dir else None
                    probe = ProbeOptions(tta=tta and data.n["views"] > 1)
                    r = fit_on_data(data, make_head(head, seed=seed), out=run, progress=False, probe=probe)
                    entries.append(CompareEntry(
                        key=key, backbone=data.configs[0].backbone.name, head=head,
                        val_accuracy=r.val_accuracy, val_loss=r.val.log_loss if r.val else None,
                        test_accuracy=r.test_accuracy, fit_seconds=round(r.fit_seconds, 3),
                        views_per_s=data.stats[key].views_per_s, feature_dim=data.input_dim,
                        run_dir=str(final / Path(r.run_dir).relative_to(out_dir)) if out_dir else r.run_dir,
                        val_map=r.val.mean_ap if r.multilabel and r.val else None,
                        test_map=r.test.mean_ap if r.multilabel and r.test else None))
                    bar.update(1)
            finally:
                data.close()  # streamed: its store
    finally:
        bar.close()
    if not entries:
        raise FeatcacheError("no feature config could be compared: " +
                             "; ".join(f"{k}: {why}" for k, why in skipped.items()))
    entries.sort(key=rank_key)
    result = CompareResult(path, entries, skipped, str(final) if final else None, skip_errors)
    if out_dir is not None:
        write_outputs(result, out_dir)
    return result


def write_outputs(result: CompareResult, out: Path) -> None:
    write_leaderboard(result.rows(), out / "compare.csv", out / REPORT_FILE, result.to_dict())
    e = result.entries
    plot_bars([f"{x.key} / {x.head}" for x in e], {"validation": [x.val_accuracy for x in e],
                                                   "test": [x.test_accuracy for x in e]}, out / "compare.png")
    write_report(Report("featcache compare", [f"store: {result.store}", "one fit per entry on the train split, "
                                              "ranked by validation accuracy (one split, not cross-validated)"],
                        [("Leaderboard", result.rows(), [c for c in result.rows()[0] if c != "run_dir"])],
                        [("Accuracy", out / "compare.png")], data=result.to_dict()), out / "report.html")


def write_cv_outputs(result: CVCompareResult, out: Path) -> None:
    """compare.csv, compare.json, compare.png (accuracy with intervals), cost.png (accuracy vs
    throughput), shots.png (with shots) and report.html holding them all."""
    out.mkdir(parents=True, exist_ok=True)
    write_leaderboard(result.rows(), out / "compare.csv", out / REPORT_FILE, result.to_dict())
    e = result.entries
    names = [x.name for x in e]
    accs = {m: [x.scores[m].mean for x in e] for m in ("accuracy", "balanced_accuracy", "macro_f1")}
    bounds = {m: [(x.scores[m].low, x.scores[m].high) for x in e] for m in accs}
    charts = [("Mean CV scores with 95% intervals", plot_bars(names, accs, out / "compare.png", "score",
                                                              errors=bounds))]
    charts.append(("Accuracy vs extraction throughput", plot_pareto(
        names, accs["accuracy"], [x.views_per_s for x in e], [x.pareto for x in e], out / "cost.png")))
    if result.shots:
        curves = {x.name: {s: (i.mean, i.low, i.high) for s, i in x.shots.items()} for x in e}
        charts.append(("Accuracy vs labelled images per class", plot_curves(curves, out / "shots.png")))
    rows = result.rows()
    tables = [("Leaderboard (best first)", rows, list(rows[0]))]
    if result.shots:
        tables.append(("Few-shot accuracy (mean over folds)", [
            {"key": x.key, "head": x.head, **{s: x.shots[s].mean for s in result.shots}} for x in e],
            ["key", "head", *result.shots]))
    if result.winner_test:
        tables.append(("The winner on the test split (touched once)", [result.winner_test],
                       list(result.winner_test)))
    notes = [f"store: {result.store}",
             f"{result.folds}-fold stratified cross-validation x {result.repeats} repeat(s), seed {result.seed}, over "
             f"{result.images} train + validation images; intervals: 95% {METHOD}; vs_best: corrected paired "
             f"t-test on accuracy against the leader (n.s.: not significant at 5%)."
             + (" Held-out images scored on the mean over their cached views (TTA)." if result.tta else ""),
             *filter(None, [result.note])]
    notes += [f"skipped {k}: {why}" for k, why in result.skipped.items()]
    write_report(Report("featcache compare", notes, tables, charts, result.configs, result.to_dict()),
                 out / "report.html")


__all__ = ["CompareEntry", "CompareResult", "compare"]

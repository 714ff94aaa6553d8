"""Benchmark: `featcache auto` against the plain probe, on a real store (issue #25).

The store: the ORL faces (400 photos, 40 people, 70/20/10 split by content digest) through
efficientnet_lite0, its final features and taps of two blocks (one forward pass), as
benchmarks/bench_probe.py extracts them (``--backbones lite0,lite1`` adds lite1). The plain probe
is `fit-head -b efficientnet_lite0 --head logreg`; auto searches every configuration x head x
grid, greedy concatenations, an ensemble, by 5-fold CV on train + validation within ``--budget``,
and only its winner is scored on test. Both test numbers are printed with the winner's CV and
selection-adjusted estimates, and written to benchmarks/results/auto.json.

Usage:  python benchmarks/bench_auto.py [--work DIR] [--budget 2m] [--heads logreg,knn,linear,mlp]
The store is reused between runs (extraction is resumable); the search starts afresh each run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from featcache.auto import AutoOptions, auto  # noqa: E402
from featcache.cli import cli  # noqa: E402
from featcache.cli.common import command_line  # noqa: E402
from featcache.extraction import ExtractOptions, extract  # noqa: E402
from featcache.heads import make_head  # noqa: E402
from featcache.ingest.sample_data import fetch  # noqa: E402
from featcache.stores import open_store  # noqa: E402
from featcache.train.fit import fit_head  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "auto.json"  # one entry per data set
L0 = "efficientnet_lite0"
TAPS = ("block10", "block14")


def store_for(work: Path, dataset: str, backbones: list[str], taps: list[str]) -> tuple[Path, float]:
    store = work / f"{dataset}-auto.zarr"
    start = time.perf_counter()
    extract(fetch(dataset), store, ExtractOptions(backbones=backbones, taps=taps, progress=True))
    return store, round(time.perf_counter() - start, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "featcache-bench")
    ap.add_argument("--dataset", default="orl-faces")
    ap.add_argument("--backbones", default=L0, help="comma-separated backbones to extract (each with the taps)")
    ap.add_argument("--taps", default=",".join(TAPS), help="comma-separated blocks of each backbone to tap")
    ap.add_argument("--budget", default="2m")
    ap.add_argument("--heads", default="logreg,knn,linear,mlp")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    backbones = [b if b.startswith("efficientnet") else f"efficientnet_{b}" for b in args.backbones.split(",")]
    taps = [t for t in args.taps.split(",") if t]
    store, extract_s = store_for(args.work, args.dataset, backbones, taps)
    with open_store(store) as st:
        plain_key = st.resolve_key(L0)
    start = time.perf_counter()
    plain = fit_head(store, [plain_key], make_head("logreg", seed=args.seed), seed=args.seed, progress=False)
    plain_s = time.perf_counter() - start

    out = args.work / f"{args.dataset}-auto-run"
    shutil.rmtree(out, ignore_errors=True)  # a fresh search: its time is the budget's
    start = time.perf_counter()
    result = auto(store, out, AutoOptions(budget=args.budget, folds=args.folds, seed=args.seed,
                                          heads=tuple(args.heads.split(",")), progress=True),
                  word_step=lambda step: command_line(cli, step))
    auto_s = time.perf_counter() - start
    record = result.to_dict()
    w = record["winner"]
    summary = {
        "dataset": args.dataset, "backbones": backbones, "taps": taps, "budget": args.budget,
        "heads": args.heads.split(","), "folds": record["folds"], "seed": args.seed,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "extract_seconds_this_run": extract_s,
        "plain_probe": {"keys": [plain_key], "head": "logreg", "val_accuracy": plain.val_accuracy,
                        "test_accuracy": plain.test_accuracy, "test_n": plain.n["test"],
                        "seconds": round(plain_s, 2)},
        "auto": {"winner": w["label"], "cv": w["cv"], "best_cv": w["best_cv"], "best": w["best_label"],
                 "selection_adjusted": w["selection_adjusted"], "tied": w["tied"],
                 "test_accuracy": w["test"]["accuracy"] if w["test"] else None,
                 "test_n": w["test"]["n"] if w["test"] else 0, "candidates": record["candidates"],
                 "stopped": record["stopped"], "seconds": round(auto_s, 1), "command": w["command"]},
        "leaderboard_top10": [{"label": r["label"], "cv": r["intervals"]["accuracy"], "tied": r["tied"],
                               "seconds": r["seconds"]} for r in record["board"][:10]],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    previous = previous if "datasets" in previous else {}
    RESULTS.write_text(json.dumps({"datasets": {**previous.get("datasets", {}), args.dataset: summary}}, indent=2))
    a = summary["auto"]
    print(f"\n{'':<14}{'chosen':<64}{'CV acc':>8}{'adjusted':>10}{'test acc':>10}{'seconds':>9}")
    print(f"{'plain probe':<14}{L0 + ' / logreg':<64}{'-':>8}{'-':>10}{plain.test_accuracy:>10.4f}{plain_s:>9.1f}")
    adj = a["selection_adjusted"]["mean"] if a["selection_adjusted"] else float("nan")
    print(f"{'auto':<14}{a['winner'][:63]:<64}{a['cv']['mean']:>8.4f}{adj:>10.4f}{a['test_accuracy']:>10.4f}"
          f"{a['seconds']:>9.1f}")
    print(f"{a['candidates']} candidates, {a['tied']} tied with the best ({a['best']}); stopped: {a['stopped']}")
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()

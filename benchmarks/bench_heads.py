"""Benchmark: training a head on cached features vs the classic end-to-end way, on the ORL faces.

1. Time per epoch of the `mlp` head (the Innolitics head) on cached efficientnet_lite0 features
   (K=2 augmented views per image), against the classic recipe: the same head trained through the
   frozen efficientnet_lite0 with on-the-fly augmentation (Keras RandomRotation/RandomTranslation/
   RandomZoom/RandomFlip layers in the graph), on the same images and split, in the same process.
2. The logistic-regression C sweep on ~2,500 cached rows (ORL with K=8 views): a plain scikit-learn
   loop over the grid vs featcache's path (one BLAS thread, warm starts along C).

Usage:  python benchmarks/bench_heads.py [--classic-epochs 2] [--work DIR]
Writes benchmarks/results/heads.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from featcache.extraction import ExtractOptions, extract  # noqa: E402
from featcache.heads import FitContext, make_head  # noqa: E402
from featcache.heads.logreg import DEFAULT_C_GRID  # noqa: E402
from featcache.ingest.augment import AugmentParams  # noqa: E402
from featcache.ingest.sample_data import fetch  # noqa: E402
from featcache.stores import open_store  # noqa: E402
from featcache.train.fit import load_training_data  # noqa: E402

BACKBONE = "efficientnet_lite0"
RESULTS = Path(__file__).parent / "results" / "heads.json"
SCALE_RESULTS = Path(__file__).parent / "results" / "heads_scale.json"
MLP_GRID = {"lr": [1e-3, 3e-4], "dropout": [0.3, 0.5], "hidden": [128, 256]}  # 8 configurations


def epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.t)

    return EpochTimer()


def ensure_store(data: Path, store: Path, views: int) -> float:
    """Extract (or resume: a complete store is reused); return the one-off extraction seconds."""
    extract(data, store, ExtractOptions(backbones=[BACKBONE], augment=AugmentParams(augmented_views=views), progress=True))
    with open_store(store) as st:
        return float(st.config_status(st.resolve_key(BACKBONE)).stats.seconds)


def bench_cached_mlp(store: Path, epochs: int, classic_epochs: int) -> dict:
    data = load_training_data(store, [BACKBONE])
    timer = epoch_timer()
    start = time.perf_counter()
    head = make_head("mlp", {"epochs": epochs, "patience": epochs}).fit(
        data.X_train, data.y_train, validation=(data.X_val, data.y_val),
        context=FitContext(n_classes=len(data.classes), callbacks=(timer,)))
    total = time.perf_counter() - start
    stopped = make_head("mlp").fit(data.X_train, data.y_train, validation=(data.X_val, data.y_val))
    same = make_head("mlp", {"epochs": classic_epochs}).fit(data.X_train, data.y_train,
                                                           validation=(data.X_val, data.y_val))
    return {
        "epochs": len(timer.times), "fit_seconds": total, "first_epoch_s": timer.times[0],
        "epoch_s_median": float(np.median(timer.times[1:])), "epoch_s_mean": total / len(timer.times),
        "test_accuracy_fixed_epochs": float(np.mean(head.predict(data.X_test) == data.y_test)),
        "test_accuracy_classic_epochs": float(np.mean(same.predict(data.X_test) == data.y_test)),
        "early_stopped": {"epochs": stopped.epochs_trained_,
                          "test_accuracy": float(np.mean(stopped.predict(data.X_test) == data.y_test))},
        "n": data.n,
    }


def bench_classic(store: Path, epochs: int, batch_size: int = 64) -> dict:
    """The same MLP head trained through the frozen backbone, augmenting on the fly."""
    import keras

    from featcache.backbones import get_backbone
    from featcache.backbones.model import build_feature_extractor, resolve_config
    from featcache.ingest.decode import read_image
    from featcache.serve.layers import ChannelAffine

    with open_store(store) as st:
        m = st.manifest()
    size = get_backbone(BACKBONE).input_size
    images = np.stack([read_image(Path(m.data_root) / p, size) for p in m.paths]).astype(np.float32)
    split = {s: m.splits == i for i, s in enumerate(("train", "validation", "test"))}
    n_classes = len(m.classes)
    Y = keras.utils.to_categorical(m.labels, n_classes)

    keras.utils.set_random_seed(0)
    cfg = resolve_config(BACKBONE)
    backbone = build_feature_extractor(cfg)  # frozen (trainable=False): BatchNorm in inference mode
    inputs = keras.Input((size, size, 3))
    x = keras.layers.RandomRotation(15 / 360, fill_mode="nearest")(inputs)
    x = keras.layers.RandomTranslation(0.15, 0.15, fill_mode="nearest")(x)
    x = keras.layers.RandomZoom(0.15, fill_mode="nearest")(x)
    x = keras.layers.RandomFlip("horizontal")(x)
    x = ChannelAffine.from_preprocess(get_backbone(BACKBONE).preprocess)(x)
    x = backbone(x, training=False)
    x = make_head("mlp")._hidden_layers(x)  # the very same BatchNorm/Dropout/Dense/BatchNorm/Dropout
    outputs = keras.layers.Dense(n_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    timer = epoch_timer()
    start = time.perf_counter()
    model.fit(images[split["train"]], Y[split["train"]], batch_size=batch_size, epochs=epochs, verbose=0,
              validation_data=(images[split["validation"]], Y[split["validation"]]), callbacks=[timer])
    total = time.perf_counter() - start
    proba = model.predict(images[split["test"]], batch_size=batch_size, verbose=0)
    return {
        "epochs": epochs, "fit_seconds": total, "first_epoch_s": timer.times[0],
        "epoch_s_median": float(np.median(timer.times[1:] if len(timer.times) > 1 else timer.times)),
        "epoch_s_mean": total / epochs,
        "test_accuracy": float(np.mean(proba.argmax(1) == m.labels[split["test"]])),
    }


def bench_logreg(store: Path) -> dict:
    from sklearn.linear_model import LogisticRegression

    data = load_training_data(store, [BACKBONE])
    n, v, d = data.X_train.shape
    grid = sorted(DEFAULT_C_GRID)

    # Baseline: what one writes by hand, a cold scikit-learn fit per C with default threading.
    X = data.X_train.reshape(n * v, d)
    y = np.repeat(data.y_train, v)
    mean, std = X.mean(0), X.std(0)
    std[std < 1e-8] = 1
    Xs, Xv = (X - mean) / std, (data.X_val - mean) / std
    start = time.perf_counter()
    naive = []
    for C in grid:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            naive.append(LogisticRegression(C=C, max_iter=1000).fit(Xs, y).score(Xv, data.y_val))
    naive_s = time.perf_counter() - start

    out = {"rows": int(n * v), "dim": int(d), "classes": len(data.classes), "grid": grid,
           "sklearn_loop": {"seconds": naive_s, "best_val_accuracy": float(max(naive))}}
    for name, warm in (("featcache_cold", False), ("featcache_warm", True)):
        start = time.perf_counter()
        head = make_head("logreg", {"warm_start": warm}).fit(data.X_train, data.y_train,
                                                             validation=(data.X_val, data.y_val))
        out[name] = {"seconds": time.perf_counter() - start, "C": head.C_,
                     "best_val_accuracy": max(r["val_accuracy"] for r in head.grid_scores_),
                     "test_accuracy": float(np.mean(head.predict(data.X_test) == data.y_test))}
    return out


def bench_mlp_sweep(store: Path, repeats: int) -> dict:
    """8 mlp configurations trained together (one sweep) against one configuration's fit-head fit."""
    from featcache.train.fit import fit_on_data
    from featcache.train.sweep import sweep

    data = load_training_data(store, ["efficientnet_lite0"])
    one, together, best = [], [], None
    for _ in range(repeats):
        r = fit_on_data(data, make_head("mlp"), progress=False, evaluate_test=False)
        one.append(r.fit_seconds)
        sw = sweep(store, ["efficientnet_lite0"], "mlp", MLP_GRID, progress=False)
        together.append(sw.fit_seconds)
        best = {"params": sw.best.params, "val_accuracy": sw.best.val.accuracy,
                "epochs": [t.result.summary["epochs_trained"] for t in sw.trials]}
    one_s, sweep_s = float(np.median(one)), float(np.median(together))
    return {"configurations": 8, "grid": MLP_GRID, "one_fit_s": one, "sweep_fit_s": together,
            "one_fit_val_accuracy": r.val.accuracy, "sweep_best": best, "ratio_sweep_over_one_fit": sweep_s / one_s}


def bench_c_sweep(store: Path, repeats: int) -> dict:
    """featcache's stacked C sweep against scikit-learn fitting each C, cold, on the same rows."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from featcache.train.sweep import sweep

    data = load_training_data(store, ["efficientnet_lite0"])
    n, v, d = data.X_train.shape
    X = data.X_train.reshape(n * v, d)
    y = np.repeat(data.y_train, v)
    mean, std = X.mean(0), X.std(0)
    std[std < 1e-8] = 1
    Xs, Xv = ((X - mean) / std).astype(np.float32), ((data.X_val - mean) / std).astype(np.float32)
    grid = sorted(DEFAULT_C_GRID)

    def sklearn_loop(threads):
        with threadpool_limits(limits=threads), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [LogisticRegression(C=C, max_iter=1000).fit(Xs, y).score(Xv, data.y_val) for C in grid]

    out = {"rows": int(n * v), "dim": int(d), "classes": len(data.classes), "grid": grid}
    times = {"featcache_sweep": [], "sklearn_1_thread": [], "sklearn_default_threads": []}
    for _ in range(repeats):
        start = time.perf_counter()
        sw = sweep(store, ["efficientnet_lite0"], "logreg", {"C": grid}, progress=False)
        times["featcache_sweep"].append(sw.fit_seconds)
        start = time.perf_counter()
        acc1 = sklearn_loop(1)
        times["sklearn_1_thread"].append(time.perf_counter() - start)
        start = time.perf_counter()
        sklearn_loop(None)
        times["sklearn_default_threads"].append(time.perf_counter() - start)
    med = {k: float(np.median(t)) for k, t in times.items()}
    by_c = {t.params["C"]: t.val.accuracy for t in sw.trials}
    out.update(seconds=times, median_s=med,
               featcache={"C": sw.best.params["C"], "val_accuracy": sw.best.val.accuracy, "per_C": by_c},
               sklearn={"C": grid[int(np.argmax(acc1))], "val_accuracy": float(max(acc1)),
                        "per_C": dict(zip(grid, acc1, strict=True))},
               speedup_vs_sklearn_1_thread=med["sklearn_1_thread"] / med["featcache_sweep"],
               speedup_vs_sklearn_default_threads=med["sklearn_default_threads"] / med["featcache_sweep"])
    return out


def bench_streaming(store: Path, epochs: int) -> dict:
    """Median epoch time of the mlp head in memory and streamed from the same store (local disk)."""
    out = {}
    for name, limit in (("in_memory", None), ("streamed", "16MB")):
        data = load_training_data(store, ["efficientnet_lite0"], memory_limit=limit)
        timer = epoch_timer()
        try:
            make_head("mlp", {"epochs": epochs, "patience": epochs}).fit(
                data.X_train, data.y_train, validation=(data.X_val, data.y_val),
                context=FitContext(n_classes=len(data.classes), callbacks=(timer,)))
        finally:
            data.close()
        out[name] = {"epoch_s": timer.times, "epoch_s_median": float(np.median(timer.times[1:])),
                     "streamed": data.memory.streamed, "window_chunks": data.memory.window_chunks}
    out["streamed_speed_vs_in_memory"] = out["in_memory"]["epoch_s_median"] / out["streamed"]["epoch_s_median"]
    return out


def main_scale(args) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test support, not the package
    from synthetic_store import write_synthetic_store

    store = args.work / "fmnist_sized.zarr"
    if not store.exists():
        write_synthetic_store(store, 5000, 1280, views=3, n_classes=10, separation=0.35)
    print("mlp sweep ...", file=sys.stderr)
    mlp = bench_mlp_sweep(store, args.repeats)
    print("logreg C sweep ...", file=sys.stderr)
    logreg = bench_c_sweep(store, args.repeats)
    print("streaming ...", file=sys.stderr)
    streaming = bench_streaming(store, args.stream_epochs)
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_avg_1m": os.getloadavg()[0]},
              "data": "synthetic, Fashion-MNIST-sized: 5000 images x 1280 dims, K=2 (V=3), 10 classes",
              "mlp_sweep": mlp, "logreg_c_sweep": logreg, "streaming": streaming}
    SCALE_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    SCALE_RESULTS.write_text(json.dumps(result, indent=2, default=float))
    print(f"mlp sweep of 8 trained together: {mlp['ratio_sweep_over_one_fit']:.2f}x one configuration's fit "
          f"(median {np.median(mlp['sweep_fit_s']):.1f} s vs {np.median(mlp['one_fit_s']):.1f} s)")
    print(f"logreg 11-C sweep: {logreg['speedup_vs_sklearn_1_thread']:.1f}x scikit-learn per C (1 thread), "
          f"{logreg['speedup_vs_sklearn_default_threads']:.1f}x (default threads); C {logreg['featcache']['C']} vs "
          f"{logreg['sklearn']['C']}, val acc {logreg['featcache']['val_accuracy']:.4f} vs "
          f"{logreg['sklearn']['val_accuracy']:.4f}")
    print(f"streamed epoch: {streaming['streamed_speed_vs_in_memory']:.2f}x the in-memory speed "
          f"({streaming['streamed']['epoch_s_median']:.3f} s vs {streaming['in_memory']['epoch_s_median']:.3f} s)")
    print(f"written {SCALE_RESULTS}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classic-epochs", type=int, default=2)
    ap.add_argument("--cached-epochs", type=int, default=30)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "featcache-bench")
    ap.add_argument("--scale", action="store_true", help="only part 3: big stores and wide sweeps")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stream-epochs", type=int, default=6)
    args = ap.parse_args()
    if args.scale:
        args.work.mkdir(parents=True, exist_ok=True)
        main_scale(args)
        return

    data = fetch("orl-faces")
    args.work.mkdir(parents=True, exist_ok=True)
    k2, k8 = args.work / "orl_k2.zarr", args.work / "orl_k8.zarr"
    extract_k2 = ensure_store(data, k2, 2)
    extract_k8 = ensure_store(data, k8, 8)

    print("cached mlp ...", file=sys.stderr)
    cached = bench_cached_mlp(k2, args.cached_epochs, args.classic_epochs)
    print("classic end-to-end mlp ...", file=sys.stderr)
    classic = bench_classic(k2, args.classic_epochs)
    print("logreg C sweep ...", file=sys.stderr)
    logreg = bench_logreg(k8)

    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_avg_1m": os.getloadavg()[0]},
        "data": "ORL faces, 400 images, 40 classes", "backbone": BACKBONE,
        "extraction_seconds": {"K=2": extract_k2, "K=8": extract_k8},
        "mlp_cached": cached, "mlp_classic": classic,
        "speedup_per_epoch_median": classic["epoch_s_median"] / cached["epoch_s_median"],
        "speedup_per_epoch_mean": classic["epoch_s_mean"] / cached["epoch_s_mean"],
        "logreg_sweep": logreg,
        "logreg_speedup_vs_sklearn_loop": logreg["sklearn_loop"]["seconds"] / logreg["featcache_warm"]["seconds"],
        "logreg_speedup_warm_vs_cold": logreg["featcache_cold"]["seconds"] / logreg["featcache_warm"]["seconds"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))

    rows = [
        ("mlp, cached features (K=2)", cached["epoch_s_median"], cached["epoch_s_mean"],
         f"{cached['test_accuracy_classic_epochs']:.3f} after {args.classic_epochs} ep; "
         f"{cached['test_accuracy_fixed_epochs']:.3f} after {cached['epochs']} ep; "
         f"{cached['early_stopped']['test_accuracy']:.3f} early-stopped ({cached['early_stopped']['epochs']} ep)"),
        ("mlp, classic end-to-end + aug", classic["epoch_s_median"], classic["epoch_s_mean"],
         f"{classic['test_accuracy']:.3f} after {classic['epochs']} ep"),
    ]
    print(f"\n{'training':<32} {'s/epoch (median)':>17} {'s/epoch (mean)':>15}  test accuracy")
    for name, med, mean, acc in rows:
        print(f"{name:<32} {med:>17.4f} {mean:>15.4f}  {acc}")
    print(f"speed-up per epoch: {result['speedup_per_epoch_median']:.0f}x (median), "
          f"{result['speedup_per_epoch_mean']:.0f}x (mean incl. first-epoch tracing)")
    print(f"one-off extraction: {extract_k2:.1f} s (K=2), {extract_k8:.1f} s (K=8)")
    print(f"\nlogreg C sweep, {len(logreg['grid'])} values on {logreg['rows']} rows x {logreg['dim']} dims, "
          f"{logreg['classes']} classes")
    for name in ("sklearn_loop", "featcache_cold", "featcache_warm"):
        r = logreg[name]
        print(f"  {name:<16} {r['seconds']:7.2f} s   best val acc {r['best_val_accuracy']:.3f}"
              + (f"   test acc {r['test_accuracy']:.3f} (C={r['C']:g})" if "test_accuracy" in r else ""))
    print(f"  speed-up vs the plain sklearn loop: {result['logreg_speedup_vs_sklearn_loop']:.1f}x "
          f"(warm starts alone: {result['logreg_speedup_warm_vs_cold']:.1f}x)")
    print(f"\nwritten {RESULTS}")


if __name__ == "__main__":
    main()

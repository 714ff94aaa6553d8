"""Benchmark: what each option of a stronger probe adds, on Fashion-MNIST and the ORL faces
(issue #13 point 4), and test-time augmentation of the pretrained classifiers on the ImageNet samples.

Per data set, two stores: ``<name>.zarr`` (efficientnet_lite0/1/2 at their own input sizes, one
view, plus feature taps of lite0) and ``<name>-aug.zarr`` (lite0 with K augmented views). Every
trial fits a head on cached features and scores the untouched test split; options are added one at
a time against the plain logistic-regression probe on lite0, then combined. Fashion-MNIST has no
validation folder, so fit-head holds out 10% of the training images for validation (which is what
--refit gives back).

Usage:  python benchmarks/bench_probe.py [--work DIR] [--datasets fashion-mnist,orl-faces,imagenet-samples]
Writes benchmarks/results/probe.json and prints a table. Extraction is resumable (the stores are
reused); on 2 cores the first run takes about an hour, most of it extracting Fashion-MNIST.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from featcache.extraction import ExtractOptions, extract  # noqa: E402
from featcache.heads import make_head  # noqa: E402
from featcache.ingest.augment import AugmentParams  # noqa: E402
from featcache.ingest.sample_data import fetch  # noqa: E402
from featcache.stores import open_store  # noqa: E402
from featcache.train.fit import fit_head  # noqa: E402
from featcache.train.probe import ProbeOptions  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "probe.json"
LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
L0 = LITES[0]


@dataclass(frozen=True)
class DataSet:
    name: str
    augmented_views: int  # K of the -aug store
    taps: tuple[str, ...]  # lite0 blocks tapped
    split: str | None = None  # for class-per-folder trees


DATASETS = {
    "fashion-mnist": DataSet("fashion-mnist", 2, ("block7", "block10", "block14")),
    "orl-faces": DataSet("orl-faces", 4, ("block7", "block10", "block14")),
}


@dataclass(frozen=True)
class Trial:
    name: str
    option: str  # the point-4 option it measures, or "baseline" / "backbone" / "combined"
    backbones: tuple[str, ...]  # labels in the store (name, or name.tap)
    head: str = "logreg"
    params: dict = field(default_factory=dict)
    probe: ProbeOptions = ProbeOptions()
    augmented: bool = False  # on the -aug store


def trials(ds: DataSet) -> list[Trial]:
    taps = tuple(f"{L0}.{t}" for t in ds.taps)
    return [
        Trial("lite0 logreg", "baseline", (L0,)),
        Trial("lite1 logreg", "backbone", (LITES[1],)),
        Trial("lite2 logreg", "backbone", (LITES[2],)),
        Trial("lite0 mlp", "head", (L0,), "mlp"),
        Trial("lite0 knn (k=20, cosine)", "knn", (L0,), "knn"),
        Trial("lite0 logreg + refit", "refit", (L0,), probe=ProbeOptions(refit=True)),
        Trial("lite0 logreg + calibrate", "calibrate", (L0,), probe=ProbeOptions(calibrate=True)),
        Trial(f"lite0 logreg, K={ds.augmented_views} views (training)", "augment", (L0,), augmented=True),
        Trial(f"lite0 logreg, K={ds.augmented_views} views + tta", "tta", (L0,), augmented=True,
              probe=ProbeOptions(tta=True)),
        *[Trial(f"lite0 + tap {t.split('.')[1]} logreg", "taps", (L0, t)) for t in taps],
        Trial("lite0 + all taps logreg", "taps", (L0, *taps)),
        Trial("lite0+1+2 concat logreg", "concat", LITES),
        Trial("lite0+1+2 ensemble logreg", "ensemble", LITES, probe=ProbeOptions(combine="ensemble")),
        Trial("lite0+1+2 + taps concat logreg + refit", "combined", (*LITES, *taps), probe=ProbeOptions(refit=True)),
        Trial("lite0+1+2 + taps ensemble logreg + refit", "combined", (*LITES, *taps),
              probe=ProbeOptions(refit=True, combine="ensemble")),
        Trial("lite0+1+2 + taps concat mlp + refit + calibrate", "combined", (*LITES, *taps), "mlp",
              probe=ProbeOptions(refit=True, calibrate=True)),
    ]


def stores(ds: DataSet, work: Path) -> tuple[Path, Path]:
    data = fetch(ds.name)
    main, aug = work / f"{ds.name}.zarr", work / f"{ds.name}-aug.zarr"
    extract(data, main, ExtractOptions(backbones=list(LITES), split=ds.split, progress=True))
    extract(data, main, ExtractOptions(backbones=[L0], taps=list(ds.taps), split=ds.split, progress=True))
    extract(data, aug, ExtractOptions(backbones=[L0], augment=AugmentParams(augmented_views=ds.augmented_views),
                                      split=ds.split, progress=True))
    return main, aug


def extraction_speed(*stores: Path) -> dict[str, float | None]:
    """Images through the backbone per second, per configuration, as the stores recorded them
    (a tap runs the network up to its block only)."""
    out = {}
    for store in stores:
        with open_store(store) as st:
            m = st.manifest()
            out |= {k: st.config_status(k, m).stats.images_per_s for k in st.keys()}
    return out


def run_trial(t: Trial, main: Path, aug: Path, seed: int) -> dict:
    store = aug if t.augmented else main
    with open_store(store) as st:
        keys = [st.resolve_key(b) for b in t.backbones]
    start = time.perf_counter()
    r = fit_head(store, keys, make_head(t.head, t.params, seed=seed), seed=seed, progress=False, probe=t.probe)
    return {"trial": t.name, "option": t.option, "head": t.head, "keys": keys, "probe": t.probe.to_dict(),
            "features": r.input_dim, "val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy,
            "test_macro_f1": r.test.macro_f1, "test_log_loss": r.test.log_loss, "test_ece": r.test.ece,
            "temperature": r.temperature, "test_n": r.test.n, "seconds": round(time.perf_counter() - start, 2)}


def tap_cost(work: Path, taps: tuple[str, ...]) -> dict:
    """Seconds to extract the 400 ORL photos into fresh stores, side by side in this process (the
    model build included, as a user pays it): lite0's final features alone, each tap added to a
    store holding them (its own pass, up to its block), and the final features with every tap in
    one run (one shared pass)."""
    import shutil

    data, out, store = fetch("orl-faces"), {}, work / "tapcost.zarr"

    def timed(**options) -> float:
        start = time.perf_counter()
        extract(data, store, ExtractOptions(backbones=[L0], progress=False, **options))
        return round(time.perf_counter() - start, 2)

    shutil.rmtree(store, ignore_errors=True)
    timed()  # the warm-up (first model build and trace) is paid here, untimed
    for tap in taps:
        out[f"{tap} alone"] = timed(taps=[tap])
    for name, options in (("final", {}), ("final + all taps, one run", {"taps": list(taps)})):
        shutil.rmtree(store, ignore_errors=True)
        out[name] = timed(**options)
    shutil.rmtree(store, ignore_errors=True)
    return out


def imagenet_tta(views: int) -> list[dict]:
    """Top-1 of each backbone's own 1000-way classifier on the 20 ImageNet photos, on the photo
    alone and averaged over K augmented views (no head to train: the only option that applies)."""
    from featcache.backbones import get_backbone
    from featcache.ingest.augment import augment_view
    from featcache.ingest.decode import read_image
    from featcache.ingest.scan import content_digest

    files = sorted(fetch("imagenet-samples").glob("*.jpg"))
    truth = np.array([int(f.stem.rsplit("_", 1)[1]) for f in files])
    params = AugmentParams(augmented_views=views)
    out = []
    for name in LITES:
        spec = get_backbone(name)
        model = spec.build_classifier(spec.input_size, "imagenet")
        images = [read_image(f, spec.input_size) for f in files]
        digests = [content_digest(f) for f in files]
        probs = [np.asarray(model.predict_on_batch(spec.preprocess(np.stack(
            [augment_view(img, params, d, v) for img, d in zip(images, digests, strict=True)]).astype(np.float32))))
            for v in range(params.views)]
        out.append({"backbone": name, "n": len(files), "top1": float(np.mean(probs[0].argmax(1) == truth)),
                    "top1_tta": float(np.mean(np.mean(probs, axis=0).argmax(1) == truth)), "views": params.views})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "featcache-bench")
    ap.add_argument("--datasets", default="fashion-mnist,orl-faces,imagenet-samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tap-cost", action="store_true", help="only: time lite0's taps against its final features on ORL")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "seed": args.seed,
              "datasets": previous.get("datasets", {}), "tap_cost_seconds": previous.get("tap_cost_seconds")}
    if args.tap_cost:
        result["tap_cost_seconds"] = tap_cost(args.work, DATASETS["orl-faces"].taps)
        print("seconds to extract 400 ORL photos:", result["tap_cost_seconds"])
        RESULTS.write_text(json.dumps(result, indent=2))
        return
    for name in args.datasets.split(","):
        if name == "imagenet-samples":
            result["datasets"][name] = {"tta": imagenet_tta(4)}
            for row in result["datasets"][name]["tta"]:
                print(f"{name:<16} {row['backbone']:<20} top-1 {row['top1']:.2f}  with TTA ({row['views']} views) "
                      f"{row['top1_tta']:.2f}  (n={row['n']})")
            continue
        ds = DATASETS[name]
        main_store, aug_store = stores(ds, args.work)
        rows = []
        for t in trials(ds):
            rows.append(run_trial(t, main_store, aug_store, args.seed))
            r = rows[-1]
            print(f"{name:<14} {t.name:<48} test {r['test_accuracy']:.4f}  ECE {r['test_ece']:.4f}  "
                  f"val {r['val_accuracy']:.4f}  {r['seconds']:7.1f} s", flush=True)
        best = max(rows, key=lambda r: r["val_accuracy"])
        result["datasets"][name] = {"trials": rows, "best_by_validation": best["trial"],
                                    "images_per_s": extraction_speed(main_store, aug_store)}
        RESULTS.write_text(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()

